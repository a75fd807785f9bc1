package kernels

import (
	"fmt"
	"math"
)

// Element-wise float32 operators of a transformer layer. Each mirrors the
// order of operations of ggml's scalar CPU code (named per function) so that
// golden comparisons with llama.cpp stay within a few ulps; transcendental
// functions go through float64 and round once, which matches a correctly
// rounded libm.

func mustSameLen(op string, n int, others ...int) {
	for _, m := range others {
		if m != n {
			panic(fmt.Sprintf("kernels: %s: length %d, want %d", op, m, n))
		}
	}
}

// RMSNorm sets dst[i] = x[i] / sqrt(mean(x²) + eps) * weight[i] (ggml_rms_norm
// followed by ggml_mul, sum of squares in float64). weight may be nil for no
// scale. dst may alias x.
func RMSNorm(dst, x, weight []float32, eps float32) {
	mustSameLen("RMSNorm", len(x), len(dst))
	if weight != nil {
		mustSameLen("RMSNorm", len(x), len(weight))
	}
	if len(x) == 0 {
		return
	}
	var sum float64
	for _, v := range x {
		sum += float64(v * v)
	}
	mean := float32(sum / float64(len(x)))
	scale := 1 / sqrt32(mean+eps)
	if weight == nil {
		for i, v := range x {
			dst[i] = v * scale
		}
		return
	}
	for i, v := range x {
		dst[i] = v * scale * weight[i]
	}
}

// Softmax replaces x by exp(x-max)/Σexp(x-max) (ggml_soft_max without mask:
// the sum in float64, then one multiply by its inverse). An all -Inf row
// yields NaNs, as in ggml; attention masks never produce one.
func Softmax(x []float32) {
	if len(x) == 0 {
		return
	}
	m := kern.max(x)
	Scale(x, 1/kern.expSub(x, m))
}

// SiLU applies x·σ(x) = x/(1+e⁻ˣ) in place (ggml_silu_f32).
func SiLU(x []float32) {
	for i, v := range x {
		x[i] = v / (1 + expGeneric(-v))
	}
}

// GELU applies the tanh approximation 0.5·x·(1+tanh(√(2/π)·x·(1+0.044715·x²)))
// in place, computed directly as ggml_gelu_f32 does rather than through
// ggml's f16 lookup table.
func GELU(x []float32) {
	const (
		coefA       = float32(0.044715)
		sqrt2OverPi = float32(0.79788456080286535587989211986876)
	)
	for i, v := range x {
		x[i] = 0.5 * v * (1 + tanh32(sqrt2OverPi*v*(1+coefA*v*v)))
	}
}

// Mul sets dst[i] = a[i]·b[i]. dst may alias a or b.
func Mul(dst, a, b []float32) {
	mustSameLen("Mul", len(dst), len(a), len(b))
	for i := range dst {
		dst[i] = a[i] * b[i]
	}
}

// Add sets dst[i] = a[i]+b[i]. dst may alias a or b.
func Add(dst, a, b []float32) {
	mustSameLen("Add", len(dst), len(a), len(b))
	for i := range dst {
		dst[i] = a[i] + b[i]
	}
}

// Scale multiplies x by s in place (every tier: one rounded multiply per
// element, so the same bits).
func Scale(x []float32, s float32) { kern.scale(x, s) }

// ScaleTanh sets x[i] = c·tanh(x[i]·s): attention's soft-capped scores
// (Gemma-2), c·tanh(q·k·Scale/c). The tanh is a rational approximation
// within a few ulp of tanh (tanhRational), the same bits on every tier.
func ScaleTanh(x []float32, s, c float32) { kern.scaleTanh(x, s, c) }

// SoftCap squashes x into (-c, c) in place: x = c·tanh(x/c) (Gemma 2's
// attention and final-logit soft-capping). Like llama.cpp's graph (scale by
// 1/c, tanh, scale by c) it multiplies by the rounded inverse rather than
// dividing, which can differ from a true division in the last bit.
func SoftCap(x []float32, c float32) {
	ic := 1 / c
	for i, v := range x {
		x[i] = tanh32(v*ic) * c
	}
}

// SwiGLU sets dst[i] = silu(gate[i])·up[i] (the gated feed-forward of
// Llama-style blocks), split over the pool. dst may alias gate or up.
func SwiGLU(p *Pool, dst, gate, up []float32) {
	mustSameLen("SwiGLU", len(dst), len(gate), len(up))
	const piece = 2048
	f := kern.swiglu
	p.Run((len(dst)+piece-1)/piece, func(lo, hi int) {
		lo, hi = lo*piece, min(hi*piece, len(dst))
		f(dst[lo:hi], gate[lo:hi], up[lo:hi])
	})
}

func tanh32(f float32) float32 { return float32(math.Tanh(float64(f))) }
