// Package pack reads and writes corelm's packed model layout: the file the
// loader publishes in shared memory and inference processes map read-only.
//
// A packed file is a fixed header, a manifest and the tensor data:
//
//	offset  size  field (little-endian)
//	0       8     magic "CORELMPK"
//	8       4     format version (2; version 1 files are read too)
//	12      4     header size (128)
//	16      8     generation
//	24      32    source digest: SHA-256 of the whole source file
//	56      8     manifest offset (= header size)
//	64      8     manifest length
//	72      8     metadata length (the manifest's first part)
//	80      8     data offset (a multiple of 4096)
//	88      8     data length (file size = data offset + data length)
//	96      32    checksum: SHA-256 of header[0:96] followed by the manifest
//
// The manifest is the metadata — every key/value of the source GGUF file,
// encoded as a GGUF v3 file with no tensors (so tokenizer, chat template and
// hyper-parameters keep their GGUF types) — followed by the tensor directory:
//
//	u32 tier       CPU feature tier the file needs (highest of its tensors)
//	u32 count      number of tensors
//	count entries, in data order:
//	  u32 name length, name (UTF-8)
//	  u32 dtype      ggml type id (kernels.DType)
//	  u16 layout     arrangement of the blocks (0: ggml's own rows; 1: rows
//	                 interleaved by 16, kernels.LayoutR16)
//	  u16 tier       CPU feature tier the layout needs
//	  u32 rank, rank × u64 logical shape (ggml order, row length first)
//	  u64 offset     relative to the data offset (of expert 0's matrix when
//	                 interleaved)
//	  u64 length     bytes (the tensor's own, padding excluded)
//	  u32 crc32c     of the tensor's bytes in order, expert 0's first when
//	                 interleaved (checked by Verify)
//	  u32 interleave 0: stored whole; k ≥ 1: the k-th member of a run of
//	                 interleaved expert stacks (version 1: reserved, zero)
//	  u64 stride     bytes from one expert's matrix to the next of an
//	                 interleaved tensor, 0 for a whole one (version 2 only)
//
// Tensors follow each other in directory order, each at the next multiple of
// its alignment (64 bytes; 4096 for tensors of LargeTensor bytes or more),
// with zero padding between them and nothing after the last. A run of
// entries whose interleave fields count 1, 2, …, m is a set of 3-D stacks
// of n experts' matrices each (n, the last dimension, the same for all: a
// block's ffn_gate_exps, ffn_up_exps and ffn_down_exps) stored expert by
// expert instead: n slots, slot e holding expert e's matrix of every member
// in member order, each at the next multiple of 64 within the slot; slot 0
// starts at the next multiple of 4096 and each slot is stride bytes, its
// matrices' extent rounded up to 4096, the last ending with its last
// matrix. One expert's gate, up and down are so contiguous and start on a
// page of their own: a token never touches the pages of experts it was not
// routed to. Placement is therefore fully determined by the directory, and
// the reader rejects any other. The reader checks all of this, and the
// checksum, before a single tensor byte is touched.
package pack

import (
	"errors"
	"fmt"
	"math"

	"github.com/corelm/corelm/pkg/kernels"
)

// Magic opens every packed file.
const Magic = "CORELMPK"

// Version is the format version this package writes. It reads version 1
// too, whose files have no interleaved tensors (and whose entries end in a
// reserved zero u32 where version 2 has interleave and stride).
const Version = 2

// minVersion is the oldest format version this package reads.
const minVersion = 1

// HeaderSize is the size of the fixed header.
const HeaderSize = 128

// PageAlign is the alignment of the data section.
const PageAlign = 4096

// TensorAlign is the minimum alignment of every tensor.
const TensorAlign = 64

// LargeTensor is the size from which a tensor is page-aligned.
const LargeTensor = 1 << 20

// Ext is the file name extension of packed files.
const Ext = ".clm"

// AnnotationPrefix marks metadata keys the packer adds (source path, load
// options); keys with this prefix in the source are dropped.
const AnnotationPrefix = "corelm.pack."

