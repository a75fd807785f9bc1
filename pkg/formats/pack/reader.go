package pack

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"runtime"
	"sync"
	"syscall"
	"unicode/utf8"

	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/kernels"
)

// maxRank is ggml's GGML_MAX_DIMS.
const maxRank = 4

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Header is the decoded fixed header.
type Header struct {
	Version        uint32
	Generation     uint64
	SourceDigest   [32]byte
	ManifestOffset uint64
	ManifestLength uint64
	MetadataLength uint64
	DataOffset     uint64
	DataLength     uint64
	Checksum       [32]byte
}

// Tensor is one entry of the tensor directory.
type Tensor struct {
	Name   string
	Type   kernels.DType
	Layout Layout
	Tier   Tier
	Shape  []uint64 // logical shape, ggml order
	Offset uint64   // relative to the data offset (of expert 0's matrix when interleaved)
	Size   uint64   // the tensor's bytes, padding excluded
	CRC    uint32   // CRC-32C of the data, in order (Parts)
	// Interleave is 0 for a tensor stored whole, k ≥ 1 for the k-th
	// member of a run of expert stacks stored expert by expert, whose
	// expert e's matrix starts e·Stride bytes after expert 0's.
	Interleave uint32
	Stride     uint64
}

// File is a parsed packed file. Tensor data are sub-slices of the bytes it
// was parsed from (for Open, a read-only shared mapping).
type File struct {
	Header Header
	// Tier is the CPU feature tier the file needs.
	Tier    Tier
	Tensors []Tensor // in data order

	meta   *gguf.File
	data   []byte
	index  map[string]int
	mapped bool
	dev    uint64
	ino    uint64
}

// Open maps path read-only and parses it strictly. Close releases the
// mapping. The file is opened without following a final symlink.
func Open(path string) (*File, error) {
	fd, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	return OpenFile(fd)
}

