package pack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/corelm/corelm/models"
	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/formats/pack/packtest"
	"github.com/corelm/corelm/pkg/kernels"
)

// sources returns the models the round-trip tests pack.
func sources(t testing.TB) map[string][]byte {
	t.Helper()
	tiny, err := packtest.Tiny.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{"stories260K": models.Stories, "tiny-quantized": tiny}
}

func mustPack(t testing.TB, src []byte, opts Options) []byte {
	t.Helper()
	g, err := gguf.Parse(src)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Bytes(context.Background(), g, opts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRoundTrip packs each model for the generic tier (ggml's layout
// throughout) and for AVX2 and AVX-512 VNNI (Q4_K, Q5_K, Q6_K, Q4_0, Q4_1,
// Q5_0, Q5_1, Q8_0, F16, BF16 matrices in LayoutR16) and checks everything
// the reader reports against the source.
func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		tier Tier
	}{{"generic", TierGeneric}, {"avx2", TierAVX2}, {"avx512vnni", TierAVX512VNNI}} {
		for name, src := range sources(t) {
			t.Run(tc.name+"/"+name, func(t *testing.T) { testRoundTrip(t, src, tc.tier) })
		}
	}
}

func testRoundTrip(t *testing.T, src []byte, tier Tier) {
	{
		{
			g, err := gguf.Parse(src)
			if err != nil {
				t.Fatal(err)
			}
			packed := mustPack(t, src, Options{Generation: 7, Tier: tier, Annotations: map[string]string{"source_path": "m/x.gguf"}})
			f, err := Parse(packed)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Verify(); err != nil {
				t.Fatal(err)
			}
			if f.Header.Generation != 7 || f.Header.SourceDigest != sha256.Sum256(src) {
				t.Errorf("header: generation %d digest %x", f.Header.Generation, f.Header.SourceDigest[:4])
			}
			if v, ok := f.Annotation("source_path"); !ok || v != "m/x.gguf" {
				t.Errorf("annotation source_path = %q, %v", v, ok)
			}
			// Every source KV, in order, with identical type and bytes.
			kvs := f.KVs()
			if len(kvs) != len(g.KVs)+1 {
				t.Fatalf("%d metadata entries, want %d + 1 annotation", len(kvs), len(g.KVs))
			}
			for i, want := range g.KVs {
				got := kvs[i]
				if got.Key != want.Key || got.Value.Type != want.Value.Type || got.Value.Elem != want.Value.Elem ||
					got.Value.Len != want.Value.Len || !bytes.Equal(got.Value.Payload(), want.Value.Payload()) {
					t.Errorf("metadata %d: got %s=%v, want %s=%v", i, got.Key, got.Value, want.Key, want.Value)
				}
			}
			if a, _ := g.String("general.architecture"); a != "llama" {
				t.Fatalf("source architecture %q", a)
			}
			if a, ok := f.String("general.architecture"); !ok || a != "llama" {
				t.Errorf("packed architecture %q, %v", a, ok)
			}
			// Every tensor, identical or repacked for the kernels.
			if len(f.Tensors) != len(g.Tensors) {
				t.Fatalf("%d tensors, want %d", len(f.Tensors), len(g.Tensors))
			}
			var tensorBytes int64
			for i := range g.Tensors {
				st := &g.Tensors[i]
				pt, ok := f.Tensor(st.Name)
				if !ok {
					t.Fatalf("tensor %s missing", st.Name)
				}
				if pt.Type != st.Type || pt.Layout != layoutFor(tier, st) || !slices.Equal(pt.Shape, st.Shape) ||
					!bytes.Equal(f.TensorData(pt), InLayout(pt, g.TensorData(st))) {
					t.Errorf("tensor %s differs: %s %v %s", st.Name, pt.Type, pt.Shape, pt.Layout)
				}
				abs := f.Header.DataOffset + pt.Offset
				if abs%TensorAlign != 0 || (pt.Size >= LargeTensor && abs%PageAlign != 0) {
					t.Errorf("tensor %s at %d (size %d) misaligned", st.Name, abs, pt.Size)
				}
				tensorBytes += int64(pt.Size)
			}
			// Size: the data section within 5% of the tensors, the whole
			// file within 5% of the source.
			if float64(f.Header.DataLength) > 1.05*float64(tensorBytes) || float64(len(packed)) > 1.05*float64(len(src)) {
				t.Errorf("packed %d bytes (data %d) for %d tensor bytes in a %d-byte source", len(packed), f.Header.DataLength, tensorBytes, len(src))
			}
		}
	}
}

func TestOpenIdentity(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.1.clm")
	if err := os.WriteFile(path, mustPack(t, models.Stories, Options{Generation: 1}), 0o444); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if dev, ino := f.Identity(); dev != uint64(st.Dev) || ino != st.Ino {
		t.Errorf("identity (%d, %d), stat says (%d, %d)", dev, ino, st.Dev, st.Ino)
	}
	if err := f.Verify(); err != nil {
		t.Fatal(err)
	}
	// Symlinks are not followed.
	link := filepath.Join(t.TempDir(), "link.clm")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(link); err == nil {
		t.Error("Open followed a symlink")
	}
}

// sample is a packed file with gaps between tensors (odd-sized F32 tensors),
// for the corruption table.
func sample(t testing.TB) []byte {
	t.Helper()
	w := packtest.Tiny.Writer()
	w.AddTensor("extra.odd", kernels.F32, []uint64{3}, make([]byte, 12))
	w.AddTensor("extra.odd2", kernels.F32, []uint64{5}, bytes.Repeat([]byte{1}, 20))
	src, err := w.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return mustPack(t, src, Options{Generation: 3})
}

// layoutOf locates the fields of a packed file so tests can corrupt them.
type layoutOf struct {
	metaLen, dirStart int
	entries           []entryAt
}

type entryAt struct {
	name, typ, layout, tier, rank, dims, offset, size, crc, interleave, stride int
	nameLen, end                                                               int
}

func locate(t testing.TB, b []byte) layoutOf {
	t.Helper()
	le := binary.LittleEndian
	var l layoutOf
	l.metaLen = int(le.Uint64(b[72:]))
	l.dirStart = HeaderSize + l.metaLen
	p := l.dirStart + 4
	n := int(le.Uint32(b[p:]))
	p += 4
	for range n {
		var e entryAt
		e.nameLen = int(le.Uint32(b[p:]))
		e.name = p + 4
		p = e.name + e.nameLen
		e.typ, e.layout, e.tier, e.rank = p, p+4, p+6, p+8
		rank := int(le.Uint32(b[e.rank:]))
		e.dims = p + 12
		p = e.dims + 8*rank
		e.offset, e.size, e.crc, e.interleave, e.stride = p, p+8, p+16, p+20, p+24
		p += 32
		e.end = p
		l.entries = append(l.entries, e)
	}
	return l
}

// reseal recomputes the header checksum, so a test reaches the checks
// behind it.
func reseal(b []byte) []byte {
	ml := binary.LittleEndian.Uint64(b[64:])
	sum := checksum(b[:96], b[HeaderSize:HeaderSize+ml])
	copy(b[96:], sum[:])
	return b
}

func findEntry(t testing.TB, b []byte, l layoutOf, name string) entryAt {
	t.Helper()
	for _, e := range l.entries {
		if string(b[e.name:e.name+e.nameLen]) == name {
			return e
		}
	}
	t.Fatalf("no tensor %s", name)
	return entryAt{}
}

func TestParseRejects(t *testing.T) {
	base := sample(t)
	if _, err := Parse(base); err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	l := locate(t, base)
	first := l.entries[0]
	tests := []struct {
		name   string
		mutate func(b []byte) []byte
		want   error
		detail string
	}{
		{"empty", func(b []byte) []byte { return nil }, ErrTruncated, "header"},
		{"bad magic", func(b []byte) []byte { b[0] = 'X'; return b }, ErrBadMagic, "XORELMPK"},
		{"gguf file", func(b []byte) []byte { return models.Stories }, ErrBadMagic, "GGUF"},
		{"version", func(b []byte) []byte { le.PutUint32(b[8:], 3); return b }, ErrVersion, "version 3"},
		{"version 0", func(b []byte) []byte { le.PutUint32(b[8:], 0); return b }, ErrVersion, "version 0"},
		{"header size", func(b []byte) []byte { le.PutUint32(b[12:], 64); return b }, ErrHeader, "header size 64"},
		{"truncated header", func(b []byte) []byte { return b[:100] }, ErrTruncated, "100 bytes"},
		{"truncated by one byte", func(b []byte) []byte { return b[:len(b)-1] }, ErrTruncated, "file has"},
		{"truncated to half", func(b []byte) []byte { return b[:len(b)/2] }, ErrTruncated, "file has"},
		{"trailing byte", func(b []byte) []byte { return append(b, 0) }, ErrHeader, "trailing"},
		{"manifest offset", func(b []byte) []byte { le.PutUint64(b[56:], 0); return b }, ErrHeader, "manifest offset"},
		{"manifest length huge", func(b []byte) []byte { le.PutUint64(b[64:], 1<<62); return b }, ErrTruncated, "manifest"},
		{"metadata past manifest", func(b []byte) []byte { le.PutUint64(b[72:], le.Uint64(b[64:])+1); return b }, ErrHeader, "metadata length"},
		{"data offset misaligned", func(b []byte) []byte { le.PutUint64(b[80:], le.Uint64(b[80:])+64); return b }, ErrHeader, "data offset"},
		{"data length short", func(b []byte) []byte { le.PutUint64(b[88:], le.Uint64(b[88:])-64); return b }, ErrHeader, "trailing"},
		{"generation flipped", func(b []byte) []byte { b[16] ^= 1; return b }, ErrChecksum, "stored"},
		{"source digest flipped", func(b []byte) []byte { b[30] ^= 1; return b }, ErrChecksum, "stored"},
		{"checksum flipped", func(b []byte) []byte { b[100] ^= 1; return b }, ErrChecksum, "stored"},
		{"manifest byte flipped", func(b []byte) []byte { b[HeaderSize+40] ^= 1; return b }, ErrChecksum, "stored"},
		{"manifest padding", func(b []byte) []byte { b[le.Uint64(b[80:])-1] = 1; return b }, ErrHeader, "non-zero"},
		{"metadata garbage", func(b []byte) []byte { b[HeaderSize] = 'X'; return reseal(b) }, ErrMetadata, "magic"},
		{"metadata with tensors", func(b []byte) []byte { le.PutUint64(b[HeaderSize+8:], 1); return reseal(b) }, ErrMetadata, ""},
		{"tensor offset moved", func(b []byte) []byte { le.PutUint64(b[first.offset:], 64); return reseal(b) }, ErrPlacement, "offset 64, want 0"},
		{"tensor length", func(b []byte) []byte { le.PutUint64(b[first.size:], le.Uint64(b[first.size:])-1); return reseal(b) }, ErrTensor, "length"},
		{"tensor type unknown", func(b []byte) []byte { le.PutUint32(b[first.typ:], 99); return reseal(b) }, ErrTensor, "type id 99"},
		{"tensor type changed", func(b []byte) []byte { le.PutUint32(b[first.typ:], uint32(kernels.F32)); return reseal(b) }, ErrTensor, "length"},
		{"wrong shape", func(b []byte) []byte { le.PutUint64(b[first.dims+8:], le.Uint64(b[first.dims+8:])*2); return reseal(b) }, ErrTensor, "shape"},
		{"zero dimension", func(b []byte) []byte { le.PutUint64(b[first.dims:], 0); return reseal(b) }, ErrTensor, "shape"},
		{"rank zero", func(b []byte) []byte { le.PutUint32(b[first.rank:], 0); return reseal(b) }, ErrTensor, "rank 0"},
		{"rank five", func(b []byte) []byte { le.PutUint32(b[first.rank:], 5); return reseal(b) }, ErrTensor, "rank 5"},
		{"unknown layout", func(b []byte) []byte { le.PutUint16(b[first.layout:], 7); return reseal(b) }, ErrLayout, "layout 7"},
		{"unknown tier", func(b []byte) []byte { le.PutUint16(b[first.tier:], 9); return reseal(b) }, ErrTier, "tier 9"},
		{"tensor tier above file tier", func(b []byte) []byte { le.PutUint16(b[first.tier:], 1); return reseal(b) }, ErrTier, "file declares"},
		{"unknown file tier", func(b []byte) []byte { le.PutUint32(b[l.dirStart:], 77); return reseal(b) }, ErrTier, "77"},
		{"lone interleaved 2-D tensor", func(b []byte) []byte { b[first.interleave] = 1; return reseal(b) }, ErrTensor, "rank"},
		{"interleave without its run", func(b []byte) []byte { b[first.interleave] = 2; return reseal(b) }, ErrPlacement, "does not follow"},
		{"stride on a whole tensor", func(b []byte) []byte { b[first.stride+1] = 16; return reseal(b) }, ErrPlacement, "stride 4096, want 0"},
		{"empty name", func(b []byte) []byte { le.PutUint32(b[first.name-4:], 0); return reseal(b) }, ErrTensor, ""},
		{"name not UTF-8", func(b []byte) []byte { b[first.name] = 0xff; return reseal(b) }, ErrTensor, "UTF-8"},
		{"tensor count too large", func(b []byte) []byte { le.PutUint32(b[l.dirStart+4:], 1<<30); return reseal(b) }, ErrDirectory, "do not fit"},
		{"tensor count one more", func(b []byte) []byte { le.PutUint32(b[l.dirStart+4:], uint32(len(l.entries)+1)); return reseal(b) }, nil, ""},
		{"tensor count one less", func(b []byte) []byte { le.PutUint32(b[l.dirStart+4:], uint32(len(l.entries)-1)); return reseal(b) }, ErrDirectory, "trailing"},
		{"duplicate name", func(b []byte) []byte {
			e := findEntry(t, b, l, "blk.0.attn_v.weight")
			copy(b[e.name:], "blk.0.attn_k.weight")
			return reseal(b)
		}, ErrTensor, "duplicate"},
		{"non-zero gap between tensors", func(b []byte) []byte {
			e := findEntry(t, b, l, "extra.odd")
			end := le.Uint64(b[80:]) + le.Uint64(b[e.offset:]) + 12
			b[end] = 1
			return b
		}, ErrPlacement, "padding"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.mutate(bytes.Clone(base))
			_, err := Parse(b)
			if err == nil {
				t.Fatal("accepted")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.detail) {
				t.Errorf("error %q does not mention %q", err, tt.detail)
			}
			if !IsFormatError(err) {
				t.Errorf("%v is not a *FormatError", err)
			}
		})
	}
}

