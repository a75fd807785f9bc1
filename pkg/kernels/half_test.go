package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// f16Value decodes a half from its definition, independently of F16ToF32.
func f16Value(h uint16) float64 {
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	e, m := int(h>>10&0x1f), float64(h&0x3ff)
	switch e {
	case 0:
		return sign * math.Ldexp(m, -24)
	case 0x1f:
		if m == 0 {
			return sign * math.Inf(1)
		}
		return math.NaN()
	}
	return sign * math.Ldexp(1+m/1024, e-15)
}

func TestF16ToF32Exhaustive(t *testing.T) {
	for i := range 1 << 16 {
		h := uint16(i)
		got := F16ToF32(h)
		want := f16Value(h)
		if math.IsNaN(want) {
			bits := math.Float32bits(got)
			if !math.IsNaN(float64(got)) || bits>>31 != uint32(h>>15) || bits&0x400000 == 0 {
				t.Fatalf("F16ToF32(%#04x) = %#08x, want a quiet NaN with the same sign", h, bits)
			}
			if back := F32ToF16(got); back != h&0x8000|0x7e00 {
				t.Fatalf("F32ToF16(F16ToF32(%#04x)) = %#04x, want canonical NaN", h, back)
			}
			continue
		}
		if float64(got) != want || math.Signbit(float64(got)) != (h&0x8000 != 0) {
			t.Fatalf("F16ToF32(%#04x) = %v, want %v", h, got, want)
		}
		if back := F32ToF16(got); back != h {
			t.Fatalf("F32ToF16(F16ToF32(%#04x)) = %#04x", h, back)
		}
	}
}

