package pack

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/kernels"
)

// TestExpertStacks: a 3-D stack of experts' matrices whose each matrix has
// a LayoutR16 form is packed in it for AVX-512 VNNI, expert by expert, so
// that expert e's bytes are its own matrix repacked and start at e times
// one expert's size; a stack whose experts are not whole 16-row groups
// keeps ggml's layout.
func TestExpertStacks(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	tensor := func(dt kernels.DType, cols, rows, n int) []byte {
		rb, _ := dt.RowBytes(cols)
		out := make([]byte, 0, rb*rows*n)
		f := make([]float32, cols)
		row := make([]byte, rb)
		for range rows * n {
			for i := range f {
				f[i] = float32(rng.NormFloat64())
			}
			kernels.Quantize(dt, f, row)
			out = append(out, row...)
		}
		return out
	}
	w := gguf.NewWriter(3)
	w.AddKV("general.architecture", gguf.Str("olmoe"))
	tests := []struct {
		name          string
		dt            kernels.DType
		cols, rows, n int
		want          Layout
	}{
		{"blk.0.ffn_up_exps.weight", kernels.Q4_K, 256, 32, 3, LayoutR16},
		{"blk.0.ffn_down_exps.weight", kernels.Q8_0, 64, 48, 5, LayoutR16},
		{"blk.0.ffn_gate_exps.weight", kernels.Q8_0, 64, 8, 4, LayoutGGML}, // 8 rows per expert
	}
	src := map[string][]byte{}
	for _, tt := range tests {
		src[tt.name] = tensor(tt.dt, tt.cols, tt.rows, tt.n)
		w.AddTensor(tt.name, tt.dt, []uint64{uint64(tt.cols), uint64(tt.rows), uint64(tt.n)}, src[tt.name])
	}
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	g, err := gguf.Parse(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	packed, err := Bytes(context.Background(), g, Options{Tier: TierAVX512VNNI})
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse(packed)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Verify(); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		pt, ok := f.Tensor(tt.name)
		if !ok {
			t.Fatalf("%s missing", tt.name)
		}
		if pt.Layout != tt.want {
			t.Errorf("%s in layout %s, want %s", tt.name, pt.Layout, tt.want)
			continue
		}
		data := f.TensorData(pt)
		if tt.want == LayoutGGML {
			if !bytes.Equal(data, src[tt.name]) {
				t.Errorf("%s: ggml layout changed the bytes", tt.name)
			}
			continue
		}
		one, _ := kernels.LayoutBytes(tt.dt, kernels.LayoutR16, tt.rows, tt.cols)
		rb, _ := tt.dt.RowBytes(tt.cols)
		if len(data) != one*tt.n {
			t.Fatalf("%s: %d bytes, want %d experts of %d", tt.name, len(data), tt.n, one)
		}
		for e := 0; e < tt.n; e++ {
			want := make([]byte, one)
			kernels.RepackR16(tt.dt, want, src[tt.name][e*tt.rows*rb:(e+1)*tt.rows*rb], tt.cols)
			if !bytes.Equal(data[e*one:(e+1)*one], want) {
				t.Errorf("%s: expert %d is not its own matrix in LayoutR16", tt.name, e)
			}
		}
	}
}

