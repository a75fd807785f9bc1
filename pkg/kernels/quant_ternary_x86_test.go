package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// The exact model of the ternary assembly kernels (internal/asmgen/
// ternary.go), ggml's AVX2 lanes: per block, lane l is the exact sum of
// t·x over the elements e with e%32/4 == l (t = w+1, the stored trit) less
// bsums[2l] + bsums[2l+1], scaled into the float lane by one fused
// multiply-add with yd·d; the lanes are added by hsum8. The lanes' integers
// add up to the reference's per-block sum of (t-1)·x whenever the bsums are
// the sums of their 16 activations, as Quantize writes them.

type ternaryFormat struct {
	t      DType
	bb     int // block bytes
	dOff   int // offset of the f16 scale
	trit   func(b []byte, v int) int
	kernel func(k *kernelSet) func(w, xq []byte) float32
}

var ternaryFormats = []ternaryFormat{
	{TQ1_0, tq1Bytes, 52, tq1Trit, func(k *kernelSet) func(w, xq []byte) float32 { return k.dot[TQ1_0] }},
	{TQ2_0, tq2Bytes, 64, tq2Trit, func(k *kernelSet) func(w, xq []byte) float32 { return k.dot[TQ2_0] }},
}

func (f ternaryFormat) model(w, xq []byte) float32 {
	var acc [8]float32
	for ib := range len(w) / f.bb {
		x, y := w[ib*f.bb:(ib+1)*f.bb], xq[ib*q8KBytes:(ib+1)*q8KBytes]
		yd := math.Float32frombits(binary.LittleEndian.Uint32(y))
		var lane [8]int32
		for e := range QK_K {
			lane[e%32/4] += int32(f.trit(x, e)+1) * q8Quant(y, e)
		}
		bsum := func(g int) int32 { return int32(int16(binary.LittleEndian.Uint16(y[260+2*g:]))) }
		d := yd * getF16(x[f.dOff:])
		for l := range lane {
			lane[l] -= bsum(2*l) + bsum(2*l+1)
			acc[l] = fma32(d, float32(lane[l]), acc[l])
		}
	}
	return hsum8(&acc)
}

// row is randomRow for the format: raw rows have every byte pattern of the
// packed trits (TQ2_0's unused fourth value 3 included) with a sane scale.
func (f ternaryFormat) row(r *rand.Rand, nb int, raw bool) (w, xq []byte) {
	return randomRow(r, f.t, nb, raw)
}

// TestTernaryTritAverages: the kernels' byte formula for the top trit of a
// byte equals the reference's ⌊3b/256⌋ for every byte.
func TestTernaryTritAverages(t *testing.T) {
	avg := func(a, b int) int { return (a + b + 1) >> 1 }
	for b := range 256 {
		s := max(b-1, 0)
		if got, want := avg(s, avg(s, 0))>>6, 3*b>>8; got != want {
			t.Errorf("byte %#x: %d, want %d", b, got, want)
		}
	}
}

func TestTernaryX86OrderMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(51, 52))
	for _, f := range ternaryFormats {
		for _, nb := range []int{1, 3, 7, 64, 65} {
			for _, raw := range []bool{false, true} {
				w, xq := f.row(r, nb, raw)
				got, want := f.model(w, xq), dotQReference(f.t, w, xq)
				_, mag := dot64(dequant(f.t, w, nb*QK_K), dequant(Q8_K, xq, nb*QK_K))
				if raw {
					// Raw TQ2_0 bytes hold trit 3 (weight 2), which Dequantize
					// maps to 2d too; mag stays an upper bound either way.
					mag *= 2
				}
				if math.Abs(float64(got-want)) > 4e-7*mag+1e-30 {
					t.Errorf("%v nb=%d raw=%v: x86 order %v, reference %v (Σ|w·x| %v)", f.t, nb, raw, got, want, mag)
				}
			}
		}
	}
}