// f16Nearest is the rounding oracle: binary search for the largest finite
// half not above |f|, then pick it or its successor by exact float64
// distance, ties to the even code.
func f16Nearest(f float32) uint16 {
	if math.IsNaN(float64(f)) {
		if math.Signbit(float64(f)) {
			return 0xfe00
		}
		return 0x7e00
	}
	var sign uint16
	a := float64(f)
	if a < 0 || math.Signbit(a) {
		sign, a = 0x8000, -a
	}
	lo, hi := 0, 0x7bff // finite magnitudes are ordered by code
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if f16Value(uint16(mid)) <= a {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	below := f16Value(uint16(lo))
	var above float64
	if lo == 0x7bff {
		above = 65536 // where Inf sits for rounding purposes
	} else {
		above = f16Value(uint16(lo + 1))
	}
	db, da := a-below, above-a
	code := lo
	if da < db || da == db && lo&1 == 1 {
		code = lo + 1
	}
	return sign | uint16(code) // code 0x7c00 is Inf
}

func TestF32ToF16Rounding(t *testing.T) {
	tests := []struct {
		name string
		in   float32
		want uint16
	}{
		{"one", 1, 0x3c00},
		{"tie to even down", 1 + 0x1p-11, 0x3c00},
		{"tie to even up", 1 + 3*0x1p-11, 0x3c02},
		{"above tie", 1 + 0x1p-11 + 0x1p-20, 0x3c01},
		{"below tie", 1 + 0x1p-11 - 0x1p-23, 0x3c00},
		{"max half", 65504, 0x7bff},
		{"just below overflow tie", 65519.996, 0x7bff},
		{"overflow tie rounds to inf", 65520, 0x7c00},
		{"huge", 1e10, 0x7c00},
		{"negative huge", -1e10, 0xfc00},
		{"smallest normal", 0x1p-14, 0x0400},
		{"largest subnormal", 0x1p-14 - 0x1p-24, 0x03ff},
		{"smallest subnormal", 0x1p-24, 0x0001},
		{"half of smallest subnormal ties to zero", 0x1p-25, 0x0000},
		{"just above half of smallest subnormal", 0x1p-25 + 0x1p-40, 0x0001},
		{"1.5 subnormal ties up to even", 3 * 0x1p-25, 0x0002},
		{"subnormal rounds into normal", 0x1p-14 - 0x1p-26, 0x0400},
		{"tiny", 1e-30, 0x0000},
		{"negative zero", float32(math.Copysign(0, -1)), 0x8000},
		{"negative", -2, 0xc000},
		{"inf", float32(math.Inf(1)), 0x7c00},
		{"-inf", float32(math.Inf(-1)), 0xfc00},
		{"nan", float32(math.NaN()), 0x7e00},
		{"-nan", math.Float32frombits(0xffc00001), 0xfe00},
		{"signalling nan", math.Float32frombits(0x7f800001), 0x7e00},
	}
	for _, tt := range tests {
		if got := F32ToF16(tt.in); got != tt.want {
			t.Errorf("%s: F32ToF16(%g) = %#04x, want %#04x", tt.name, tt.in, got, tt.want)
		}
		if got := f16Nearest(tt.in); got != tt.want {
			t.Errorf("%s: oracle(%g) = %#04x, want %#04x (test oracle broken)", tt.name, tt.in, got, tt.want)
		}
	}
}

// TestF32ToF16Oracle sweeps every sign/exponent with the mantissa patterns
// around half's rounding boundaries, plus random bit patterns.
func TestF32ToF16Oracle(t *testing.T) {
	mants := []uint32{0, 1, 0xfff, 0x1000, 0x1001, 0x1fff, 0x2000, 0x3000, 0x2fff, 0x400000, 0x7fe000, 0x7ff000, 0x7fffff}
	check := func(bits uint32) {
		f := math.Float32frombits(bits)
		if got, want := F32ToF16(f), f16Nearest(f); got != want {
			t.Fatalf("F32ToF16(%#08x = %g) = %#04x, want %#04x", bits, f, got, want)
		}
	}
	for se := range uint32(512) {
		for _, m := range mants {
			check(se<<23 | m)
		}
		// Subnormal-half range needs more shifts of the tie bit.
		for s := range uint32(23) {
			check(se<<23 | 1<<s)
			check(se<<23 | 3<<s>>1)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		check(r.Uint32())
	}
}

func TestBF16(t *testing.T) {
	for i := range 1 << 16 {
		h := uint16(i)
		f := BF16ToF32(h)
		if math.Float32bits(f) != uint32(h)<<16 {
			t.Fatalf("BF16ToF32(%#04x) = %#08x", h, math.Float32bits(f))
		}
		back := F32ToBF16(f)
		if math.IsNaN(float64(f)) {
			if back != h|0x40 {
				t.Fatalf("F32ToBF16(NaN %#04x) = %#04x, want it quiet", h, back)
			}
			continue
		}
		if back != h {
			t.Fatalf("F32ToBF16(BF16ToF32(%#04x)) = %#04x", h, back)
		}
	}
	tests := []struct {
		name string
		in   uint32
		want uint16
	}{
		{"one", 0x3f800000, 0x3f80},
		{"tie to even down", 0x3f808000, 0x3f80},
		{"tie to even up", 0x3f818000, 0x3f82},
		{"above tie", 0x3f808001, 0x3f81},
		{"below tie", 0x3f807fff, 0x3f80},
		{"negative tie", 0xbf818000, 0xbf82},
		{"max float rounds to inf", 0x7f7fffff, 0x7f80},
		{"inf", 0x7f800000, 0x7f80},
		{"nan with low payload stays nan", 0x7f800001, 0x7fc0},
		{"negative nan", 0xffc00000, 0xffc0},
		{"subnormal", 0x00008000, 0x0000},
		{"subnormal tie up", 0x00018000, 0x0002},
	}
	for _, tt := range tests {
		if got := F32ToBF16(math.Float32frombits(tt.in)); got != tt.want {
			t.Errorf("%s: F32ToBF16(%#08x) = %#04x, want %#04x", tt.name, tt.in, got, tt.want)
		}
	}
}

// TestAxpyF16 checks every tier's AxpyF16 against the reference on odd
// lengths and misaligned operands: each element within one rounding of
// |o|+|w·v| (a fused multiply-add rounds once, the reference twice).
// randomF16 returns size bytes of float16 values drawn from a standard
// normal distribution (a trailing odd byte stays zero).
func randomF16(r *rand.Rand, size int) []byte {
	b := make([]byte, size)
	for i := 0; i+1 < len(b); i += 2 {
		h := F32ToF16(float32(r.NormFloat64()))
		b[i], b[i+1] = byte(h), byte(h>>8)
	}
	return b
}

func TestAxpyF16(t *testing.T) {
	r := rand.New(rand.NewPCG(51, 52))
	for _, k := range allTiers() {
		useTier(t, k)
		for _, n := range []int{0, 1, 15, 16, 17, 64, 100, 128} {
			v := randomF16(r, 2*n)
			v = misalign(v, n%7+1)
			o := make([]float32, n)
			for i := range o {
				o[i] = float32(r.NormFloat64())
			}
			w := float32(r.Float64())
			want := append([]float32(nil), o...)
			axpyF16Generic(w, v, want)
			AxpyF16(w, v, o)
			for i := range o {
				x := F16ToF32(uint16(v[2*i]) | uint16(v[2*i+1])<<8)
				bound := 0x1p-23 * (math.Abs(float64(want[i])) + math.Abs(float64(w*x)) + math.Abs(float64(o[i])))
				if math.Abs(float64(o[i]-want[i])) > bound {
					t.Fatalf("%s n=%d: o[%d] = %v, reference %v", k.tier, n, i, o[i], want[i])
				}
			}
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("AxpyF16 with mismatched lengths did not panic")
		}
	}()
	AxpyF16(1, make([]byte, 3), make([]float32, 2))
}

// TestAxpysF16: on every tier, exactly what one AxpyF16 per row gives, for
// head sizes with and without a multiple of 64 and misaligned rows.
func TestAxpysF16(t *testing.T) {
	r := rand.New(rand.NewPCG(55, 56))
	for _, k := range allTiers() {
		useTier(t, k)
		for _, hd := range []int{8, 64, 96, 128, 256} {
			for _, n := range []int{0, 1, 7, 40} {
				stride := 2*hd + 34
				v := randomF16(r, max(0, (n-1)*stride+2*hd))
				v = misalign(v, n%3+1)
				w := gaussian(r, n, 1)
				o := gaussian(r, hd+1, 1)
				want := append([]float32(nil), o...)
				for i := range n {
					AxpyF16(w[i], v[i*stride:i*stride+2*hd], want[:hd])
				}
				AxpysF16(w, v, stride, o[:hd])
				for j := range o {
					if o[j] != want[j] {
						t.Fatalf("%s hd=%d n=%d: o[%d] = %v, row by row %v", k.tier, hd, n, j, o[j], want[j])
					}
				}
			}
		}
	}
}