// moeSource is a GGUF file with the tensor arrangements a mixture of
// experts brings: block 0's stacks (quantized, LayoutR16 on the fast
// tiers), block 1's F32 ones of odd sizes (padding inside an expert's slot)
// written down, up, gate, block 2 with an up stack only, and block 3's
// stacks of different expert counts (kept whole), between odd-sized
// vectors.
func moeSource(t testing.TB) *gguf.File {
	t.Helper()
	rng := rand.New(rand.NewPCG(2, 3))
	w := gguf.NewWriter(3)
	w.AddKV("general.architecture", gguf.Str("olmoe"))
	add := func(name string, dt kernels.DType, shape ...uint64) {
		elems := uint64(1)
		for _, d := range shape {
			elems *= d
		}
		f := make([]float32, elems)
		for i := range f {
			f[i] = float32(rng.NormFloat64())
		}
		rb, _ := dt.RowBytes(int(shape[0]))
		data := make([]byte, int(elems/shape[0])*rb)
		for r := range int(elems / shape[0]) {
			kernels.Quantize(dt, f[r*int(shape[0]):(r+1)*int(shape[0])], data[r*rb:(r+1)*rb])
		}
		w.AddTensor(name, dt, shape, data)
	}
	add("blk.0.attn_norm.weight", kernels.F32, 3)
	add("blk.0.ffn_gate_exps.weight", kernels.Q8_0, 64, 32, 4)
	add("blk.0.ffn_gate_inp.weight", kernels.F32, 64, 4)
	add("blk.0.ffn_up_exps.weight", kernels.Q8_0, 64, 32, 4)
	add("blk.0.ffn_down_exps.weight", kernels.Q8_0, 32, 64, 4)
	add("blk.1.ffn_down_exps.weight", kernels.F32, 3, 5, 4)
	add("blk.1.ffn_norm.weight", kernels.F32, 5)
	add("blk.1.ffn_up_exps.weight", kernels.F32, 5, 3, 4)
	add("blk.1.ffn_gate_exps.weight", kernels.F32, 5, 3, 4)
	add("blk.2.ffn_up_exps.weight", kernels.Q8_0, 32, 16, 2)
	add("blk.3.ffn_gate_exps.weight", kernels.F32, 8, 2, 2)
	add("blk.3.ffn_up_exps.weight", kernels.F32, 8, 2, 3)
	add("output_norm.weight", kernels.F32, 7)
	src, err := w.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	g, err := gguf.Parse(src)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// moeSample is moeSource packed for tier.
func moeSample(t testing.TB, tier Tier) []byte {
	t.Helper()
	b, err := Bytes(context.Background(), moeSource(t), Options{Generation: 5, Tier: tier})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestInterleavedExperts: a block's expert stacks are packed expert by
// expert, gate, up, down: expert e's three matrices contiguous (each at the
// next multiple of 64), its first page-aligned, one slot (rounded up to a
// page) after expert e−1's; each part is the expert's own matrix in the
// tensor's layout; stacks of differing expert counts stay whole.
func TestInterleavedExperts(t *testing.T) {
	g := moeSource(t)
	for _, tier := range []Tier{TierGeneric, TierAVX512VNNI} {
		t.Run(tier.String(), func(t *testing.T) {
			f, err := Parse(moeSample(t, tier))
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Verify(); err != nil {
				t.Fatal(err)
			}
			if f.Header.Version != Version {
				t.Errorf("version %d", f.Header.Version)
			}
			runs := map[string][]string{
				"blk.0": {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"},
				"blk.1": {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"},
				"blk.2": {"ffn_up_exps"},
			}
			for blk, members := range runs {
				first, _ := f.Tensor(blk + "." + members[0] + ".weight")
				i0 := f.index[first.Name]
				n := int(first.Shape[2])
				var stride uint64
				for e := range n {
					var next uint64 // where the member's part must start
					for k, m := range members {
						pt := &f.Tensors[i0+k]
						if pt.Name != blk+"."+m+".weight" || pt.Interleave != uint32(k+1) {
							t.Fatalf("directory entry %d: %s interleave %d, want %s.%s.weight interleave %d", i0+k, pt.Name, pt.Interleave, blk, m, k+1)
						}
						parts := f.Parts(pt)
						if len(parts) != n {
							t.Fatalf("%s: %d parts, want %d", pt.Name, len(parts), n)
						}
						at := uint64(uintptr(unsafe.Pointer(unsafe.SliceData(parts[e]))) - uintptr(unsafe.Pointer(unsafe.SliceData(f.data))))
						switch {
						case k == 0 && at%PageAlign != 0:
							t.Errorf("%s expert %d starts at %d, not on a page", pt.Name, e, at)
						case k > 0 && at != (next+TensorAlign-1)/TensorAlign*TensorAlign:
							t.Errorf("%s expert %d at %d, want right after the previous member's (%d)", pt.Name, e, at, next)
						}
						next = at + uint64(len(parts[e]))
						st, _ := g.Tensor(pt.Name)
						whole := InLayout(pt, g.TensorData(st))
						piece := len(whole) / n
						if !bytes.Equal(parts[e], whole[e*piece:(e+1)*piece]) {
							t.Errorf("%s expert %d is not its own matrix", pt.Name, e)
						}
					}
					slot := next - (f.Header.DataOffset + first.Offset + uint64(e)*first.Stride)
					stride = (slot + PageAlign - 1) / PageAlign * PageAlign
				}
				for k := range members {
					if s := f.Tensors[i0+k].Stride; s != stride {
						t.Errorf("%s: stride %d, want %d", f.Tensors[i0+k].Name, s, stride)
					}
				}
			}
			for _, name := range []string{"blk.3.ffn_gate_exps.weight", "blk.3.ffn_up_exps.weight", "blk.0.ffn_gate_inp.weight"} {
				pt, _ := f.Tensor(name)
				st, _ := g.Tensor(name)
				if pt.Interleave != 0 || pt.Stride != 0 || !bytes.Equal(f.TensorData(pt), InLayout(pt, g.TensorData(st))) {
					t.Errorf("%s: interleave %d stride %d, want stored whole and unchanged", name, pt.Interleave, pt.Stride)
				}
			}
		})
	}
}

// TestParseRejectsInterleaved: directories whose runs of interleaved expert
// stacks are not exactly where the directory puts them, or cannot be
// interleaved, are refused before a tensor byte is read (padding aside).
func TestParseRejectsInterleaved(t *testing.T) {
	base := moeSample(t, TierGeneric)
	pf, err := Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	l := locate(t, base)
	gate := findEntry(t, base, l, "blk.0.ffn_gate_exps.weight")
	up := findEntry(t, base, l, "blk.0.ffn_up_exps.weight")
	down := findEntry(t, base, l, "blk.0.ffn_down_exps.weight")
	whole := findEntry(t, base, l, "blk.3.ffn_gate_exps.weight")
	add64 := func(b []byte, at int, d uint64) { le.PutUint64(b[at:], le.Uint64(b[at:])+d) }
	data := pf.Header.DataOffset
	f32gate, _ := pf.Tensor("blk.1.ffn_gate_exps.weight")
	q8down, _ := pf.Tensor("blk.0.ffn_down_exps.weight")
	tests := []struct {
		name   string
		mutate func(b []byte) []byte
		want   error
		detail string
	}{
		{"stride grown", func(b []byte) []byte { add64(b, up.stride, PageAlign); return reseal(b) }, ErrPlacement, "stride"},
		{"stride not a page multiple", func(b []byte) []byte { add64(b, gate.stride, 64); return reseal(b) }, ErrPlacement, "stride"},
		{"member moved", func(b []byte) []byte { add64(b, up.offset, TensorAlign); return reseal(b) }, ErrPlacement, "offset"},
		{"run's start off its page", func(b []byte) []byte { add64(b, gate.offset, TensorAlign); return reseal(b) }, ErrPlacement, "offset"},
		{"run cut short", func(b []byte) []byte { le.PutUint32(b[down.interleave:], 0); return reseal(b) }, ErrPlacement, "offset"},
		{"member numbers skip", func(b []byte) []byte { le.PutUint32(b[down.interleave:], 4); return reseal(b) }, ErrPlacement, "does not follow"},
		{"first member marked whole", func(b []byte) []byte { le.PutUint32(b[gate.interleave:], 0); return reseal(b) }, ErrPlacement, "want 64"},
		{"whole stack marked interleaved", func(b []byte) []byte { le.PutUint32(b[whole.interleave:], 1); return reseal(b) }, ErrPlacement, "past the end"},
		{"members disagree on the expert count", func(b []byte) []byte {
			// [64 32 4] as [64 64 2]: the same bytes, half the experts.
			le.PutUint64(b[up.dims+8:], 64)
			le.PutUint64(b[up.dims+16:], 2)
			return reseal(b)
		}, ErrTensor, "cannot be interleaved"},
		{"a member of rank 2", func(b []byte) []byte {
			// [64 32 4] as [64 128]: the same bytes, and the entry's last
			// dimension dropped (the directory shrinks by 8 bytes).
			le.PutUint64(b[up.dims+8:], 128)
			le.PutUint32(b[up.rank:], 2)
			return shrinkManifest(reseal(append(b[:up.dims+16:up.dims+16], b[up.dims+24:]...)), 8)
		}, ErrTensor, "cannot be interleaved"},
		{"non-zero padding inside a slot", func(b []byte) []byte {
			b[data+f32gate.Offset+f32gate.Size/4] = 1 // F32 [5 3]: 60 bytes, the up matrix at 64
			return b
		}, ErrPlacement, "padding"},
		{"non-zero padding between slots", func(b []byte) []byte {
			b[data+q8down.Offset+q8down.Size/4] = 1 // expert 0 ends 6528 bytes into its 8192
			return b
		}, ErrPlacement, "padding"},
		{"interleaved in a version 1 file", func(b []byte) []byte { return downgrade(t, b) }, ErrTensor, "reserved"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.mutate(bytes.Clone(base)))
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.detail) {
				t.Errorf("error %v, want %v mentioning %q", err, tt.want, tt.detail)
			}
			if !IsFormatError(err) {
				t.Errorf("%v is not a *FormatError", err)
			}
		})
	}
}

// TestVerifyInterleaved: Verify checks each expert's part of an interleaved
// tensor, and names the tensor.
func TestVerifyInterleaved(t *testing.T) {
	b := moeSample(t, TierAVX512VNNI)
	f, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	up, _ := f.Tensor("blk.0.ffn_up_exps.weight")
	part := f.Parts(up)[2]
	part[len(part)-1] ^= 0x40 // the mapping is b
	if err := f.Verify(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), up.Name) {
		t.Fatalf("Verify = %v, want ErrCorrupt naming %s", err, up.Name)
	}
}