// OpenFile maps an open file read-only and parses it strictly. The mapping
// outlives fd.
func OpenFile(fd *os.File) (*File, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(fd.Fd()), &st); err != nil {
		return nil, fmt.Errorf("pack: stat %s: %w", fd.Name(), err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return nil, fmt.Errorf("pack: %s: %w", fd.Name(), errorf("", ErrHeader, "not a regular file"))
	}
	if st.Size < HeaderSize {
		return nil, fmt.Errorf("pack: %s: %w", fd.Name(), errorf("header", ErrTruncated, "%d bytes", st.Size))
	}
	if st.Size > math.MaxInt {
		return nil, fmt.Errorf("pack: %s: %w", fd.Name(), errorf("header", ErrHeader, "file larger than the address space"))
	}
	data, err := syscall.Mmap(int(fd.Fd()), 0, int(st.Size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("pack: mmap %s: %w", fd.Name(), err)
	}
	f, err := Parse(data)
	if err != nil {
		syscall.Munmap(data)
		return nil, fmt.Errorf("%s: %w", fd.Name(), err)
	}
	f.mapped = true
	f.dev, f.ino = uint64(st.Dev), st.Ino
	return f, nil
}

// Close releases the mapping made by Open. It is a no-op for a File from
// Parse. No tensor data may be used afterwards.
func (f *File) Close() error {
	if !f.mapped || f.data == nil {
		return nil
	}
	err := syscall.Munmap(f.data)
	f.data = nil
	return err
}

// Identity returns the device and inode of the mapped file (zero for a File
// from Parse). A reader detects that its model was replaced by comparing
// them with a stat of the published path.
func (f *File) Identity() (dev, ino uint64) { return f.dev, f.ino }

// Size is the size of the whole file.
func (f *File) Size() int64 { return int64(len(f.data)) }

// Parse checks and decodes the packed file in data: header, checksum,
// metadata, directory and the placement of every tensor, in that order and
// without reading tensor data.
func Parse(data []byte) (*File, error) {
	h, err := parseHeader(data)
	if err != nil {
		return nil, err
	}
	f := &File{Header: h, data: data}
	manifest := data[h.ManifestOffset : h.ManifestOffset+h.ManifestLength]
	meta, dir := manifest[:h.MetadataLength], manifest[h.MetadataLength:]
	if f.meta, err = parseMetadata(meta); err != nil {
		return nil, err
	}
	if err := f.parseDirectory(dir); err != nil {
		return nil, err
	}
	return f, nil
}

func parseHeader(data []byte) (Header, error) {
	var h Header
	if len(data) < HeaderSize {
		if len(data) >= len(Magic) && string(data[:len(Magic)]) != Magic {
			return h, errorf("header", ErrBadMagic, "got %q", data[:len(Magic)])
		}
		return h, errorf("header", ErrTruncated, "%d bytes, the header alone is %d", len(data), HeaderSize)
	}
	if string(data[:8]) != Magic {
		return h, errorf("header", ErrBadMagic, "got %q", data[:8])
	}
	le := binary.LittleEndian
	h.Version = le.Uint32(data[8:])
	if h.Version < minVersion || h.Version > Version {
		return h, errorf("header", ErrVersion, "version %d; corelm reads %d to %d (a newer corelm packed it: pack the model again with this one)",
			h.Version, minVersion, Version)
	}
	if hs := le.Uint32(data[12:]); hs != HeaderSize {
		return h, errorf("header", ErrHeader, "header size %d, want %d", hs, HeaderSize)
	}
	h.Generation = le.Uint64(data[16:])
	copy(h.SourceDigest[:], data[24:56])
	h.ManifestOffset = le.Uint64(data[56:])
	h.ManifestLength = le.Uint64(data[64:])
	h.MetadataLength = le.Uint64(data[72:])
	h.DataOffset = le.Uint64(data[80:])
	h.DataLength = le.Uint64(data[88:])
	copy(h.Checksum[:], data[96:128])

	size := uint64(len(data))
	switch {
	case h.ManifestOffset != HeaderSize:
		return h, errorf("header", ErrHeader, "manifest offset %d, want %d", h.ManifestOffset, HeaderSize)
	case h.ManifestLength > size-HeaderSize:
		return h, errorf("header", ErrTruncated, "manifest of %d bytes, file has %d", h.ManifestLength, size)
	case h.MetadataLength > h.ManifestLength:
		return h, errorf("header", ErrHeader, "metadata length %d exceeds manifest length %d", h.MetadataLength, h.ManifestLength)
	case h.DataOffset != alignUp(HeaderSize+h.ManifestLength, PageAlign):
		return h, errorf("header", ErrHeader, "data offset %d, want %d (the manifest's end rounded up to %d)",
			h.DataOffset, alignUp(HeaderSize+h.ManifestLength, PageAlign), PageAlign)
	case h.DataOffset > size || h.DataLength > size-h.DataOffset:
		return h, errorf("header", ErrTruncated, "header says %d bytes (data [%d, +%d)), file has %d",
			h.DataOffset+h.DataLength, h.DataOffset, h.DataLength, size)
	case h.DataOffset+h.DataLength != size:
		return h, errorf("header", ErrHeader, "%d trailing bytes after the data", size-h.DataOffset-h.DataLength)
	}
	if sum := checksum(data[:96], data[HeaderSize:HeaderSize+h.ManifestLength]); sum != h.Checksum {
		return h, errorf("header", ErrChecksum, "stored %x, computed %x", h.Checksum[:8], sum[:8])
	}
	for _, b := range data[HeaderSize+h.ManifestLength : h.DataOffset] {
		if b != 0 {
			return h, errorf("manifest padding", ErrHeader, "non-zero byte")
		}
	}
	return h, nil
}

// checksum is the header's manifest checksum.
func checksum(head, manifest []byte) [32]byte {
	s := sha256.New()
	s.Write(head)
	s.Write(manifest)
	var sum [32]byte
	s.Sum(sum[:0])
	return sum
}

func parseMetadata(meta []byte) (*gguf.File, error) {
	m, err := gguf.Parse(meta)
	if err != nil {
		return nil, &FormatError{Where: "metadata", Err: ErrMetadata, Detail: err.Error()}
	}
	if len(m.Tensors) != 0 {
		return nil, errorf("metadata", ErrMetadata, "holds %d tensors, want none", len(m.Tensors))
	}
	if n := len(encodeMetadata(m.KVs)); n != len(meta) {
		return nil, errorf("metadata", ErrMetadata, "%d bytes, its entries encode to %d", len(meta), n)
	}
	return m, nil
}

// dirReader decodes the tensor directory; every read is bounds-checked.
type dirReader struct {
	buf []byte
	off int
	err error
}

func (r *dirReader) take(n uint64, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.buf)-r.off) {
		r.err = errorf("tensor directory", ErrTruncated, "%s needs %d bytes at %d, %d remain", what, n, r.off, len(r.buf)-r.off)
		return nil
	}
	b := r.buf[r.off : r.off+int(n)]
	r.off += int(n)
	return b
}

