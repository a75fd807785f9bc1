package kernels

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

// Kernel tiers. The pure-Go reference (the *_generic.go files) is always
// present and is the oracle of the tests; on amd64 the generated assembly in
// dot_amd64.s adds two tiers. The tier is chosen once, when the package is
// initialised, from the CPU's features (golang.org/x/sys/cpu), capped by the
// environment variable CORELM_KERNELS:
//
//	CORELM_KERNELS=generic     the reference path only (also: purego, go)
//	CORELM_KERNELS=avx2        at most the AVX2+FMA+F16C kernels
//	CORELM_KERNELS=avx512vnni  at most the AVX-512 BW/VL/DQ + VNNI kernels
//	                           (also: avx512; the same as unset)
//
// Any other value is an error that Check reports. The purego build tag
// compiles the assembly out. Dispatch is coarse: a kernel is looked up in
// the active table once per row (DotQ) or per row range (MatMul), never per
// block.
//
// Numerics: the integer sums of every assembly kernel equal the reference's
// exactly. The float accumulation follows ggml's AVX2 order rather than its
// scalar one (eight float32 lanes, lane l collecting the 4-element products
// l of each 32-byte chunk, one fused multiply-add per lane per block, the
// lanes added pairwise at the end), so results differ from the reference in
// the last bits (see dot_x86order_test.go for the exact model and the bound)
// and are identical across the assembly tiers, and between the one-row and
// multi-row kernels (several activation rows per weight row: prefill; or
// several weight rows per activation row, the cols kernels: decode).
// Q4_K/Q5_K/Q6_K/Q8_0/Q4_0 and the ternary TQ1_0/TQ2_0 run in assembly;
// the other types keep the reference. F32 rows are the exception to
// ggml's AVX2 order: their kernels sum in 32 float32 lanes of fused
// multiply-adds (see f32_amd64.go), where the reference sums in float64.
// Two caveats: the Q8_0/Q4_0 kernels use ggml's sign trick, exact
// for every activation Quantize can produce (never -128); the F16 dots sum
// the same float32 products in float64 in another order (within one float32
// ulp plus 2⁻⁴⁰·Σ|w·x| of the reference). The Q8_K encoder writes the
// reference's bytes for finite input, the LayoutR16 32-column formats' encoders for
// finite input whose blocks are zero or reach 2⁻¹²¹ in magnitude (below
// that 1/d overflows, in the reference too). The LayoutR16 kernels (avx2
// and avx512vnni, for every int8 activation) reproduce their own reference
// twin (dotR16Generic) bit for bit, which adds the same exact integer sums
// as the ggml-layout kernels in another float grouping. The attention helpers (DotsQ8_0, AxpyF16, AxpysF16) use fused
// multiply-adds where the reference multiplies and adds: within float32
// rounding of it, and AxpysF16 equals AxpyF16 row by row exactly.

// Tier identifies a set of kernel implementations.
type Tier int

const (
	TierGeneric    Tier = iota // pure Go: the reference twins
	TierAVX2                   // AVX2 + FMA + F16C
	TierAVX512VNNI             // AVX-512 F/BW/VL/DQ + VNNI
)

// tierNames are the tiers' names, as String prints them and CORELM_KERNELS
// takes them; "avx512vnni" is also the packed-file format's name of that
// tier (pkg/formats/pack).
var tierNames = [...]string{TierGeneric: "generic", TierAVX2: "avx2", TierAVX512VNNI: "avx512vnni"}

func (t Tier) String() string {
	if t >= 0 && int(t) < len(tierNames) {
		return tierNames[t]
	}
	return fmt.Sprintf("Tier(%d)", int(t))
}

// ErrUnknownTier is the error (wrapped) of a CORELM_KERNELS value that names
// no tier.
var ErrUnknownTier = errors.New("unknown kernel tier")