// TestReadsVersion1: a file of format version 1 (entries with a reserved
// zero where version 2 has interleave and stride) reads as before.
func TestReadsVersion1(t *testing.T) {
	v2 := sample(t)
	want, err := Parse(v2)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse(downgrade(t, v2))
	if err != nil {
		t.Fatal(err)
	}
	if f.Header.Version != 1 {
		t.Fatalf("version %d", f.Header.Version)
	}
	if err := f.Verify(); err != nil {
		t.Fatal(err)
	}
	if len(f.Tensors) != len(want.Tensors) {
		t.Fatalf("%d tensors, want %d", len(f.Tensors), len(want.Tensors))
	}
	for i := range f.Tensors {
		g, w := &f.Tensors[i], &want.Tensors[i]
		if g.Name != w.Name || g.Offset != w.Offset || g.CRC != w.CRC || !bytes.Equal(f.TensorData(g), want.TensorData(w)) {
			t.Errorf("tensor %d: %+v, want %+v", i, g, w)
		}
	}
}

// downgrade rewrites a version 2 file as version 1: each directory entry
// without its stride (its interleave becomes the reserved field).
func downgrade(t testing.TB, b []byte) []byte {
	t.Helper()
	le := binary.LittleEndian
	l := locate(t, b)
	manifest := bytes.Clone(b[HeaderSize : l.dirStart+8])
	for _, e := range l.entries {
		manifest = append(manifest, b[e.name-4:e.stride]...)
	}
	oldData := le.Uint64(b[80:])
	data := alignUp(HeaderSize+uint64(len(manifest)), PageAlign)
	out := make([]byte, data+uint64(len(b))-oldData)
	copy(out, b[:HeaderSize])
	le.PutUint32(out[8:], 1)
	le.PutUint64(out[64:], uint64(len(manifest)))
	le.PutUint64(out[80:], data)
	copy(out[HeaderSize:], manifest)
	copy(out[data:], b[oldData:])
	return reseal(out)
}

