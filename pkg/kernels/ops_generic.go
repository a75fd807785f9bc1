package kernels

import "math"

// The reference twins of the element-wise kernels (genericKernels' entries):
// the oracle the assembly is tested against, and the path of the generic
// tier.

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
		e := expGeneric(v - m)
		sum += float64(e)
		x[i] = e
	}
	return float32(sum)
}

// expGeneric is e^x in float32 arithmetic, within 2 ulp (TestExpGeneric),
// like ggml's vectorised expf, and the reference of the assembly's: x = k·ln2 + r with |r| ≤ ln2/2, a degree-7 polynomial
// for e^r (Cephes' expf coefficients), then the exponent k added in.
func expGeneric(x float32) float32 {
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

// swigluGeneric is the reference of the swiglu kernels.
func swigluGeneric(dst, gate, up []float32) {
	for i, g := range gate {
		dst[i] = g / (1 + expGeneric(-g)) * up[i]
	}
}

// The rational tanh of attention's soft-capping (ScaleTanh): Eigen's float
// tanh, an odd degree-13 polynomial over an even degree-6 one on x clamped
// to [-9, 9] (beyond which tanh rounds to ±1), within a few ulp of tanh.
const (
	tanhA13 float32 = -2.76076847742355e-16
	tanhA11 float32 = 2.00018790482477e-13
	tanhA9  float32 = -8.60467152213735e-11
	tanhA7  float32 = 5.12229709037114e-08
	tanhA5  float32 = 1.48572235717979e-05
	tanhA3  float32 = 6.37261928875436e-04
	tanhA1  float32 = 4.89352455891786e-03
	tanhB6  float32 = 1.19825839466702e-06
	tanhB4  float32 = 1.18534705686654e-04
	tanhB2  float32 = 2.26843463243900e-03
	tanhB0  float32 = 4.89352518554385e-03
)

// tanhRational is that tanh in float32 multiplies and adds, each rounded
// (the conversions forbid fusing them), in the order the assembly takes:
// p = (((α13·x² + α11)·x² + α9)·x² + … + α1)·x, q = ((β6·x² + β4)·x² +
// β2)·x² + β0, tanh = p/q clamped to [-1, 1].
func tanhRational(x float32) float32 {
	x = min(max(x, -9), 9)
	x2 := float32(x * x)
	p := float32(x2*tanhA13) + tanhA11
	p = float32(p*x2) + tanhA9
	p = float32(p*x2) + tanhA7
	p = float32(p*x2) + tanhA5
	p = float32(p*x2) + tanhA3
	p = float32(p*x2) + tanhA1
	p = float32(p * x)
	q := float32(x2*tanhB6) + tanhB4
	q = float32(q*x2) + tanhB2
	q = float32(q*x2) + tanhB0
	// Near ±9 p/q overshoots ±1 by an ulp; a cap must not exceed c.
	return min(max(p/q, -1), 1)
}

// scaleTanhGeneric sets x[i] = c·tanh(x[i]·s) with tanhRational.
func scaleTanhGeneric(x []float32, s, c float32) {
	for i, v := range x {
		x[i] = c * tanhRational(v*s)
	}
}

// scaleGeneric multiplies x by s in place.
func scaleGeneric(x []float32, s float32) {
	for i := range x {
		x[i] *= s
	}
}