func (r *dirReader) u16(what string) uint16 {
	if b := r.take(2, what); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

func (r *dirReader) u32(what string) uint32 {
	if b := r.take(4, what); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (r *dirReader) u64(what string) uint64 {
	if b := r.take(8, what); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

// minEntry is the smallest encoded directory entry of version 1 (1-byte
// name, rank 1); version 2's have a stride more.
const minEntry = 4 + 1 + 4 + 2 + 2 + 4 + 8 + 8 + 8 + 4 + 4

// entryBytes is the size of t's directory entry in format version v.
func entryBytes(t *Tensor, v uint32) uint64 {
	n := uint64(4 + len(t.Name) + 4 + 2 + 2 + 4 + 8*len(t.Shape) + 8 + 8 + 4 + 4)
	if v >= 2 {
		n += 8
	}
	return n
}

func (f *File) parseDirectory(dir []byte) error {
	r := &dirReader{buf: dir}
	tier := Tier(r.u32("file tier"))
	count := r.u32("tensor count")
	if r.err != nil {
		return r.err
	}
	if !tier.known() {
		return errorf("tensor directory", ErrTier, "file tier %d", uint16(tier))
	}
	smallest := uint64(minEntry)
	if f.Header.Version >= 2 {
		smallest += 8
	}
	if uint64(count) > uint64(len(dir)-r.off)/smallest {
		return errorf("tensor directory", ErrDirectory, "%d tensors do not fit in %d bytes", count, len(dir)-r.off)
	}
	f.Tier = tier
	f.Tensors = make([]Tensor, 0, count)
	f.index = make(map[string]int, count)
	for i := uint32(0); i < count; i++ {
		name := r.take(uint64(r.u32("name length")), "name")
		where := fmt.Sprintf("tensor %d %q", i, name)
		t := Tensor{Name: string(name)}
		t.Type = kernels.DType(r.u32("type"))
		t.Layout = Layout(r.u16("layout"))
		t.Tier = Tier(r.u16("tier"))
		rank := r.u32("rank")
		if r.err == nil && (rank == 0 || rank > maxRank) {
			return errorf(where, ErrTensor, "rank %d; must be 1..%d", rank, maxRank)
		}
		t.Shape = make([]uint64, 0, rank)
		for d := uint32(0); d < rank && r.err == nil; d++ {
			t.Shape = append(t.Shape, r.u64("dimension"))
		}
		t.Offset = r.u64("offset")
		t.Size = r.u64("length")
		t.CRC = r.u32("crc32c")
		t.Interleave = r.u32("interleave")
		if f.Header.Version >= 2 {
			t.Stride = r.u64("stride")
		}
		if r.err != nil {
			return r.err
		}
		switch {
		case len(name) == 0:
			return errorf(where, ErrTensor, "empty name")
		case !utf8.Valid(name):
			return errorf(where, ErrTensor, "name is not valid UTF-8")
		case f.Header.Version < 2 && t.Interleave != 0:
			return errorf(where, ErrTensor, "reserved field is %d", t.Interleave)
		case !t.Type.Known():
			return errorf(where, ErrTensor, "unknown type id %d", uint32(t.Type))
		case !t.Tier.known():
			return errorf(where, ErrTier, "tier %d", uint16(t.Tier))
		case t.Tier > tier:
			return errorf(where, ErrTier, "tensor needs tier %s, file declares %s", t.Tier, tier)
		}
		if _, dup := f.index[t.Name]; dup {
			return errorf(where, ErrTensor, "duplicate name")
		}
		layout, ok := layouts[t.Layout]
		if !ok {
			return errorf(where, ErrLayout, "layout %d", uint16(t.Layout))
		}
		want, ok := layout.size(t.Type, t.Shape)
		if !ok {
			return errorf(where, ErrTensor, "shape %v cannot be %s in layout %s", t.Shape, t.Type, t.Layout)
		}
		if t.Size != want {
			return errorf(where, ErrTensor, "length %d, shape %v of %s in layout %s takes %d", t.Size, t.Shape, t.Type, t.Layout, want)
		}
		f.index[t.Name] = len(f.Tensors)
		f.Tensors = append(f.Tensors, t)
	}
	if r.off != len(dir) {
		return errorf("tensor directory", ErrDirectory, "%d trailing bytes", len(dir)-r.off)
	}
	// Where every tensor must be, from the directory alone.
	placed := make([]Tensor, len(f.Tensors))
	copy(placed, f.Tensors)
	end, done, err := place(placed, f.Header.DataLength)
	// An entry placed elsewhere is the first error, even if a later one
	// cannot be placed at all.
	for i := range f.Tensors[:done] {
		t, p := &f.Tensors[i], &placed[i]
		if t.Offset != p.Offset {
			return errorf(where(i, t), ErrPlacement, "offset %d, want %d (after the previous tensor, aligned to %d)", t.Offset, p.Offset, placeAlign(t))
		}
		if t.Stride != p.Stride {
			return errorf(where(i, t), ErrPlacement, "stride %d, want %d (one expert's matrices of its run, rounded up to %d)", t.Stride, p.Stride, PageAlign)
		}
	}
	if err != nil {
		return err
	}
	if end != f.Header.DataLength {
		return errorf("tensor directory", ErrPlacement, "tensors end at %d, the data section at %d", end, f.Header.DataLength)
	}
	return f.checkPadding()
}

// placeAlign is the alignment place gave t (for an interleaved tensor, of
// its run's start).
func placeAlign(t *Tensor) uint64 {
	if t.Interleave != 0 {
		return PageAlign
	}
	return tensorAlign(t.Size)
}

// checkPadding verifies the bytes between tensors (and between the
// experts' matrices of interleaved ones) are zero: nothing is hidden in a
// packed file. The gaps are under 4 KiB each.
func (f *File) checkPadding() error {
	var prev uint64
	base := f.Header.DataOffset
	var err error
	pieces(f.Tensors, func(i, _ int, off, size uint64) {
		if err == nil && len(bytes.Trim(f.data[base+prev:base+off], "\x00")) != 0 {
			err = errorf(where(i, &f.Tensors[i]), ErrPlacement, "non-zero padding before the tensor")
		}
		prev = off + size
	})
	return err
}

// ggmlSize is the size of a tensor in ggml's own encoding.
func ggmlSize(dt kernels.DType, shape []uint64) (uint64, bool) {
	elems := uint64(1)
	for _, d := range shape {
		if d == 0 || d > math.MaxInt32*16 || elems > math.MaxInt64/d {
			return 0, false
		}
		elems *= d
	}
	bs := uint64(dt.BlockSize())
	if bs == 0 || shape[0]%bs != 0 {
		return 0, false
	}
	blocks := elems / bs
	if blocks > math.MaxInt64/uint64(dt.BlockBytes()) {
		return 0, false
	}
	return blocks * uint64(dt.BlockBytes()), true
}

// Verify checks every tensor's bytes against the CRC-32C in its directory
// entry. It reads the whole file (Parse does not), spread over the cores;
// the error names the first bad tensor in directory order. Of a mapped
// file it then drops the data's pages from this process's page tables
// (MADV_DONTNEED, which on a shared file mapping discards no data): what
// the model reads is faulted in again as it reads it, and the experts of a
// mixture no token routes to stay out of the process.
func (f *File) Verify() error {
	if f.mapped && f.data != nil {
		defer syscall.Madvise(f.data[f.Header.DataOffset:], syscall.MADV_DONTNEED)
	}
	workers := min(runtime.GOMAXPROCS(0), len(f.Tensors))
	bad := make([]bool, len(f.Tensors))
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < len(f.Tensors); i += workers {
				t := &f.Tensors[i]
				bad[i] = f.crc(t) != t.CRC
			}
		})
	}
	wg.Wait()
	for i, b := range bad {
		if b {
			t := &f.Tensors[i]
			return errorf(where(i, t), ErrCorrupt, "crc32c %08x, directory says %08x", f.crc(t), t.CRC)
		}
	}
	return nil
}

