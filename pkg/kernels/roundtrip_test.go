package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// quantTypes are the types Quantize encodes, with the bound on the relative
// RMS error of a round trip of Gaussian data with outliers (measured values
// are 15-20% below these; a wrong search or layout lands far above).
var quantTypes = []struct {
	t      DType
	relRMS float64
}{
	{F32, 0},
	{F16, 0.0003},
	{BF16, 0.003},
	{Q8_0, 0.007},
	{Q8_1, 0.007},
	{Q8_K, 0.012},
	{Q6_K, 0.023},
	{Q5_0, 0.055},
	{Q5_1, 0.047},
	{Q5_K, 0.045},
	{Q4_0, 0.11},
	{Q4_1, 0.097},
	{Q4_K, 0.089},
	{Q3_K, 0.19},
	{Q2_K, 0.36},
}

func gaussian(r *rand.Rand, n int, scale float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64() * scale)
	}
	return x
}

func roundTrip(t *testing.T, typ DType, x []float32) []float32 {
	t.Helper()
	size, ok := typ.RowBytes(len(x))
	if !ok {
		t.Fatalf("%v: %d elements", typ, len(x))
	}
	b := make([]byte, size)
	Quantize(typ, x, b)
	y := make([]float32, len(x))
	Dequantize(typ, b, y)
	return y
}

func relRMS(x, y []float32) float64 {
	var se, sx float64
	for i := range x {
		d := float64(x[i]) - float64(y[i])
		se += d * d
		sx += float64(x[i]) * float64(x[i])
	}
	return math.Sqrt(se / sx)
}

func TestRoundTripError(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	// Rows with a spread of magnitudes and a few outliers, like weights.
	x := gaussian(r, 64*256, 0.02)
	for i := 0; i < len(x); i += 997 {
		x[i] *= 8
	}
	for _, tt := range quantTypes {
		y := roundTrip(t, tt.t, x)
		got := relRMS(x, y)
		t.Logf("%-5v relative RMS error %.5f (bound %.5f)", tt.t, got, tt.relRMS)
		if got > tt.relRMS || math.IsNaN(got) {
			t.Errorf("%v: relative RMS error %.5f > %.5f", tt.t, got, tt.relRMS)
		}
	}
}

// TestRoundTripMaxError bounds the worst element of each legacy block by the
// format's step (half a step, plus the f16 rounding of the block scale, or a
// whole step where the format clamps the code opposite the extreme).
func TestRoundTripMaxError(t *testing.T) {
	tests := []struct {
		t     DType
		bound float64 // × block max |x|
	}{
		{Q8_0, 0.5/127 + 0x1p-11},
		{Q8_1, 0.5/127 + 0x1p-11},
		{Q8_K, 0.5/127 + 1e-6},
		{Q5_0, 1.0/16 + 0x1p-11},
		{Q5_1, 1.0/31 + 0x1p-9},
		{Q4_0, 1.0/8 + 0x1p-11},
		{Q4_1, 1.0/15 + 0x1p-9},
	}
	r := rand.New(rand.NewPCG(5, 6))
	x := gaussian(r, 32*256, 1)
	for _, tt := range tests {
		y := roundTrip(t, tt.t, x)
		bs := tt.t.BlockSize()
		for b := 0; b < len(x); b += bs {
			amax, _ := maxAbs(x[b : b+bs])
			for i := b; i < b+bs; i++ {
				if e := math.Abs(float64(x[i] - y[i])); e > tt.bound*float64(amax) {
					t.Fatalf("%v: element %d: %v → %v, error %.3g > %.3g·%v", tt.t, i, x[i], y[i], e, tt.bound, amax)
				}
			}
		}
	}
}

// TestRoundTripSpecialInputs covers the degenerate blocks the searches guard
// against: all zeros, a constant, a single spike, and tiny values.
func TestRoundTripSpecialInputs(t *testing.T) {
	inputs := map[string]func(i int) float32{
		"zeros":    func(int) float32 { return 0 },
		"constant": func(int) float32 { return 0.75 },
		"negative": func(int) float32 { return -3 },
		"spike": func(i int) float32 {
			if i == 77 {
				return 5
			}
			return 0
		},
		"tiny": func(i int) float32 { return 1e-30 * float32(i%5) },
	}
	for name, f := range inputs {
		x := make([]float32, 512)
		for i := range x {
			x[i] = f(i)
		}
		amax, _ := maxAbs(x)
		for _, tt := range quantTypes {
			y := roundTrip(t, tt.t, x)
			for i := range x {
				if e := math.Abs(float64(x[i] - y[i])); math.IsNaN(e) || e > 0.5*float64(amax)+1e-20 {
					t.Errorf("%v %s: element %d: %v → %v", tt.t, name, i, x[i], y[i])
					break
				}
			}
			if name == "zeros" {
				for i, v := range y {
					if v != 0 {
						t.Errorf("%v: zeros decode to %v at %d", tt.t, v, i)
						break
					}
				}
			}
		}
	}
}

// TestLlamaCppQuantizationThresholds replays llama.cpp's
// tests/test-quantize-fns.cpp: the same synthetic data (0.1 + 2cos(i+offset))
// and the same error measures and thresholds, so a quantizer here is at least
// as good as the test that guards ggml's own.
func TestLlamaCppQuantizationThresholds(t *testing.T) {
	const n = 32 * 128
	gen := func(offset float32) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(0.1 + 2*float64(float32(math.Cos(float64(float32(i)+offset)))))
		}
		return x
	}
	x, x2 := gen(0), gen(1)
	for _, typ := range []DType{Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K} {
		maxQ, maxDot := 0.002, 0.02
		switch typ {
		case Q2_K:
			maxQ, maxDot = 0.0075, 0.04
		case Q3_K:
			maxQ, maxDot = 0.0040, 0.04
		}
		y := roundTrip(t, typ, x)
		var sum float64
		for i := range x {
			d := float64(x[i]) - float64(y[i])
			sum += d * d
		}
		if e := math.Sqrt(sum) / n; e >= maxQ {
			t.Errorf("%v: total quantization error %.6f ≥ %.4f", typ, e, maxQ)
		}

		w := quantize(typ, x)
		xq := quantize(VecDotType(typ), x2)
		var ref float64
		for i := range x {
			ref += float64(x[i] * x2[i])
		}
		if e := math.Abs(float64(DotQ(typ, n, w, xq))-float64(float32(ref))) / n; e >= maxDot {
			t.Errorf("%v: dot product error %.6f ≥ %.4f", typ, e, maxDot)
		}
	}
}

func quantize(t DType, x []float32) []byte {
	size, _ := t.RowBytes(len(x))
	b := make([]byte, size)
	Quantize(t, x, b)
	return b
}

func TestNearestInt(t *testing.T) {
	tests := []struct {
		in   float32
		want int
	}{
		{0, 0}, {0.49999997, 0}, {0.5, 0}, {1.5, 2}, {2.5, 2}, {-0.5, 0}, {-1.5, -2},
		{-2.5, -2}, {3.7, 4}, {-3.7, -4}, {4194303, 4194303}, {-4194303, -4194303},
	}
	for _, tt := range tests {
		if got := nearestInt(tt.in); got != tt.want {
			t.Errorf("nearestInt(%v) = %d, want %d", tt.in, got, tt.want)
		}
	}
}