// Layout is how a tensor's blocks are arranged in the file. New
// arrangements (k-quant super-blocks with pre-unpacked scales, interleaved
// rows) get new values and an entry in layouts; the reader refuses values
// it does not know.
type Layout uint16

const (
	// LayoutGGML is ggml's encoding of the tensor's DType, rows one after
	// another: the bytes of the GGUF tensor, unchanged.
	LayoutGGML Layout = 0
	// LayoutR16 is kernels.LayoutR16: Q4_K, Q5_K, Q6_K, Q4_0, Q4_1, Q5_0,
	// Q5_1, Q8_0, F16, BF16, TQ1_0 and TQ2_0 matrices with groups of 16
	// rows interleaved and the scales next to their quants (unpacked for
	// the k-quants), for the AVX2 and AVX-512 VNNI kernels, which read the
	// same bytes (the ternary formats: AVX-512 VNNI only). (Readers before
	// Q4_0 and Q8_0, Q5_K, TQ1_0 and TQ2_0, Q4_1, Q5_0, F16 and BF16, or
	// Q5_1 refuse such tensors as invalid entries rather than misread
	// them.) (Its pure-Go twin runs it anywhere, but far slower than the
	// ggml layout's kernels, so it is not written for the generic tier.)
	// Files packed before the AVX2 kernels record its tensors as needing
	// avx512vnni; File.CheckTier lowers that to avx2.
	LayoutR16 Layout = 1
)

// KernelLayout is the kernels' name for a layout the reader accepted.
func KernelLayout(l Layout) kernels.Layout {
	if l == LayoutR16 {
		return kernels.LayoutR16
	}
	return kernels.LayoutRows
}

// Tier is a CPU feature tier a layout may require.
type Tier uint16

const (
	TierGeneric    Tier = 0 // any CPU
	TierAVX2       Tier = 1 // AVX2 + FMA + F16C
	TierAVX512VNNI Tier = 2 // AVX-512 BW/VL + VNNI
)

var tierNames = [...]string{"generic", "avx2", "avx512vnni"}

func (t Tier) String() string {
	if int(t) < len(tierNames) {
		return tierNames[t]
	}
	return fmt.Sprintf("Tier(%d)", uint16(t))
}

func (t Tier) known() bool { return int(t) < len(tierNames) }

// ParseTier returns the tier named s (as Tier.String writes it).
func ParseTier(s string) (Tier, bool) {
	for i, n := range tierNames {
		if n == s {
			return Tier(i), true
		}
	}
	return 0, false
}

type layoutInfo struct {
	name string
	// tier is the lowest tier whose kernels read the layout fast: what a
	// tensor in it needs, whatever older packers recorded.
	tier Tier
	// size is the packed size of a tensor of elems elements of type dt, or
	// false when the layout cannot hold it.
	size func(dt kernels.DType, shape []uint64) (uint64, bool)
}

// layouts is the registry of arrangements the reader and writer know.
var layouts = map[Layout]layoutInfo{
	LayoutGGML: {"ggml", TierGeneric, ggmlSize},
	LayoutR16:  {"r16", TierAVX2, r16Size},
}

// InLayout returns the bytes the packer writes for t given the tensor's
// bytes in the source (src itself for LayoutGGML).
func InLayout(t *Tensor, src []byte) []byte {
	if t.Layout != LayoutR16 {
		return src
	}
	out := make([]byte, t.Size)
	kernels.RepackR16(t.Type, out, src, int(t.Shape[0]))
	return out
}

// r16Size is the size of a 2-D tensor in LayoutR16 (kernels.CanR16 says
// which have one), or of a 3-D stack of experts' matrices whose each
// matrix has one: the experts one after the other, each a whole number of
// 16-row groups, so that one expert is a contiguous LayoutR16 matrix.
func r16Size(dt kernels.DType, shape []uint64) (uint64, bool) {
	if len(shape) < 2 || len(shape) > 3 || shape[0] > math.MaxInt32 || shape[1] > math.MaxInt32 {
		return 0, false
	}
	n, ok := kernels.LayoutBytes(dt, kernels.LayoutR16, int(shape[1]), int(shape[0]))
	if !ok || len(shape) == 2 {
		return uint64(n), ok
	}
	if shape[2] == 0 || shape[2] > math.MaxInt64/uint64(n) {
		return 0, false
	}
	return uint64(n) * shape[2], true
}