// crc is the CRC-32C of t's bytes, its parts in order.
func (f *File) crc(t *Tensor) uint32 {
	var c uint32
	for _, p := range f.Parts(t) {
		c = crc32.Update(c, castagnoli, p)
	}
	return c
}

// Tensor returns the directory entry of the named tensor.
func (f *File) Tensor(name string) (*Tensor, bool) {
	i, ok := f.index[name]
	if !ok {
		return nil, false
	}
	return &f.Tensors[i], true
}

// TensorData returns t's bytes, a sub-slice of the mapping, or nil when t
// is interleaved (its bytes are not contiguous: see Parts).
func (f *File) TensorData(t *Tensor) []byte {
	if t.Interleave != 0 {
		return nil
	}
	start := f.Header.DataOffset + t.Offset
	return f.data[start : start+t.Size : start+t.Size]
}

// Parts returns t's bytes as stored, sub-slices of the mapping in order:
// one per expert for an interleaved tensor (expert e's matrix), else the
// whole tensor.
func (f *File) Parts(t *Tensor) [][]byte {
	if t.Interleave == 0 {
		return [][]byte{f.TensorData(t)}
	}
	n := uint64(t.Parts())
	piece := t.Size / n
	out := make([][]byte, n)
	for e := range out {
		start := f.Header.DataOffset + t.Offset + uint64(e)*t.Stride
		out[e] = f.data[start : start+piece : start+piece]
	}
	return out
}