// tierCap returns the highest tier CORELM_KERNELS=env allows: the highest
// there is when env is empty.
func tierCap(env string) (Tier, error) {
	s := strings.ToLower(strings.TrimSpace(env))
	switch s {
	case "":
		return TierAVX512VNNI, nil
	case "purego", "go":
		return TierGeneric, nil
	case "avx512":
		return TierAVX512VNNI, nil
	}
	for t, name := range tierNames {
		if s == name {
			return Tier(t), nil
		}
	}
	return TierGeneric, fmt.Errorf("kernels: CORELM_KERNELS=%q: %w: want %s, %s or %s (or unset: the best this CPU runs)",
		env, ErrUnknownTier, TierGeneric, TierAVX2, TierAVX512VNNI)
}

// kernelSet is one tier's dispatch table: call sites call kern.x(...),
// whatever the tier. genericKernels holds the reference twins (the
// *Generic functions); a faster tier is the table of the tier below with
// the entries it has assembly for overwritten (derive), so every entry but
// the optional rows, cols, colsF32 and tileF32 is always set. Every entry
// takes operands whose lengths the exported function checked.
type kernelSet struct {
	tier Tier

	// dot[t] is the dot of one weight row of type t with its activation row
	// encoded as VecDotType(t) (DotQ). Q8_1 and Q8_K, activation types only,
	// have none.
	dot [nTypes]func(w, xq []byte) float32
	// rows[t] and cols[t] are optional multi-row forms of dot[t] that MatMul
	// takes where the tier has them (n > 0).
	rows [nTypes]rowsKernel
	cols [nTypes]colsKernel
	// r16[t] (Q4_K, Q5_K, Q6_K, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, F16, BF16,
	// TQ1_0, TQ2_0) computes, for one LayoutR16 group (nb group blocks at w) and R
	// activation rows at xq, xq[xrb:], ... (Q8_K rows for the k-quants,
	// quantQ8R16's for the 32-column formats, roundR16's for F16 and
	// BF16), the 16 dots
	// of each row into out[r*ostride : r*ostride+16] (see dotR16Generic).
	r16 [nTypes]func(w []byte, nb int, xq []byte, xrb, R int, out []float32, ostride int)

	f16F32 func(w []byte, x []float32) float32 // DotF32 of an F16 row
	// f32F32 is DotF32 of an F32 row and colsF32 its optional form for
	// several weight rows, which MatMul takes (the activation rows of F32
	// weights are their floats, not re-encoded); dot[F32] is f32F32's
	// arithmetic too, so every path of an F32 row gives the same bits.
	// tileF32, optional too, is colsF32's prefill form (its rows: as many
	// as colsF32's).
	f32F32   func(w []byte, x []float32) float32
	colsF32  colsF32Kernel
	tileF32  tileF32Kernel
	quantQ8K func(src []float32, dst []byte) // Quantize to Q8_K, whole blocks
	// quantQ8R16 encodes whole blocks of 32 for the LayoutR16 Q4_0, Q5_0
	// and Q8_0 kernels, block sums times neg (see quantQ8R16Generic);
	// quantQ8R16S for the Q4_1 and Q5_1 ones, with Q8_1's s
	// (quantQ8R16SGeneric).
	quantQ8R16  func(src []float32, dst []byte, neg int32)
	quantQ8R16S func(src []float32, dst []byte)
	// roundF16 and roundBF16 are roundR16 of F16 and BF16 (the activation
	// rows of their kernels) on whole vectors of 8 floats (roundF16Generic,
	// roundBF16Generic).
	roundF16  func(src []float32, dst []byte)
	roundBF16 func(src []float32, dst []byte)
	// nibbleRows is the loader's move of 32 k-quant nibble bytes of each
	// of 16 rows (at src, src[rb:], ...) into four chunks of low nibbles
	// (out[64k:], row l at 4l) and four of high ones (out[hi+64k:]): the
	// bulk of the Q4_K, Q5_K and Q6_K repacks (nibbleRowsGeneric).
	nibbleRows func(out []byte, hi int, src []byte, rb int)

	// The element-wise and attention kernels. expSub sets x[i] = e^(x[i]-m)
	// and returns their sum, m the largest x[i] (softmax); swiglu is
	// SwiGLU's element loop. The assembly's expSub and swiglu are within 2
	// ulp of expGeneric's results, not bit-identical (fused multiply-adds).
	axpyF16   func(w float32, v []byte, o []float32) // len(v) == 2·len(o)
	axpysF16  func(w []float32, v []byte, stride int, o []float32)
	expSub    func(x []float32, m float32) float32
	swiglu    func(dst, gate, up []float32)
	max       func(x []float32) float32 // len(x) > 0
	sumU64    func(b []byte) uint64     // StreamRead's sum
	prefetch  func(b []byte)            // Prefetch's hint
	scale     func(x []float32, s float32)
	scaleTanh func(x []float32, s, c float32)

	// Attention by GQA group and over a q8_0 cache (attn.go): AxpysF16Heads,
	// AxpysQ8_0Heads and DotsQ8_0.
	axpysF16Heads func(w []float32, ws, n int, v []byte, stride int, o []float32, hd int)
	axpysQ8Heads  func(w []float32, ws, n int, v []byte, stride int, o []float32, hd int)
	dotsQ8        func(k []byte, stride int, q, out []float32)

	// Tiled prefill's and a GQA group's scores of several queries against
	// the same q8_0 rows (DotsQ8_0Queries): each query's scores are the
	// bits of its tier's dotsQ8.
	dotsQ8Queries func(k []byte, stride int, q []float32, hd int, out []float32, os, n int)

	// Scores over an f16 cache whose keys are stored in lanes
	// (DotsF16Keys): the same bits on every tier.
	dotsF16Keys func(k []byte, groups int, q []float32, hd int, out []float32, os int)
}

