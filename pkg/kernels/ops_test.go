package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// closeTo reports whether got is within rel relative (or 1e-30 absolute) of want.
func closeTo(got float32, want, rel float64) bool {
	return math.Abs(float64(got)-want) <= rel*math.Abs(want)+1e-30
}

func expectClose(t *testing.T, what string, got []float32, want []float64, rel float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if !closeTo(got[i], want[i], rel) {
			t.Errorf("%s[%d] = %.9g, want %.9g (±%g rel)", what, i, got[i], want[i], rel)
		}
	}
}

// Expected values below were computed in float64 from the definitions (by
// hand-written formulas here or in Python), not by this package.

// rmsNormWant is RMSNorm's definition in float64: x[i]/sqrt(Σx²/n + eps)·w[i]
// (w nil: 1).
func rmsNormWant(x, w []float32, eps float64) []float64 {
	var ss float64
	for _, v := range x {
		ss += float64(v) * float64(v)
	}
	scale := 1 / math.Sqrt(ss/float64(len(x))+eps)
	want := make([]float64, len(x))
	for i, v := range x {
		want[i] = float64(v) * scale
		if w != nil {
			want[i] *= float64(w[i])
		}
	}
	return want
}

func TestRMSNorm(t *testing.T) {
	tests := []struct {
		name    string
		x, w    []float32
		eps     float32
		inPlace bool
	}{
		{"weighted", []float32{1, 2, 3, 4}, []float32{1, 0.5, 2, -1}, 0, false},
		{"in place, no weight", []float32{1, 2, 3, 4}, nil, 0, true},
		{"eps dominates a near-zero row", []float32{1e-4, -1e-4}, nil, 1e-2, true},
		{"odd length, eps", []float32{-3, 0.5, 7, 1e-3, -2}, []float32{2, 2, 0.25, 1, -3}, 1e-5, false},
	}
	for _, tt := range tests {
		want := rmsNormWant(tt.x, tt.w, float64(tt.eps))
		dst := make([]float32, len(tt.x))
		if tt.inPlace {
			dst = tt.x
		}
		RMSNorm(dst, tt.x, tt.w, tt.eps)
		expectClose(t, tt.name, dst, want, 1e-6)
	}
}

func TestSoftmax(t *testing.T) {
	x := []float32{1, 2, 3}
	Softmax(x)
	expectClose(t, "small", x, []float64{0.09003057317038046, 0.24472847105479767, 0.6652409557748219}, 1e-6)

	big := []float32{1000, 1001} // would overflow without subtracting the max
	Softmax(big)
	expectClose(t, "max-subtracted", big, []float64{0.2689414213699951, 0.7310585786300049}, 1e-6)

	masked := []float32{float32(math.Inf(-1)), 5, float32(math.Inf(-1)), 5}
	Softmax(masked)
	expectClose(t, "masked", masked, []float64{0, 0.5, 0, 0.5}, 1e-7)

	Softmax(nil) // no panic
}

func TestActivations(t *testing.T) {
	x := []float32{1, -2, 0, 10}
	SiLU(x)
	expectClose(t, "SiLU", x, []float64{0.7310585786300049, -0.2384058440442351, 0, 9.999546021312975}, 1e-6)

	g := []float32{1, -3, 0.5, 0, 5}
	GELU(g)
	// 0.5·x·(1+tanh(√(2/π)·x·(1+0.044715x²))): the tanh form, which differs
	// from the erf GELU (0.8413447 at 1) in the fourth digit. At -3 the sum
	// 1+tanh(..) cancels, costing float32 a few more digits.
	expectClose(t, "GELU", g, []float64{0.8411919906082768, -0.0036373920817729943, 0.34571400982514394, 0, 4.999999770820381}, 2e-5)

	c := []float32{0, 30, -60, 3}
	SoftCap(c, 30)
	expectClose(t, "SoftCap", c, []float64{0, 22.847824678672946, -28.920827402274508, 2.9900398387486744}, 1e-6)
}