// shrinkManifest fixes the header of a file whose directory lost n bytes
// (cut out of b by the caller): the manifest is n bytes shorter, its
// padding n bytes longer, so the data do not move.
func shrinkManifest(b []byte, n int) []byte {
	le := binary.LittleEndian
	le.PutUint64(b[64:], le.Uint64(b[64:])-uint64(n))
	data := le.Uint64(b[80:]) - uint64(n) // the data moved up by the cut
	out := make([]byte, 0, len(b)+n)
	out = append(out, b[:data]...)
	out = append(out, make([]byte, n)...)
	out = append(out, b[data:]...)
	return reseal(out)
}

// TestVerifyReleasesPages: after Verify has read every tensor of a mapped
// file, none of the data's pages stay in the process's page tables, so a
// mixture of experts maps in only the experts it runs.
func TestVerifyReleasesPages(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m"+Ext)
	if err := os.WriteFile(path, moeSample(t, TierGeneric), 0o444); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, ino := f.Identity()
	var sum byte
	for i := range f.Tensors {
		for _, p := range f.Parts(&f.Tensors[i]) {
			for _, b := range p {
				sum += b
			}
		}
	}
	if rss := mappedRSS(t, ino); rss < int64(f.Header.DataLength) {
		t.Fatalf("after reading every tensor, %d bytes of the file resident in the process, want ≥ %d (is smaps read right?)", rss, f.Header.DataLength)
	}
	if err := f.Verify(); err != nil {
		t.Fatal(err)
	}
	if rss := mappedRSS(t, ino); rss > int64(f.Header.DataOffset) {
		t.Errorf("after Verify, %d bytes of the file resident in the process, want at most the header and manifest's %d", rss, f.Header.DataOffset)
	}
}

// mappedRSS is the resident size of this process's mappings of the file
// with inode ino, from /proc/self/smaps.
func mappedRSS(t *testing.T, ino uint64) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Skip(err)
	}
	var rss int64
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			in = f[4] == strconv.FormatUint(ino, 10)
			continue
		}
		if in && len(f) == 3 && f[0] == "Rss:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			rss += kb << 10
		}
	}
	return rss
}