// KVs returns the metadata entries in file order.
func (f *File) KVs() []gguf.KV { return f.meta.KVs }

// Get returns the metadata value of key.
func (f *File) Get(key string) (gguf.Value, bool) { return f.meta.Get(key) }

// Annotation returns a value the packer recorded (see Options.Annotations).
func (f *File) Annotation(key string) (string, bool) { return f.meta.String(AnnotationPrefix + key) }

// Typed metadata accessors, as gguf.File has them.

func (f *File) String(key string) (string, bool)      { return f.meta.String(key) }
func (f *File) Uint(key string) (uint64, bool)        { return f.meta.Uint(key) }
func (f *File) Int(key string) (int64, bool)          { return f.meta.Int(key) }
func (f *File) Float(key string) (float64, bool)      { return f.meta.Float(key) }
func (f *File) Bool(key string) (bool, bool)          { return f.meta.Bool(key) }
func (f *File) Strings(key string) ([]string, bool)   { return f.meta.Strings(key) }
func (f *File) Float32s(key string) ([]float32, bool) { return f.meta.Float32s(key) }
func (f *File) Int32s(key string) ([]int32, bool)     { return f.meta.Int32s(key) }

// IsFormatError reports whether err is a problem with a packed file's
// contents (as opposed to an I/O error).
func IsFormatError(err error) bool {
	var fe *FormatError
	return errors.As(err, &fe)
}

// CheckTier reports whether a CPU of feature tier cpu can run the file's
// layouts; the error names both tiers. What a tensor needs is the tier it
// records, or its layout's if that is lower: the tier of a file packed
// before this reader's kernels read its layouts on more CPUs (LayoutR16 on
// avx2) is what its packer knew, not what this reader needs. A file tier
// above every tensor's is a packer's deliberate choice and stands.
func (f *File) CheckTier(cpu Tier) error {
	if need := f.needs(); need > cpu {
		return errorf("", ErrCPU, "file is packed for tier %s, this CPU supports %s (CORELM_KERNELS may cap it): "+
			"let the loader on this machine pack the model, or repack it with `corelm pack --tier %s`", need, cpu, cpu)
	}
	return nil
}

// needs is the tier the file needs (see CheckTier).
func (f *File) needs() Tier {
	recorded, need := TierGeneric, TierGeneric
	for i := range f.Tensors {
		t := &f.Tensors[i]
		recorded = max(recorded, t.Tier)
		lowest := layouts[t.Layout].tier
		if t.Layout == LayoutR16 {
			lowest = r16Tier(t.Type)
		}
		need = max(need, min(t.Tier, lowest))
	}
	if f.Tier > recorded {
		return f.Tier
	}
	return need
}