func TestElementwise(t *testing.T) {
	a := []float32{1, 2, 3}
	b := []float32{4, -5, 0.5}
	dst := make([]float32, 3)
	Mul(dst, a, b)
	expectClose(t, "Mul", dst, []float64{4, -10, 1.5}, 0)
	Add(dst, a, b)
	expectClose(t, "Add", dst, []float64{5, -3, 3.5}, 0)
	Add(a, a, a) // aliasing
	expectClose(t, "Add alias", a, []float64{2, 4, 6}, 0)
	Scale(a, 0.5)
	expectClose(t, "Scale", a, []float64{1, 2, 3}, 0)
	if got := Dot(a, b); got != 4-10+1.5 {
		t.Errorf("Dot = %v", got)
	}
	defer func() {
		if recover() == nil {
			t.Error("Mul with mismatched lengths did not panic")
		}
	}()
	Mul(dst, a, b[:2])
}

// TestExpGeneric sweeps expGeneric against math.Exp: within 2 ulp of the float32
// nearest the true value, and the right special values at the ends.
func TestExpGeneric(t *testing.T) {
	for x := float32(-104); x < 89; x += 0.0037 {
		want := float32(math.Exp(float64(x)))
		got := expGeneric(x)
		ulp := math.Nextafter32(want, float32(math.Inf(1))) - want
		if math.Abs(float64(got-want)) > 2*float64(ulp) {
			t.Fatalf("expGeneric(%v) = %v, want %v (%g ulp)", x, got, want, float64(got-want)/float64(ulp))
		}
	}
	for _, c := range []struct{ x, want float32 }{
		{0, 1}, {float32(math.Inf(1)), float32(math.Inf(1))}, {float32(math.Inf(-1)), 0}, {100, float32(math.Inf(1))}, {-200, 0},
	} {
		if got := expGeneric(c.x); got != c.want {
			t.Errorf("expGeneric(%v) = %v, want %v", c.x, got, c.want)
		}
	}
	if got := expGeneric(float32(math.NaN())); got == got {
		t.Errorf("expGeneric(NaN) = %v", got)
	}
}

// TestSwiGLU: SwiGLU equals SiLU then Mul (the reference path exactly;
// the assembly within the exponential's tolerance, see TestExpKernels).
func TestSwiGLU(t *testing.T) {
	p := NewPool(3)
	defer p.Close()
	for _, k := range allTiers() {
		useTier(t, k)
		for _, n := range []int{0, 1, 2047, 2048, 5000} {
			gate, up := make([]float32, n), make([]float32, n)
			for i := range gate {
				gate[i], up[i] = float32(i%97)/10-4, float32(i%13)-6
			}
			want := append([]float32(nil), gate...)
			SiLU(want)
			Mul(want, want, up)
			SwiGLU(p, gate, gate, up)
			for i := range gate {
				if d := math.Abs(float64(gate[i] - want[i])); d > 0 && (k.tier == TierGeneric || d > 4e-7*math.Abs(float64(want[i]))) {
					t.Fatalf("%s n=%d: SwiGLU[%d] = %v, SiLU·up %v", k.tier, n, i, gate[i], want[i])
				}
			}
		}
	}
}