// nTypes bounds the types the tables index: every DType with a kernel.
const nTypes = TQ2_0 + 1

// rowsKernel computes n dots of one weight row with the activation rows
// xq[0:], xq[xrb:], ... into out[0], out[ostride], ..., exactly as n calls
// of its tier's dot would (prefill).
type rowsKernel struct {
	n int
	f func(w, xq []byte, xrb int, out []float32, ostride int)
}

// colsKernel computes n dots of the weight rows w[0:wrb], w[wrb:2·wrb], ...
// with one activation row into out[0:n], exactly as n calls of its tier's
// dot would (decode).
type colsKernel struct {
	n int
	f func(w []byte, wrb int, xq []byte, out []float32)
}

// colsF32Kernel computes n dots of the F32 weight rows w[0:wrb],
// w[wrb:2·wrb], ... with the float activation row x into out[0:n], exactly
// as n calls of its tier's f32F32 would (decode).
type colsF32Kernel struct {
	n int
	f func(w []byte, wrb int, x, out []float32)
}

// tileF32Kernel computes the dots of the F32 weight rows w[0:wrb], ...,
// w[(c-1)·wrb:c·wrb] with the r activation rows x[0:cols], x[cols:2·cols],
// ... into out[i·ostride+k] (activation row i, weight row k), exactly as
// f32F32 would (prefill).
type tileF32Kernel struct {
	c, r int
	f    func(w []byte, wrb int, x []float32, cols int, out []float32, ostride int)
}