// TestTernaryFastDotExact runs the one-row kernels of every host tier
// against the model: odd block counts, both operands at every offset 0..63
// past a cache line, quantized and raw-byte data.
func TestTernaryFastDotExact(t *testing.T) {
	r := rand.New(rand.NewPCG(53, 54))
	for _, k := range hostKernels() {
		for _, f := range ternaryFormats {
			dot := f.kernel(k)
			for _, nb := range []int{1, 3, 7, 64, 65} {
				for _, raw := range []bool{false, true} {
					w0, x0 := f.row(r, nb, raw)
					want := f.model(w0, x0)
					for off := range 64 {
						w, xq := misalign(w0, off), misalign(x0, (off*7)%64)
						if got := dot(w, xq); math.Float32bits(got) != math.Float32bits(want) {
							t.Fatalf("%v %v nb=%d raw=%v off=%d: %v, model %v", k.tier, f.t, nb, raw, off, got, want)
						}
					}
				}
			}
		}
	}
}

// TestTernaryFastRowsExact checks the prefill kernels (several activation
// rows, neither adjacent nor aligned) against the model, with guard bands
// around and between the outputs.
func TestTernaryFastRowsExact(t *testing.T) {
	r := rand.New(rand.NewPCG(55, 56))
	for _, k := range hostKernels() {
		for _, f := range ternaryFormats {
			R, rows := k.rows[f.t].n, k.rows[f.t].f
			if R == 0 {
				t.Fatalf("%v: no rows kernel for %v", k.tier, f.t)
			}
			for _, nb := range []int{1, 3, 7, 64, 65} {
				for _, raw := range []bool{false, true} {
					w, _ := f.row(r, nb, raw)
					xrb := nb*q8KBytes + 13
					xq := make([]byte, R*xrb)
					want := make([]float32, R)
					for i := range R {
						_, x := f.row(r, nb, raw)
						copy(xq[i*xrb:], x)
						want[i] = f.model(w, x)
					}
					for _, off := range []int{0, 1, 17, 63} {
						const guard, stride = 3, 3
						buf := guarded(stride*R + 2*guard)
						rows(misalign(w, off), misalign(xq, 63-off), xrb, buf[guard:], stride)
						checkGuarded(t, fmt.Sprintf("%v %v nb=%d raw=%v off=%d", k.tier, f.t, nb, raw, off), buf, guard, stride, want)
					}
				}
			}
		}
	}
}

// TestTernaryFastColsExact checks the decode kernels (several weight rows,
// neither adjacent nor aligned) against the one-row model.
func TestTernaryFastColsExact(t *testing.T) {
	r := rand.New(rand.NewPCG(57, 58))
	for _, k := range hostKernels() {
		for _, f := range ternaryFormats {
			C, cols := k.cols[f.t].n, k.cols[f.t].f
			if C == 0 {
				t.Fatalf("%v: no cols kernel for %v", k.tier, f.t)
			}
			for _, nb := range []int{1, 3, 7, 64, 65} {
				for _, raw := range []bool{false, true} {
					wrb := nb*f.bb + 13
					w := make([]byte, C*wrb)
					_, x := f.row(r, nb, raw)
					want := make([]float32, C)
					for i := range C {
						wi, _ := f.row(r, nb, raw)
						copy(w[i*wrb:], wi)
						want[i] = f.model(wi, x)
					}
					for _, off := range []int{0, 1, 17, 63} {
						const guard = 3
						buf := guarded(C + 2*guard)
						cols(misalign(w, off), wrb, misalign(x, 63-off), buf[guard:guard+C])
						checkGuarded(t, fmt.Sprintf("%v %v nb=%d raw=%v off=%d", k.tier, f.t, nb, raw, off), buf, guard, 1, want)
					}
				}
			}
		}
	}
}

// TestTernaryDotQDispatch: DotQ runs each tier's ternary kernels.
func TestTernaryDotQDispatch(t *testing.T) {
	r := rand.New(rand.NewPCG(59, 60))
	for _, k := range allTiers() {
		useTier(t, k)
		for _, f := range ternaryFormats {
			w, xq := f.row(r, 5, false)
			want := dotQReference(f.t, w, xq)
			if k.tier != TierGeneric {
				want = f.model(w, xq)
			}
			if got := DotQ(f.t, 5*QK_K, w, xq); got != want {
				t.Errorf("%v %v: DotQ = %v, want %v", k.tier, f.t, got, want)
			}
		}
	}
}
