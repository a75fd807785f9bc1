package kernels

import (
	"math"
	"testing"
)

func TestRoPEHandComputed(t *testing.T) {
	// Dims 4, base 10000: pair 0 turns by pos, pair 1 by pos·10000^(-1/2) = pos/100.
	c1, s1 := math.Cos(1), math.Sin(1)
	c2, s2 := math.Cos(0.01), math.Sin(0.01)
	tests := []struct {
		name string
		r    RoPE
		in   []float32
		pos  int
		want []float64
	}{
		{"normal pairs", RoPE{Dims: 4, Base: 10000}, []float32{1, 0, 0, 1}, 1,
			[]float64{c1, s1, -s2, c2}},
		{"neox halves", RoPE{Dims: 4, Base: 10000, NeoX: true}, []float32{1, 0, 0, 1}, 1,
			// pairs (x0,x2) by 1 and (x1,x3) by 0.01
			[]float64{c1, -s2, s1, c2}},
		{"position 0 is identity", RoPE{Dims: 4, Base: 10000}, []float32{1, 2, 3, 4}, 0,
			[]float64{1, 2, 3, 4}},
		{"position 3", RoPE{Dims: 4, Base: 10000}, []float32{1, 0, 1, 0}, 3,
			[]float64{math.Cos(3), math.Sin(3), math.Cos(0.03), math.Sin(0.03)}},
		{"freq factors divide theta", RoPE{Dims: 4, Base: 10000, FreqFactors: []float32{2, 4}}, []float32{1, 0, 1, 0}, 1,
			[]float64{math.Cos(0.5), math.Sin(0.5), math.Cos(0.0025), math.Sin(0.0025)}},
		{"freq scale", RoPE{Dims: 4, Base: 10000, FreqScale: 0.25}, []float32{1, 0, 1, 0}, 2,
			[]float64{math.Cos(0.5), math.Sin(0.5), math.Cos(0.005), math.Sin(0.005)}},
		{"attn factor scales cos and sin", RoPE{Dims: 4, Base: 10000, AttnFactor: 0.5}, []float32{1, 0, 0, 2}, 1,
			[]float64{0.5 * c1, 0.5 * s1, -s2, c2}},
		{"partial rotary leaves the tail", RoPE{Dims: 2, HeadSize: 4, Base: 10000}, []float32{1, 0, 7, 8, 0, 1, 9, 10}, 1,
			[]float64{c1, s1, 7, 8, -s1, c1, 9, 10}},
		{"several heads", RoPE{Dims: 4, Base: 10000, NeoX: true}, []float32{1, 0, 0, 1, 0, 1, 1, 0}, 1,
			[]float64{c1, -s2, s1, c2, -s1, c2, c1, s2}},
		{"base 100 neox", RoPE{Dims: 4, Base: 100, NeoX: true}, []float32{0, 0, 1, 1}, 2,
			// pair 0 by 2, pair 1 by 2/10
			[]float64{-math.Sin(2), -math.Sin(0.2), math.Cos(2), math.Cos(0.2)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := append([]float32(nil), tt.in...)
			tt.r.Apply(x, tt.pos)
			for i := range x {
				if math.Abs(float64(x[i])-tt.want[i]) > 1e-6 {
					t.Errorf("x[%d] = %.8f, want %.8f", i, x[i], tt.want[i])
				}
			}
		})
	}
}

// TestRoPELongHead checks a realistic head against float64 trigonometry of
// the exact powers: ggml's iterated float32 powers drift by a few ulps per
// step, which at position 4000 is still far below 1e-3 of the angle.
func TestRoPELongHead(t *testing.T) {
	const dims, pos = 128, 4000
	for _, neox := range []bool{false, true} {
		r := RoPE{Dims: dims, Base: 500000, NeoX: neox}
		x := make([]float32, dims)
		for i := range x {
			x[i] = float32(i%7) - 3
		}
		orig := append([]float32(nil), x...)
		r.Apply(x, pos)
		var n0, n1 float64
		for i := range dims / 2 {
			a, b := 2*i, 2*i+1
			if neox {
				a, b = i, i+dims/2
			}
			theta := pos * math.Pow(500000, -2*float64(i)/dims)
			wa := float64(orig[a])*math.Cos(theta) - float64(orig[b])*math.Sin(theta)
			wb := float64(orig[a])*math.Sin(theta) + float64(orig[b])*math.Cos(theta)
			if math.Abs(float64(x[a])-wa) > 2e-3 || math.Abs(float64(x[b])-wb) > 2e-3 {
				t.Fatalf("neox=%v pair %d: (%v, %v), want (%v, %v)", neox, i, x[a], x[b], wa, wb)
			}
			n0 += float64(orig[a])*float64(orig[a]) + float64(orig[b])*float64(orig[b])
			n1 += float64(x[a])*float64(x[a]) + float64(x[b])*float64(x[b])
		}
		if math.Abs(n0-n1) > 1e-4*n0 {
			t.Errorf("neox=%v: norm² %v → %v", neox, n0, n1)
		}
	}
}

func TestRoPEPanicsOnBadShape(t *testing.T) {
	for _, r := range []RoPE{{Dims: 3, Base: 1e4}, {Dims: 8, HeadSize: 4, Base: 1e4}, {Dims: 4, Base: 1e4, FreqFactors: []float32{1}}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%+v: no panic", r)
				}
			}()
			r.Apply(make([]float32, 8), 1)
		}()
	}
}

func TestRoPENoAlloc(t *testing.T) {
	r := RoPE{Dims: 128, Base: 10000, NeoX: true}
	x := make([]float32, 128*8)
	if n := testing.AllocsPerRun(10, func() { r.Apply(x, 17) }); n != 0 {
		t.Errorf("Apply allocates %v times", n)
	}
}