// genericKernels is the reference tier: every entry is a reference twin.
var genericKernels = &kernelSet{
	tier: TierGeneric,
	dot: [nTypes]func(w, xq []byte) float32{
		F32:   dotF32Generic,
		F16:   dotF16F16Generic,
		BF16:  dotBF16Generic,
		Q4_0:  dotQ4_0Generic,
		Q4_1:  dotQ4_1Generic,
		Q5_0:  dotQ5_0Generic,
		Q5_1:  dotQ5_1Generic,
		Q8_0:  dotQ8_0Generic,
		Q2_K:  dotQ2KGeneric,
		Q3_K:  dotQ3KGeneric,
		Q4_K:  dotQ4KGeneric,
		Q5_K:  dotQ5KGeneric,
		Q6_K:  dotQ6KGeneric,
		TQ1_0: dotTQ1_0Generic,
		TQ2_0: dotTQ2_0Generic,
	},
	r16: [nTypes]func(w []byte, nb int, xq []byte, xrb, R int, out []float32, ostride int){
		Q4_K:  r16Q4KGeneric,
		Q5_K:  r16Q5KGeneric,
		Q6_K:  r16Q6KGeneric,
		Q4_0:  r16Q4_0Generic,
		Q4_1:  r16Q4_1Generic,
		Q5_0:  r16Q5_0Generic,
		Q5_1:  r16Q5_1Generic,
		Q8_0:  r16Q8_0Generic,
		F16:   r16F16Generic,
		BF16:  r16BF16Generic,
		TQ1_0: dotR16TQ1Generic,
		TQ2_0: dotR16TQ2Generic,
	},
	f16F32:      dotF16F32Generic,
	f32F32:      dotF32F32Generic,
	quantQ8K:    quantQ8KGeneric,
	quantQ8R16:  quantQ8R16Generic,
	quantQ8R16S: quantQ8R16SGeneric,
	roundF16:    roundF16Generic,
	roundBF16:   roundBF16Generic,
	nibbleRows:  nibbleRowsGeneric,
	axpyF16:     axpyF16Generic,
	axpysF16:    axpysF16Generic,
	expSub:      expSubGeneric,
	swiglu:      swigluGeneric,
	max:         maxGeneric,
	sumU64:      sumU64Generic,
	prefetch:    func([]byte) {},
	scale:       scaleGeneric,
	scaleTanh:   scaleTanhGeneric,

	axpysF16Heads: axpysF16HeadsGeneric,
	axpysQ8Heads:  axpysQ8HeadsGeneric,
	dotsQ8:        dotsQ8Generic,

	dotsQ8Queries: dotsQ8QueriesGeneric,
	dotsF16Keys:   dotsF16KeysGeneric,
}

// derive returns the table of tier t: a copy of k with the entries set
// overwrites.
func (k *kernelSet) derive(t Tier, set func(*kernelSet)) *kernelSet {
	d := *k
	d.tier = t
	set(&d)
	return &d
}

// kern is the active kernel set and kernErr the error of CORELM_KERNELS, if
// any. kern is written only at initialisation and by tests (useTier), never
// while kernels run.
var kern, kernErr = pickKernels(os.Getenv("CORELM_KERNELS"))

// ActiveTier reports the kernel tier in use.
func ActiveTier() Tier { return kern.tier }

// Check reports a CORELM_KERNELS value that names no tier (an error wrapping
// ErrUnknownTier, naming the valid values). The package then runs the
// reference kernels, the one safe reading of a cap it cannot parse; a
// program should call Check at start-up and refuse to run on an error.
func Check() error { return kernErr }

// pickKernels returns the best tier the CPU supports, capped by env, and
// env's error (with the reference tier).
func pickKernels(env string) (*kernelSet, error) {
	limit, err := tierCap(env)
	best := genericKernels
	for _, k := range hostKernels() {
		if k.tier <= limit && k.tier > best.tier {
			best = k
		}
	}
	return best, err
}

// The assembly kernels leave ggml's AVX2 accumulators in acc: eight float32
// lanes and, for the formats with a minimum, four more. These reduce them in
// ggml's order (hsum_float_8, then the min lanes pairwise).

func hsum8(a *[8]float32) float32 {
	return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))
}

// hsumQ4K also serves Q5_K.
func hsumQ4K(a *[12]float32) float32 {
	return hsum8((*[8]float32)(a[:8])) + ((a[8] + a[10]) + (a[9] + a[11]))
}