// TestExpKernels checks the exponential kernels of every tier against
// float64 math: e^(x-m) within 2 ulp on [-87.3, 88], 0 (or the subnormal)
// below, NaN through;
// the sum within float32 rounding of the exact sum; SwiGLU within 4 ulp;
// odd lengths, misaligned starts and untouched guard bands.
func TestExpKernels(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, k := range allTiers() {
		expSub, swiglu := k.expSub, k.swiglu
		for _, n := range []int{1, 7, 8, 9, 16, 17, 31, 64, 1000, 4099} {
			for _, off := range []int{0, 1, 3} {
				buf := make([]float32, off+n+8)
				for i := range buf {
					buf[i] = -1234.5 // guard value
				}
				x := buf[off : off+n]
				for i := range x {
					x[i] = float32(r.Float64()*176 - 88)
					if off == 1 {
						x[i] = float32(r.Float64()*30 - 25) // a sum that float32 holds
					}
				}
				x[0] = float32(math.Inf(-1))
				if n > 2 {
					x[1], x[2] = -87.2999, -100
				}
				in := append([]float32(nil), x...)
				const m = 0.25
				sum := expSub(x, m)
				var exact float64
				for i, v := range in {
					arg := v - m // in float32, as the kernels subtract
					want := math.Exp(float64(arg))
					exact += float64(x[i])
					if arg < -87.3 { // 0 from the kernels, subnormal from expGeneric
						if !(x[i] >= 0 && x[i] <= float32(want)+1e-45) {
							t.Fatalf("%s: e^(%v) = %v, want 0..%v below -87.3", k.tier, arg, x[i], want)
						}
						continue
					}
					w32 := float32(want)
					ulp := float64(math.Nextafter32(w32, float32(math.Inf(1))) - w32)
					if math.Abs(float64(x[i])-want) > 2*ulp {
						t.Fatalf("%s n=%d: e^(%v) = %v, want %v (%.1f ulp)", k.tier, n, arg, x[i], want, (float64(x[i])-want)/ulp)
					}
				}
				if exact < 1e37 && math.Abs(float64(sum)-exact) > 1e-6*exact*math.Sqrt(float64(n)) { // (softmax's arguments are ≤ 0)
					t.Fatalf("%s n=%d: sum %v, want %v", k.tier, n, sum, exact)
				}
				for i, v := range buf {
					if (i < off || i >= off+n) && v != -1234.5 {
						t.Fatalf("%s n=%d off=%d: guard %d overwritten: %v", k.tier, n, off, i, v)
					}
				}

				gate, up := make([]float32, n), make([]float32, n)
				for i := range gate {
					gate[i], up[i] = float32(r.Float64()*40-20), float32(r.NormFloat64())
				}
				gate[0] = -200 // e^200 overflows: silu → -0
				dst := make([]float32, n+1)
				dst[n] = 42
				swiglu(dst[:n], gate, up)
				for i, g := range gate {
					want := float64(g) / (1 + math.Exp(-float64(g))) * float64(up[i])
					w32 := float32(want)
					ulp := float64(math.Nextafter32(w32, float32(math.Inf(1))) - w32)
					if d := math.Abs(float64(dst[i]) - want); d > 4*ulp && d > 1e-30 {
						t.Fatalf("%s: swiglu(%v, %v) = %v, want %v", k.tier, g, up[i], dst[i], want)
					}
				}
				if dst[n] != 42 {
					t.Fatalf("%s: swiglu wrote past n", k.tier)
				}
			}
		}
		for _, n := range []int{1, 31, 32, 33, 64, 100, 2048} {
			positions := []int{0, 1, 3, n / 2, n - 33, n - 2, n - 1}
			if n <= 64 {
				positions = positions[:0]
				for pos := range n {
					positions = append(positions, pos)
				}
			}
			for _, pos := range positions {
				x := make([]float32, n+1)[1:] // misaligned
				for i := range x {
					x[i] = float32(math.Inf(-1))
					if i%3 == 0 {
						x[i] = float32(r.Float64()*10 - 20)
					}
				}
				x[pos] = float32(pos) - 5
				if got, want := k.max(x), maxGeneric(x); got != want {
					t.Fatalf("%s: max of %d values (largest at %d) = %v, want %v", k.tier, n, pos, got, want)
				}
			}
		}
		// NaNs in the AVX-512 kernel's sixteen lanes, the AVX2 one's eight
		// and the reference's tail.
		nan := []float32{float32(math.NaN()), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
			0, 1, 2, 3, float32(math.NaN()), 5, 6, 7, 0, 0, float32(math.NaN())}
		expSub(nan, 0)
		if nan[0] == nan[0] || nan[20] == nan[20] || nan[26] == nan[26] || nan[1] != float32(math.E) || nan[17] != float32(math.E) {
			t.Errorf("%s: NaN not carried through: %v", k.tier, nan)
		}
	}
}