func TestVerifyDetectsDataCorruption(t *testing.T) {
	b := sample(t)
	f, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	tt := f.Tensors[len(f.Tensors)/2]
	b[f.Header.DataOffset+tt.Offset+tt.Size/2] ^= 0x10
	if err := f.Verify(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tt.Name) {
		t.Fatalf("Verify = %v, want ErrCorrupt naming %s", err, tt.Name)
	}
}

func TestWriteCancelled(t *testing.T) {
	g, err := gguf.Parse(models.Stories)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Bytes(ctx, g, Options{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func FuzzParse(f *testing.F) {
	base := sample(f)
	f.Add(base)
	f.Add(base[:HeaderSize])
	f.Add(mustPack(f, models.Stories, Options{}))
	short := bytes.Clone(base)
	binary.LittleEndian.PutUint32(short[locate(f, base).dirStart+4:], 1)
	f.Add(reseal(short))
	f.Add(moeSample(f, TierGeneric))
	f.Add(downgrade(f, base))
	f.Fuzz(func(t *testing.T, b []byte) {
		// Random bytes almost never pass the checksum: reseal half the
		// inputs so the fuzzer explores the manifest and directory too.
		if len(b) >= HeaderSize && b[len(b)-1]&1 == 1 {
			if ml := binary.LittleEndian.Uint64(b[64:]); ml <= uint64(len(b)-HeaderSize) {
				reseal(b)
			}
		}
		pf, err := Parse(b)
		if err != nil {
			if !IsFormatError(err) {
				t.Fatalf("error %v is not a *FormatError", err)
			}
			return
		}
		for i := range pf.Tensors {
			ti, ok := pf.Tensor(pf.Tensors[i].Name)
			if !ok {
				t.Fatalf("listed tensor %s not found", pf.Tensors[i].Name)
			}
			if sz, _ := ti.Type.RowBytes(1); sz < 0 {
				t.Fatal("impossible")
			}
			var n uint64
			for _, part := range pf.Parts(ti) {
				_ = part[len(part)-1]
				n += uint64(len(part))
			}
			if n != ti.Size || len(pf.Parts(ti)) != ti.Parts() {
				t.Fatalf("%s: %d parts of %d bytes in all, directory says %d parts, %d bytes", ti.Name, len(pf.Parts(ti)), n, ti.Parts(), ti.Size)
			}
		}
		_ = pf.Verify()
		for _, kv := range pf.KVs() {
			_ = kv.Value.String()
		}
	})
}

func TestCheckTier(t *testing.T) {
	b := sample(t)
	l := locate(t, b)
	binary.LittleEndian.PutUint32(b[l.dirStart:], uint32(TierAVX2))
	f, err := Parse(reseal(b))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.CheckTier(TierAVX512VNNI); err != nil {
		t.Errorf("avx512 CPU refused an avx2 file: %v", err)
	}
	if err := f.CheckTier(TierGeneric); !errors.Is(err, ErrCPU) || !strings.Contains(err.Error(), "avx2") {
		t.Errorf("generic CPU: %v, want ErrCPU naming avx2", err)
	}
}

// TestR16OneFileForBothTiers: packing for AVX2 and for AVX-512 VNNI writes
// the same file, which needs avx2; a file packed before the AVX2 kernels
// (its LayoutR16 tensors and itself recorded as needing avx512vnni) runs on
// avx2 too.
func TestR16OneFileForBothTiers(t *testing.T) {
	src, err := packtest.Tiny.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	avx2 := mustPack(t, src, Options{Generation: 3, Tier: TierAVX2})
	if vnni := mustPack(t, src, Options{Generation: 3, Tier: TierAVX512VNNI}); !bytes.Equal(avx2, vnni) {
		t.Fatal("packing for avx2 and for avx512vnni wrote different files")
	}
	f, err := Parse(avx2)
	if err != nil {
		t.Fatal(err)
	}
	r16 := 0
	for _, pt := range f.Tensors {
		if pt.Layout == LayoutR16 {
			r16++
			if pt.Tier != TierAVX2 {
				t.Errorf("%s: LayoutR16 recorded as needing %v", pt.Name, pt.Tier)
			}
		}
	}
	if r16 == 0 || f.Tier != TierAVX2 {
		t.Fatalf("%d LayoutR16 tensors, file tier %v; want some, avx2", r16, f.Tier)
	}
	if err := f.CheckTier(TierAVX2); err != nil {
		t.Errorf("avx2 CPU: %v", err)
	}
	if err := f.CheckTier(TierGeneric); !errors.Is(err, ErrCPU) {
		t.Errorf("generic CPU: %v, want ErrCPU", err)
	}

	old := bytes.Clone(avx2)
	l := locate(t, old)
	binary.LittleEndian.PutUint32(old[l.dirStart:], uint32(TierAVX512VNNI))
	for _, e := range l.entries {
		if Layout(binary.LittleEndian.Uint16(old[e.layout:])) == LayoutR16 {
			binary.LittleEndian.PutUint16(old[e.tier:], uint16(TierAVX512VNNI))
		}
	}
	f, err = Parse(reseal(old))
	if err != nil {
		t.Fatal(err)
	}
	if f.Tier != TierAVX512VNNI {
		t.Fatalf("rewritten file tier %v", f.Tier)
	}
	if err := f.CheckTier(TierAVX2); err != nil {
		t.Errorf("avx2 CPU refused a file packed before the avx2 kernels: %v", err)
	}
	if err := f.CheckTier(TierGeneric); !errors.Is(err, ErrCPU) || !strings.Contains(err.Error(), "avx2") {
		t.Errorf("generic CPU: %v, want ErrCPU naming avx2", err)
	}
}

// layoutFor is the layout the packer must have chosen for st on tier.
func layoutFor(tier Tier, st *gguf.Tensor) Layout {
	l, _ := chooseLayout(tier, st.Type, st.Shape)
	return l
}

// TestWriteFromSource: reading the source with ReadAt (Options.Source)
// writes the same bytes as reading it through the mapping, for both
// layouts; a source shorter than its mapping is an ErrSourceFault.
func TestWriteFromSource(t *testing.T) {
	for name, src := range sources(t) {
		for _, tier := range []Tier{TierGeneric, TierAVX512VNNI} {
			want := mustPack(t, src, Options{Tier: tier})
			got := mustPack(t, src, Options{Tier: tier, Source: bytes.NewReader(src)})
			if !bytes.Equal(got, want) {
				t.Errorf("%s, tier %v: packing from the file differs from packing through the mapping", name, tier)
			}
		}
	}
	// A model of many pieces: the readers' slots are reused many times,
	// and reads aligned for O_DIRECT start before and end after a piece.
	var large bytes.Buffer
	if _, err := packtest.Large(40 << 20).Writer().WriteTo(&large); err != nil {
		t.Fatal(err)
	}
	src := large.Bytes()
	want := mustPack(t, src, Options{Tier: TierAVX512VNNI})
	for _, align := range []int{0, 512, 4096} {
		got := mustPack(t, src, Options{Tier: TierAVX512VNNI, Source: alignedReader{bytes.NewReader(src), align}, SourceAlign: align})
		if !bytes.Equal(got, want) {
			t.Errorf("large model, reads aligned to %d: packing from the file differs from packing through the mapping", align)
		}
	}
	g, err := gguf.Parse(models.Stories)
	if err != nil {
		t.Fatal(err)
	}
	short := bytes.NewReader(models.Stories[:len(models.Stories)/2])
	if _, err := Bytes(context.Background(), g, Options{Source: short}); !errors.Is(err, ErrSourceFault) {
		t.Fatalf("a source cut short: %v, want ErrSourceFault", err)
	}
}

// alignedReader refuses reads not aligned to align (offset, length and
// buffer), as a file opened with O_DIRECT does; past its end it reads
// short, as a file does.
type alignedReader struct {
	r     *bytes.Reader
	align int
}

func (a alignedReader) ReadAt(b []byte, off int64) (int, error) {
	if al := int64(max(a.align, 1)); off%al != 0 || int64(len(b))%al != 0 || int64(uintptr(unsafe.Pointer(unsafe.SliceData(b))))%al != 0 {
		return 0, syscall.EINVAL
	}
	return a.r.ReadAt(b, off)
}

// TestWriteProgress: the progress callback sees a rising count that ends
// at the total.
func TestWriteProgress(t *testing.T) {
	g, err := gguf.Parse(models.Stories)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		var seen []int64
		var total int64
		opts := Options{Tier: TierAVX512VNNI, Progress: func(done, tot int64) { seen = append(seen, done); total = tot }}
		if _, err := Bytes(context.Background(), g, opts); err != nil {
			t.Fatal(err)
		}
		for i := 1; i < len(seen); i++ {
			if seen[i] <= seen[i-1] {
				t.Fatalf("progress went %d then %d", seen[i-1], seen[i])
			}
		}
		if len(seen) == 0 || seen[len(seen)-1] != total {
			t.Fatalf("progress ended at %v of %d", seen, total)
		}
	}
}

// TestR16OnAVX2: the formats with AVX2 and AVX-512 VNNI kernels of
// LayoutR16 are packed in it on both tiers, recorded as needing avx2, and
// kept in ggml's layout for the generic tier; every matrix of the Q4_1,
// Q5_0, Q5_1, F16 and BF16 golden files is.
func TestR16OnAVX2(t *testing.T) {
	shape := []uint64{256, 64}
	for _, dt := range []kernels.DType{kernels.Q4_K, kernels.Q5_K, kernels.Q6_K, kernels.Q4_0, kernels.Q4_1, kernels.Q5_0, kernels.Q5_1, kernels.Q8_0, kernels.F16, kernels.BF16} {
		for _, tier := range []Tier{TierAVX2, TierAVX512VNNI} {
			if l, need := chooseLayout(tier, dt, shape); l != LayoutR16 || need != TierAVX2 {
				t.Errorf("%v on %v: layout %v needing %v, want LayoutR16 needing avx2", dt, tier, l, need)
			}
		}
		if l, _ := chooseLayout(TierGeneric, dt, shape); l != LayoutGGML {
			t.Errorf("%v on generic: layout %v, want ggml's", dt, l)
		}
	}
	for _, name := range []string{"llama-Q4_1.gguf", "phi3-Q5_0.gguf", "gemma2-Q5_1.gguf", "qwen2-F16.gguf", "llama-BF16.gguf"} {
		src, err := os.ReadFile(filepath.Join("..", "..", "runtime", "testdata", "golden", "models", name))
		if err != nil {
			t.Fatal(err)
		}
		f, err := Parse(mustPack(t, src, Options{Tier: TierAVX2}))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, pt := range f.Tensors {
			switch pt.Type {
			case kernels.Q4_1, kernels.Q5_0, kernels.Q5_1, kernels.F16, kernels.BF16:
			default:
				continue
			}
			if len(pt.Shape) == 2 {
				n++
				if pt.Layout != LayoutR16 {
					t.Errorf("%s: %s (%v %v) in layout %v", name, pt.Name, pt.Type, pt.Shape, pt.Layout)
				}
			}
		}
		if n == 0 {
			t.Errorf("%s: no Q4_1, Q5_0, Q5_1, F16 or BF16 matrix", name)
		}
	}
}

// TestTernaryR16NeedsVNNI: the ternary formats' LayoutR16 has AVX-512 VNNI
// kernels only, so the packer keeps ggml's layout for them on avx2, and a
// file with ternary LayoutR16 tensors needs avx512vnni (an AVX2 host is
// told to repack rather than run the slow reference twin).
func TestTernaryR16NeedsVNNI(t *testing.T) {
	for _, dt := range []kernels.DType{kernels.TQ1_0, kernels.TQ2_0} {
		shape := []uint64{256, 64}
		if l, _ := chooseLayout(TierAVX2, dt, shape); l != LayoutGGML {
			t.Errorf("%v on avx2: layout %v, want ggml's", dt, l)
		}
		if l, tier := chooseLayout(TierAVX512VNNI, dt, shape); l != LayoutR16 || tier != TierAVX512VNNI {
			t.Errorf("%v on avx512vnni: layout %v needing %v, want LayoutR16 needing avx512vnni", dt, l, tier)
		}
	}
	src, err := os.ReadFile(filepath.Join("..", "..", "runtime", "testdata", "golden", "models", "bitnet-TQ2_0.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse(mustPack(t, src, Options{Tier: TierAVX512VNNI}))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.CheckTier(TierAVX2); !errors.Is(err, ErrCPU) {
		t.Errorf("avx2 CPU: %v, want ErrCPU", err)
	}
	g, err := Parse(mustPack(t, src, Options{Tier: TierAVX2}))
	if err != nil {
		t.Fatal(err)
	}
	if err := g.CheckTier(TierAVX2); err != nil {
		t.Errorf("packed for avx2, on avx2: %v", err)
	}
}