// Layouts counts the changes to which tensors chooseLayout rearranges and
// how the packer places them (1: Q4_K and Q6_K in LayoutR16; 2: Q4_0 and
// Q8_0 too; 3: 3-D stacks of experts' matrices too; 4: Q5_K too, on AVX2
// hosts too (recorded as needing avx2), and TQ1_0 and TQ2_0 on AVX-512
// VNNI; 5: Q4_1, Q5_0, F16 and BF16 too, and a block's expert stacks
// interleaved expert by expert, format version 2; 6: Q5_1 too). Files of every count
// read alike; a cache of packed copies keys on it, so that an older copy
// is packed again to get the faster layouts.
const Layouts = 6

// chooseLayout is the layout the packer writes a tensor in for CPUs of tier
// cpu, and the tier that layout needs: on AVX2 and AVX-512 VNNI, LayoutR16
// for every matrix that has one (the token embedding too: its rows decode
// from it exactly, and with tied embeddings it is also the output
// projection) and every stack of experts' matrices that have one
// (r16Size), needing avx2, so that a file packed on either tier runs on
// both; ggml's layout otherwise.
func chooseLayout(cpu Tier, dt kernels.DType, shape []uint64) (Layout, Tier) {
	if cpu < r16Tier(dt) || len(shape) < 2 || len(shape) > 3 ||
		shape[0] > math.MaxInt32 || shape[1] > math.MaxInt32 || !kernels.CanR16(dt, int(shape[1]), int(shape[0])) {
		return LayoutGGML, TierGeneric
	}
	return LayoutR16, r16Tier(dt)
}

// r16Tier is the lowest tier with LayoutR16 kernels for dt: the ternary
// formats have AVX-512 VNNI ones only (the AVX2 table holds their pure-Go
// twin, slower than the ggml layout's AVX2 kernels), the others AVX2 ones.
func r16Tier(dt kernels.DType) Tier {
	if dt == kernels.TQ1_0 || dt == kernels.TQ2_0 {
		return TierAVX512VNNI
	}
	return layouts[LayoutR16].tier
}

func (l Layout) String() string {
	if info, ok := layouts[l]; ok {
		return info.name
	}
	return fmt.Sprintf("Layout(%d)", uint16(l))
}

// Sentinel errors; the reader wraps each in a *FormatError that says where.
var (
	ErrBadMagic  = errors.New("not a corelm packed file (bad magic)")
	ErrVersion   = errors.New("unsupported packed format version")
	ErrTruncated = errors.New("file truncated")
	ErrHeader    = errors.New("invalid header")
	ErrChecksum  = errors.New("manifest checksum mismatch")
	ErrMetadata  = errors.New("invalid metadata")
	ErrDirectory = errors.New("invalid tensor directory")
	ErrTensor    = errors.New("invalid tensor entry")
	ErrPlacement = errors.New("tensor data misplaced")
	ErrLayout    = errors.New("unknown tensor layout")
	ErrTier      = errors.New("unknown CPU feature tier")
	ErrCPU       = errors.New("packed for CPU features this machine lacks")
	ErrCorrupt   = errors.New("tensor data checksum mismatch")
)

// FormatError reports a problem in a packed file.
type FormatError struct {
	Where  string // e.g. `tensor 3 "blk.0.attn_q.weight"`
	Err    error  // one of the sentinel errors
	Detail string
}

func (e *FormatError) Error() string {
	s := "pack: "
	if e.Where != "" {
		s += e.Where + ": "
	}
	s += e.Err.Error()
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	return s
}

func (e *FormatError) Unwrap() error { return e.Err }

func errorf(where string, err error, format string, a ...any) error {
	return &FormatError{Where: where, Err: err, Detail: fmt.Sprintf(format, a...)}
}

func alignUp(n, a uint64) uint64 { return (n + a - 1) / a * a }

// tensorAlign is the alignment of a tensor of size bytes.
func tensorAlign(size uint64) uint64 {
	if size >= LargeTensor {
		return PageAlign
	}
	return TensorAlign
}
