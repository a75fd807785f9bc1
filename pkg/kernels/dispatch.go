package kernels

import (
	"os"
	"strings"
)

// Kernel tiers. The pure-Go reference (dot.go, dotq_*.go) is always present
// and is the oracle of the tests; on amd64 the generated assembly in
// dot_amd64.s adds two tiers. The tier is chosen once, when the package is
// initialised, from the CPU's features (golang.org/x/sys/cpu), capped by the
// environment variable CORELM_KERNELS:
//
//	CORELM_KERNELS=generic   the reference path only (also: purego)
//	CORELM_KERNELS=avx2      at most the AVX2+FMA+F16C kernels
//	CORELM_KERNELS=avx512    at most the AVX-512 BW/VL + VNNI kernels (the default cap)
//
// The purego build tag compiles the assembly out. Dispatch is coarse: the
// kernel is looked up once per row (DotQ) or per row range (MatMul), never
// per block.
//
// Numerics: the integer sums of every assembly kernel equal the reference's
// exactly. The float accumulation follows ggml's AVX2 order rather than its
// scalar one (eight float32 lanes, lane l collecting the 4-element products
// l of each 32-byte chunk, one fused multiply-add per lane per block, the
// lanes added pairwise at the end), so results differ from the reference in
// the last bits (see dot_x86order_test.go for the exact model and the bound)
// and are identical across the assembly tiers, and between the one-row and
// multi-row kernels (several activation rows per weight row: prefill; or
// several weight rows per activation row, the cols kernels: decode). Q4_K/Q5_K/Q6_K/Q8_0/Q4_0 run in assembly; the other
// types keep the reference. Two caveats: the Q8_0/Q4_0 kernels use ggml's
// sign trick, exact for every activation Quantize can produce (never -128);
// the F16 dots sum the same float32 products in float64 in another order
// (within one float32 ulp plus 2⁻⁴⁰·Σ|w·x| of the reference). The Q8_K
// encoder writes the reference's bytes for finite input. The LayoutR16
// kernels reproduce their own reference twin (dotR16Ref) bit for bit, which
// adds the same exact integer sums as the ggml-layout kernels in another
// float grouping. The attention helpers (DotsF16, AxpyF16, AxpysF16) use
// fused multiply-adds where the reference multiplies and adds: within
// float32 rounding of it, and AxpysF16 equals AxpyF16 row by row exactly.

// Tier identifies a set of kernel implementations.
type Tier int

const (
	TierGeneric Tier = iota // pure Go
	TierAVX2                // AVX2 + FMA + F16C
	TierAVX512              // AVX-512 F/BW/VL + VNNI
)

func (t Tier) String() string {
	switch t {
	case TierGeneric:
		return "generic"
	case TierAVX2:
		return "avx2"
	case TierAVX512:
		return "avx512"
	}
	return "Tier(?)"
}

// kernelSet holds one tier's fast kernels; a nil entry means the reference.
// The row kernels take one weight row and its encoded activation row, with
// lengths already checked. The rows kernels compute rowsN dots of one
// weight row with the activation rows xq[0:], xq[xrb:], ... into out[0],
// out[ostride], ..., exactly as rowsN calls of the row kernel would.
type kernelSet struct {
	tier    Tier
	q4K     func(w, xq []byte) float32
	q5K     func(w, xq []byte) float32
	q6K     func(w, xq []byte) float32
	q8_0    func(w, xq []byte) float32
	q4_0    func(w, xq []byte) float32
	rowsQ4K func(w, xq []byte, xrb int, out []float32, ostride int)
	rowsQ5K func(w, xq []byte, xrb int, out []float32, ostride int)
	rowsQ6K func(w, xq []byte, xrb int, out []float32, ostride int)
	rowsN   int
	// The cols kernels compute colsN dots of the weight rows w[0:wrb],
	// w[wrb:2·wrb], ... with one activation row into out[0:colsN], exactly
	// as colsN calls of the row kernel would (the decode case).
	colsQ4K func(w []byte, wrb int, xq []byte, out []float32)
	colsQ6K func(w []byte, wrb int, xq []byte, out []float32)
	colsN   int
	// The r16 kernels compute, for one LayoutR16 group (nb group blocks
	// at w) and R activation rows at xq, xq[xrb:], ..., the 16 dots of
	// each row into out[r*ostride : r*ostride+16] (see dotR16Ref).
	r16Q4K, r16Q6K func(w []byte, nb int, xq []byte, xrb, R int, out []float32, ostride int)

	vecKernels
}

// vecKernels are the element-wise and attention kernels; every assembly
// tier has the same ones (AVX2), the reference tier none.
type vecKernels struct {
	quantQ8K func(src []float32, dst []byte) // whole blocks, lengths checked
	f16F32   func(w []byte, x []float32) float32
	f16F16   func(w, x []byte) float32
	axpyF16  func(w float32, v []byte, o []float32) // len(v) == 2·len(o)
	dotsF16  func(k []byte, stride int, q, out []float32)
	axpysF16 func(w []float32, v []byte, stride int, o []float32)
	// expSub sets x[i] = e^(x[i]-m) and returns their sum, max is the
	// largest x[i] (softmax); swiglu is SwiGLU's element loop. expSub and
	// swiglu are within 2 ulp of exp32's results, not bit-identical
	// (fused multiply-adds).
	expSub func(x []float32, m float32) float32
	swiglu func(dst, gate, up []float32)
	max    func(x []float32) float32 // len(x) > 0
}

var genericKernels = &kernelSet{tier: TierGeneric}

// kern is the active kernel set. It is written only at initialisation and by
// tests (useTier), never while kernels run.
var kern = pickKernels(os.Getenv("CORELM_KERNELS"))

// ActiveTier reports the kernel tier in use.
func ActiveTier() Tier { return kern.tier }

// pickKernels returns the best tier the CPU supports, capped by env.
func pickKernels(env string) *kernelSet {
	limit := TierAVX512
	switch strings.ToLower(strings.TrimSpace(env)) {
	case "generic", "purego", "go":
		limit = TierGeneric
	case "avx2":
		limit = TierAVX2
	}
	best := genericKernels
	for _, k := range hostKernels() {
		if k.tier <= limit && k.tier > best.tier {
			best = k
		}
	}
	return best
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
