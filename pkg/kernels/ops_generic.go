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
