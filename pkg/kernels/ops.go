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
	var m, sum float32
	if f := kern.max; f != nil {
		m = f(x)
	} else {
		m = maxGeneric(x)
	}
	if f := kern.expSub; f != nil {
		sum = f(x, m)
	} else {
		sum = expSubGeneric(x, m)
	}
	Scale(x, 1/sum)
}

// maxGeneric is the reference of the max kernels.
func maxGeneric(x []float32) float32 {
	m := float32(math.Inf(-1))
	for _, v := range x {
		m = max(m, v)
	}
	return m
}

// expSubGeneric is the reference of the expSub kernels: x[i] = e^(x[i]-m),
// returning the sum.
func expSubGeneric(x []float32, m float32) float32 {
	var sum float64
	for i, v := range x {
		e := exp32(v - m)
		sum += float64(e)
		x[i] = e
	}
	return float32(sum)
}

// SiLU applies x·σ(x) = x/(1+e⁻ˣ) in place (ggml_silu_f32).
func SiLU(x []float32) {
	for i, v := range x {
		x[i] = v / (1 + exp32(-v))
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

// Scale multiplies x by s in place.
func Scale(x []float32, s float32) {
	for i := range x {
		x[i] *= s
	}
}

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

// exp32 is e^x in float32 arithmetic, within 2 ulp (TestExp32), like ggml's
// vectorised expf: x = k·ln2 + r with |r| ≤ ln2/2, a degree-7 polynomial
// for e^r (Cephes' expf coefficients), then the exponent k added in.
func exp32(x float32) float32 {
	const (
		log2e = 1.44269504088896341
		ln2hi = 0.693359375 // ln 2 = ln2hi + ln2lo, ln2hi with few bits so k·ln2hi is exact
		ln2lo = -2.12194440e-4
	)
	if !(x > -87.3 && x < 88) { // also NaN; near the ends 2^k leaves the normal range
		return float32(math.Exp(float64(x)))
	}
	t := x * log2e
	k := int32(t + 0.5)
	if t < -0.5 {
		k = int32(t - 0.5)
	}
	kf := float32(k)
	r := x - kf*ln2hi - kf*ln2lo
	p := ((((1.9875691500e-4*r+1.3981999507e-3)*r+8.3334519073e-3)*r+4.1665795894e-2)*r+1.6666665459e-1)*r + 5.0000001201e-1
	p = p*r*r + r + 1
	return p * math.Float32frombits(uint32(k+127)<<23)
}

// SwiGLU sets dst[i] = silu(gate[i])·up[i] (the gated feed-forward of
// Llama-style blocks), split over the pool. dst may alias gate or up.
func SwiGLU(p *Pool, dst, gate, up []float32) {
	mustSameLen("SwiGLU", len(dst), len(gate), len(up))
	const piece = 2048
	f := kern.swiglu
	if f == nil {
		f = swigluGeneric
	}
	p.Run((len(dst)+piece-1)/piece, func(lo, hi int) {
		lo, hi = lo*piece, min(hi*piece, len(dst))
		f(dst[lo:hi], gate[lo:hi], up[lo:hi])
	})
}

// swigluGeneric is the reference of the swiglu kernels.
func swigluGeneric(dst, gate, up []float32) {
	for i, g := range gate {
		dst[i] = g / (1 + exp32(-g)) * up[i]
	}
}

func tanh32(f float32) float32 { return float32(math.Tanh(float64(f))) }
