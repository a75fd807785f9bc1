package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// weightTypes are the types DotQ and MatMul accept as weights.
var weightTypes = []DType{F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, TQ1_0, TQ2_0}

func dequant(t DType, b []byte, n int) []float32 {
	y := make([]float32, n)
	Dequantize(t, b, y)
	return y
}

// dot64 returns Σ a·b and Σ|a·b| in float64.
func dot64(a, b []float32) (sum, mag float64) {
	for i := range a {
		p := float64(a[i]) * float64(b[i])
		sum += p
		mag += math.Abs(p)
	}
	return sum, mag
}

func TestVecDotType(t *testing.T) {
	want := map[DType]DType{
		Q4_0: Q8_0, Q5_0: Q8_0, Q8_0: Q8_0, Q4_1: Q8_1, Q5_1: Q8_1,
		Q2_K: Q8_K, Q3_K: Q8_K, Q4_K: Q8_K, Q5_K: Q8_K, Q6_K: Q8_K,
		F16: F16, BF16: BF16, F32: F32,
	}
	for typ, vt := range want {
		if got := VecDotType(typ); got != vt {
			t.Errorf("VecDotType(%v) = %v, want %v", typ, got, vt)
		}
	}
}

// TestDotQHandBuilt: Q8_0 weights q_j = j-16 at d=0.5 against activations
// all 1 at d=0.25: Σ(j-16) over 32 = -16, times 0.125 = -2.
func TestDotQHandBuilt(t *testing.T) {
	w, x := f16b(0.5), f16b(0.25)
	for j := range 32 {
		w = append(w, byte(int8(j-16)))
		x = append(x, 1)
	}
	if got := DotQ(Q8_0, 32, w, x); got != -2 {
		t.Errorf("DotQ = %v, want -2", got)
	}
	// Q4_0 weights: nibble j low = j%16, high = 15-j%16, d = 1, so values
	// (j-8) and (7-j); activations 2 at d=1 → 2·Σ((j-8)+(7-j)) = 2·16·(-1).
	w4 := f16b(1)
	for j := range 16 {
		w4 = append(w4, byte(j)|byte(15-j)<<4)
	}
	x8 := f16b(1)
	for range 32 {
		x8 = append(x8, 2)
	}
	if got := DotQ(Q4_0, 32, w4, x8); got != -32 {
		t.Errorf("DotQ(Q4_0) = %v, want -32", got)
	}
}

// TestDotQMatchesDequantized: the integer dot must equal the float dot of the
// two dequantized rows up to float32 summation error (≤1e-5 of Σ|w·x|, plus
// the f16 rounding of Q8_1's block sums): any layout disagreement between
// DotQ and Dequantize shows up as O(1) error.
func TestDotQMatchesDequantized(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 9))
	for _, n := range []int{256, 1024, 2816} {
		x := gaussian(r, n, 1)
		for _, typ := range weightTypes {
			w := gaussian(r, n, 0.05)
			vt := VecDotType(typ)
			wq, xq := quantize(typ, w), quantize(vt, x)
			want, mag := dot64(dequant(typ, wq, n), dequant(vt, xq, n))
			tol := 1e-5 * mag
			if vt == Q8_1 {
				// The min term uses the activation block's s = d·Σq, which is
				// stored as f16: allow its rounding, |m·s|·2⁻¹¹ per block.
				wb := typ.BlockBytes()
				for b := 0; b < n/32; b++ {
					tol += math.Abs(float64(getF16(wq[b*wb+2:])*getF16(xq[b*36+2:]))) * 0x1p-11
				}
			}
			got := DotQ(typ, n, wq, xq)
			if math.Abs(float64(got)-want) > tol {
				t.Errorf("%v n=%d: DotQ = %v, dequantized dot = %v (Σ|w·x| %v)", typ, n, got, want, mag)
			}
			// And against the unquantized data, within quantization error
			// (gaussian weights are not ternary: no bound for those).
			exact, mag := dot64(w, x)
			if typ != TQ1_0 && typ != TQ2_0 && math.Abs(float64(got)-exact) > 0.1*mag {
				t.Errorf("%v n=%d: DotQ = %v, exact dot = %v", typ, n, got, exact)
			}
		}
	}
}

func TestDotF32MatchesDequantized(t *testing.T) {
	r := rand.New(rand.NewPCG(10, 11))
	const n = 768
	x := gaussian(r, n, 1)
	for _, typ := range append(weightTypes, Q8_1, Q8_K) {
		wq := quantize(typ, gaussian(r, n, 0.05))
		want, mag := dot64(dequant(typ, wq, n), x)
		if got := DotF32(typ, wq, x); math.Abs(float64(got)-want) > 1e-5*mag {
			t.Errorf("%v: DotF32 = %v, dequantized dot = %v", typ, got, want)
		}
	}
}

func TestDotNoAlloc(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	x := gaussian(r, 512, 1)
	for _, typ := range []DType{Q4_K, Q6_K, Q4_0, F16} {
		wq := quantize(typ, x)
		xq := quantize(VecDotType(typ), x)
		if n := testing.AllocsPerRun(10, func() { DotF32(typ, wq, x) }); n != 0 {
			t.Errorf("DotF32(%v) allocates %v times", typ, n)
		}
		if n := testing.AllocsPerRun(10, func() { DotQ(typ, 512, wq, xq) }); n != 0 {
			t.Errorf("DotQ(%v) allocates %v times", typ, n)
		}
	}
}

func TestDotQPanicsOnMismatch(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("no panic")
		}
	}()
	DotQ(Q4_K, 256, make([]byte, 144), make([]byte, 34*8)) // Q8_0 activations for a Q4_K row
}