// TestScaleTanh: on every tier, Scale and ScaleTanh give the reference's
// bits (odd lengths around the AVX-512 kernel's sixteen lanes, offsets into
// the slice, values past the clamp, ±Inf, and a NaN that stays NaN with its
// neighbours untouched), and the rational tanh is within 4e-7 of
// math.Tanh (about 3 ulp of 1), within 4 ulp where |x| < 1, and never
// outside [-1, 1].
func TestScaleTanh(t *testing.T) {
	r := rand.New(rand.NewPCG(91, 92))
	for _, k := range allTiers() {
		useTier(t, k)
		for _, n := range []int{1, 7, 8, 9, 15, 16, 17, 31, 100} {
			for off := range 3 {
				x := gaussian(r, n+off+1, 20)
				x[len(x)-1] = 42
				if n > 9 { // in a vector of the AVX-512 kernel
					x[off+n/2] = float32(math.Inf(-1 + 2*(off&1)))
					x[off+n/3] = float32(math.NaN())
				}
				ws, wt := append([]float32(nil), x...), append([]float32(nil), x...)
				scaleGeneric(ws[off:n+off], 0.37)
				scaleTanhGeneric(wt[off:n+off], 0.37, 50)
				gs, gt := append([]float32(nil), x...), append([]float32(nil), x...)
				Scale(gs[off:n+off], 0.37)
				ScaleTanh(gt[off:n+off], 0.37, 50)
				// A NaN stays a NaN; its payload is the hardware's (Go's
				// min and max make their own).
				same := func(a, b float32) bool { return math.Float32bits(a) == math.Float32bits(b) || a != a && b != b }
				for i := range x {
					if !same(gs[i], ws[i]) || !same(gt[i], wt[i]) {
						t.Fatalf("%s n=%d off=%d: %d: Scale %v, ScaleTanh %v; reference %v, %v", k.tier, n, off, i, gs[i], gt[i], ws[i], wt[i])
					}
				}
			}
		}
	}
	var worst float64
	for i := range 200001 {
		x := float32(-12 + 24*float64(i)/200000)
		got, want := float64(tanhRational(x)), math.Tanh(float64(x))
		ulp := float64(math.Nextafter32(float32(math.Abs(want)), 2)) - math.Abs(float64(float32(want)))
		if math.Abs(got) > 1 {
			t.Fatalf("tanh(%v) = %v, outside [-1, 1]", x, got)
		}
		if d := math.Abs(got - want); d > 4e-7 || math.Abs(float64(x)) < 1 && d > 4*ulp {
			t.Fatalf("tanh(%v) = %v, want %v (%.1f ulp)", x, got, want, d/ulp)
		} else if d/ulp > worst {
			worst = d / ulp
		}
	}
	t.Logf("worst %.2f ulp", worst)
	if got := tanhRational(float32(math.NaN())); !math.IsNaN(float64(got)) {
		t.Errorf("tanh(NaN) = %v", got)
	}
}

// BenchmarkScaleTanh is soft-capping a row of 4096 attention scores: the
// math.Tanh loop attention ran before, and ScaleTanh on every tier (with
// -count, the tiers alternate).
func BenchmarkScaleTanh(b *testing.B) {
	x := gaussian(rand.New(rand.NewPCG(93, 94)), 4096, 20)
	y := make([]float32, len(x))
	b.Run("mathTanh", func(b *testing.B) {
		for range b.N {
			copy(y, x)
			for i, v := range y {
				y[i] = 50 * float32(math.Tanh(float64(v*0.0025)))
			}
		}
	})
	b.Run("ScaleTanh", func(b *testing.B) {
		benchTiers(b, func(b *testing.B) {
			for b.Loop() {
				copy(y, x)
				ScaleTanh(y, 0.0025, 50)
			}
		})
	})
}

// TestSwiGLUPositionFree: a value's result must not depend on where in the
// array it falls — a batch's rows are one flat array, so an input's values
// land at other places when it shares a batch — on every tier.
func TestSwiGLUPositionFree(t *testing.T) {
	r := rand.New(rand.NewPCG(61, 62))
	p := NewPool(1)
	defer p.Close()
	const n = 4099
	gate, up := gaussian(r, n, 6), gaussian(r, n, 1)
	whole := make([]float32, n)
	SwiGLU(p, whole, gate, up)
	for lo := range 9 {
		for hi := lo + 1; hi <= n; hi += 7 {
			part := make([]float32, hi-lo)
			SwiGLU(p, part, gate[lo:hi], up[lo:hi])
			for i, v := range part {
				if math.Float32bits(v) != math.Float32bits(whole[lo+i]) {
					t.Fatalf("value %d: %v in [%d, %d), %v in the whole array", lo+i, v, lo, hi, whole[lo+i])
				}
			}
		}
	}
}
