package kernels

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
)

// r16Types are the types with a LayoutR16 form.
var r16Types = []DType{Q4_K, Q5_K, Q6_K, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, F16, BF16, TQ1_0, TQ2_0}

// r16Cols is the columns of a LayoutR16 block of t.
func r16Cols(t DType) int {
	bc, _ := r16Block(t)
	return bc
}

// r16X returns n activation rows xq of VecDotType(t), nb blocks of t each,
// as t's LayoutR16 kernels take them, and their row bytes: Q8_K rows as
// they are, Q8_0 rows re-encoded with their block sums as quantQ8R16
// writes them, Q8_1 rows (Q4_1's, Q5_1's) with their s widened, F16 and BF16 rows
// widened to float32 (nb blocks of r16Cols(t) columns).
func r16X(t DType, xq []byte, n, nb int) ([]byte, int) {
	if r16Half(t) {
		out := make([]byte, 2*len(xq))
		for i := range len(xq) / 2 {
			h := binary.LittleEndian.Uint16(xq[2*i:])
			v := BF16ToF32(h)
			if t == F16 {
				v = F16ToF32(h)
			}
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
		}
		return out, nb * 32 * 4
	}
	if !r16Legacy(t) {
		return xq, nb * q8KBytes
	}
	out := make([]byte, n*nb*q8R16Bytes)
	for i := range n * nb {
		dst := out[i*q8R16Bytes:][:q8R16Bytes]
		if VecDotType(t) == Q8_1 {
			src := xq[i*q8_1Bytes:][:q8_1Bytes]
			binary.LittleEndian.PutUint32(dst, math.Float32bits(getF16(src)))
			binary.LittleEndian.PutUint32(dst[4:], math.Float32bits(getF16(src[2:])))
			copy(dst[8:], src[4:])
			continue
		}
		src := xq[i*q8_0Bytes:][:q8_0Bytes]
		binary.LittleEndian.PutUint32(dst, math.Float32bits(getF16(src)))
		var sum int32
		for _, q := range src[2:] {
			sum += int32(int8(q))
		}
		binary.LittleEndian.PutUint32(dst[4:], uint32(-r16Offset(t)*sum))
		copy(dst[8:], src[2:])
	}
	return out, nb * q8R16Bytes
}

// TestQuantQ8R16: the LayoutR16 Q4_0, Q5_0 and Q8_0 activations are
// Quantize's Q8_0 blocks with their sums, Q4_1's and Q5_1's its Q8_1
// blocks.
func TestQuantQ8R16(t *testing.T) {
	r := rand.New(rand.NewPCG(49, 50))
	for _, typ := range []DType{Q4_0, Q4_1, Q5_0, Q5_1, Q8_0} {
		const nb = 7
		x := gaussian(r, nb*qk, 1)
		x[5] = 0
		clear(x[2*qk : 3*qk]) // a block of zeros: d = 0
		want, _ := r16X(typ, quantize(VecDotType(typ), x), 1, nb)
		got := make([]byte, nb*q8R16Bytes)
		quantQ8R16(typ, x, got)
		if string(got) != string(want) {
			t.Errorf("%v: quantQ8R16 differs from Quantize(Q8_0) with block sums", typ)
		}
	}
}

// randomMatrix returns rows random rows of t (every quant and scale bit
// pattern, sane super-block scales) and n random activation rows of its
// vec-dot type, nb LayoutR16 blocks (r16Cols(t) columns) long.
func randomMatrix(r *rand.Rand, t DType, rows, n, nb int) (w, xq []byte) {
	nb = nb * r16Cols(t) / t.BlockSize()
	for range rows {
		row, _ := randomRow(r, t, nb, true)
		w = append(w, row...)
	}
	for range n {
		_, x := randomRow(r, t, nb, true)
		xq = append(xq, x...)
	}
	return w, xq
}

// TestFastQuantQ8R16Exact checks every tier's LayoutR16 Q4_0/Q8_0
// activation encoder against the reference byte for byte: odd block counts,
// misaligned source and destination, guard bands, zero blocks, exact ties
// (x·id = k+0.5), a repeated maximum with both signs, tiny and huge scales
// (down to 2⁻³⁰; d overflows float16 at the top).
func TestFastQuantQ8R16Exact(t *testing.T) {
	r := rand.New(rand.NewPCG(51, 52))
	for _, k := range allTiers() {
		for _, nb := range []int{1, 3, 7, 64, 65} {
			for variant := range 4 {
				x := gaussian(r, nb*qk, 1)
				switch variant {
				case 1: // a zero block and a block of exact ties
					clear(x[:qk])
					if nb > 1 {
						for i := range qk {
							x[qk+i] = float32(i*9%254-127) + 0.5 // ±0.5 .. ±126.5
						}
						x[qk+7] = -127
					}
				case 2: // the maximum magnitude twice, with opposite signs
					for b := range nb {
						x[b*qk+3], x[b*qk+20] = 9, -9
					}
				case 3: // tiny and huge scales
					for i := range x {
						x[i] *= float32(math.Pow(2, float64(i/qk%60-30)))
					}
				}
				for _, neg := range []int32{-8, -16, -128, 0} {
					// neg 0 stands for the Q4_1/Q5_1 encoder (quantQ8R16S).
					enc := func(k *kernelSet, src []float32, dst []byte) { k.quantQ8R16(src, dst, neg) }
					if neg == 0 {
						enc = func(k *kernelSet, src []float32, dst []byte) { k.quantQ8R16S(src, dst) }
					}
					want := make([]byte, nb*q8R16Bytes)
					enc(genericKernels, x, want)
					for _, off := range []int{0, 1, 4, 13, 63} {
						const guard = 16
						buf := make([]byte, len(want)+2*guard+off)
						for i := range buf {
							buf[i] = 0xa5
						}
						dst := buf[guard+off : guard+off+len(want)]
						xs := make([]float32, len(x)+off)
						src := xs[off:]
						copy(src, x)
						enc(k, src, dst)
						for i := range guard {
							if buf[i] != 0xa5 || buf[len(buf)-1-i] != 0xa5 {
								t.Fatalf("%v nb=%d: guard band overwritten", k.tier, nb)
							}
						}
						for i := range want {
							if dst[i] != want[i] {
								t.Fatalf("%v nb=%d variant=%d neg=%d off=%d: byte %d (block %d, offset %d) = %#x, want %#x",
									k.tier, nb, variant, neg, off, i, i/q8R16Bytes, i%q8R16Bytes, dst[i], want[i])
							}
						}
					}
				}
			}
		}
		// Non-finite input must not hang or fault.
		x := make([]float32, qk)
		x[5] = float32(math.NaN())
		k.quantQ8R16(x, make([]byte, q8R16Bytes), -8)
		k.quantQ8R16S(x, make([]byte, q8R16Bytes))
		x[5] = float32(math.Inf(-1))
		k.quantQ8R16(x, make([]byte, q8R16Bytes), -8)
		k.quantQ8R16S(x, make([]byte, q8R16Bytes))
	}
}

// r16Tol is the relative bound (of Σ|w·x|) on the difference between the
// LayoutR16 and rows layouts' dots of cols columns: tol for the integer
// formats (the same exact block sums, another float order); for F16 and
// BF16, whose rows layout sums the exact products in float64 and whose
// LayoutR16 twin in two float32 chains of cols/2 fused multiply-adds,
// cols/2 + 1 roundings of 2⁻²⁴ each.
func r16Tol(t DType, cols int, tol float64) float64 {
	if r16Half(t) {
		return float64(cols/2+1) * 0x1p-24
	}
	return tol
}

// TestR16ReferenceMatchesRows checks the layout and its reference twin: the
// dots of a repacked matrix equal the scalar reference's dots of the
// original rows within float32 summation error (both add the same exact
// integer block sums, in another order and grouping).
func TestR16ReferenceMatchesRows(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 42))
	for _, typ := range r16Types {
		for _, nb := range []int{1, 3} {
			const rows, n = 32, 3
			cols := nb * r16Cols(typ)
			w, xq := randomMatrix(r, typ, rows, n, nb)
			wrb, _ := typ.RowBytes(cols)
			xrb, _ := VecDotType(typ).RowBytes(cols)
			x16, x16rb := r16X(typ, xq, n, nb)
			size, _ := LayoutBytes(typ, LayoutR16, rows, cols)
			packed := make([]byte, size)
			RepackR16(typ, packed, w, cols)
			out := make([]float32, n*rows)
			gb := size / (rows / R16)
			for g := range rows / R16 {
				dotR16Generic(typ, packed[g*gb:(g+1)*gb], nb, x16, x16rb, n, out[g*R16:], rows)
			}
			for k := range n {
				xf := dequant(VecDotType(typ), xq[k*xrb:(k+1)*xrb], cols)
				for row := range rows {
					wr := w[row*wrb : (row+1)*wrb]
					want := dotQReference(typ, wr, xq[k*xrb:(k+1)*xrb])
					_, mag := dot64(dequant(typ, wr, cols), xf)
					if got := out[k*rows+row]; math.Abs(float64(got-want)) > r16Tol(typ, cols, 1e-6)*mag+1e-30 {
						t.Fatalf("%v nb=%d: out[%d,%d] = %v, rows layout %v (Σ|w·x| %g)", typ, nb, k, row, got, want, mag)
					}
				}
			}
		}
	}
}

// TestR16KernelsExact checks every tier's LayoutR16 kernels against the
// reference twin bit for bit, for 1..11 activation rows (every mix of the
// 8/4/2/1-row kernels), misaligned operands and guard bands around and
// between the output runs.
func TestR16KernelsExact(t *testing.T) {
	r := rand.New(rand.NewPCG(43, 44))
	for _, k := range hostKernels() {
		for _, typ := range r16Types {
			f := k.r16[typ]
			nbs := []int{1, 2, 5}
			if r16Cols(typ) == 32 {
				nbs = []int{1, 2, 3, 17, 40}
			}
			for _, nb := range nbs {
				for R := 1; R <= 11; R++ {
					cols := nb * r16Cols(typ)
					w, xq := randomMatrix(r, typ, R16, R, nb)
					xq, xrb := r16X(typ, xq, R, nb)
					size, _ := LayoutBytes(typ, LayoutR16, R16, cols)
					packed := make([]byte, size)
					RepackR16(typ, packed, w, cols)
					packed = misalign(packed, R%7*9)
					xq = misalign(xq, R%5*13+1)
					const ostride, guard = R16 + 3, 5
					want := make([]float32, R*ostride)
					dotR16Generic(typ, packed, nb, xq, xrb, R, want, ostride)
					buf := make([]float32, R*ostride+2*guard)
					for i := range buf {
						buf[i] = 777
					}
					f(packed, nb, xq, xrb, R, buf[guard:guard+R*ostride], ostride)
					for i, v := range buf {
						o := i - guard
						inRun := o >= 0 && o < R*ostride && o%ostride < R16
						if !inRun && v != 777 {
							t.Fatalf("%s %v nb=%d R=%d: wrote outside the output runs at %d", k.tier, typ, nb, R, o)
						}
						if inRun && v != want[o] {
							t.Fatalf("%s %v nb=%d R=%d: out[%d][%d] = %v, reference %v", k.tier, typ, nb, R, o/ostride, o%ostride, v, want[o])
						}
					}
				}
			}
		}
	}
}

// TestMatMulR16 checks MatMulLayout on LayoutR16 matrices on every tier and
// several thread counts against the rows layout (same dots within float32
// summation error) and the reference twin (exactly).
func TestMatMulR16(t *testing.T) {
	r := rand.New(rand.NewPCG(45, 46))
	var s Scratch
	for _, k := range allTiers() {
		t.Run(k.tier.String(), func(t *testing.T) {
			useTier(t, k)
			for _, threads := range []int{1, 3} {
				p := NewPool(threads)
				for _, typ := range r16Types {
					for _, rows := range []int{16, 48} {
						for _, n := range []int{1, 3, 9, 17} {
							cols := 512
							w := quantize(typ, gaussian(r, rows*cols, 0.1))
							x := gaussian(r, n*cols, 1)
							size, _ := LayoutBytes(typ, LayoutR16, rows, cols)
							packed := make([]byte, size)
							RepackR16(typ, packed, w, cols)
							got := make([]float32, n*rows)
							MatMulLayout(p, typ, LayoutR16, packed, rows, cols, x, n, got, &s)
							want := make([]float32, n*rows)
							MatMul(p, typ, w, rows, cols, x, n, want, &s)
							nb := cols / r16Cols(typ)
							xq, xrb := r16X(typ, quantize(VecDotType(typ), x), n, nb)
							exact := make([]float32, n*rows)
							gb := size / (rows / R16)
							for g := range rows / R16 {
								dotR16Generic(typ, packed[g*gb:(g+1)*gb], nb, xq, xrb, n, exact[g*R16:], rows)
							}
							wf := dequant(typ, w, rows*cols)
							for i := range got {
								j, row := i/rows, i%rows
								_, mag := dot64(wf[row*cols:(row+1)*cols], x[j*cols:(j+1)*cols])
								if got[i] != exact[i] || math.Abs(float64(got[i]-want[i])) > r16Tol(typ, cols, 1e-5)*mag {
									t.Fatalf("%v threads=%d rows=%d n=%d: out[%d] = %v, reference twin %v, rows layout %v", typ, threads, rows, n, i, got[i], exact[i], want[i])
								}
							}
						}
					}
				}
			}
		})
	}
}

func TestLayoutBytes(t *testing.T) {
	for _, c := range []struct {
		t          DType
		l          Layout
		rows, cols int
		size       int
		ok         bool
	}{
		{Q4_K, LayoutRows, 3, 256, 3 * 144, true},
		{Q4_K, LayoutR16, 32, 512, 2 * 2 * 2368, true},
		{Q6_K, LayoutR16, 16, 256, 16 * 210, true},
		{Q5_K, LayoutR16, 32, 512, 2 * 2 * 2880, true},
		{Q4_K, LayoutR16, 24, 256, 0, false}, // rows not a multiple of 16
		{Q8_0, LayoutR16, 16, 256, 16 * 8 * 34, true},
		{Q4_0, LayoutR16, 32, 96, 2 * 3 * 288, true},
		{Q4_0, LayoutR16, 16, 48, 0, false}, // columns not a multiple of 32
		{Q8_0, LayoutR16, 8, 32, 0, false},
		{Q4_1, LayoutR16, 16, 256, 16 * 8 * 20, true},
		{Q5_0, LayoutR16, 32, 64, 2 * 2 * 352, true},
		{Q5_1, LayoutR16, 32, 96, 2 * 3 * 384, true},
		{Q5_1, LayoutR16, 16, 80, 0, false},  // columns not a multiple of 32
		{Q3_K, LayoutR16, 16, 256, 0, false}, // no LayoutR16 form
		{Q4_K, LayoutRows, 1, 100, 0, false},
		{Q4_K, Layout(9), 16, 256, 0, false},
	} {
		size, ok := LayoutBytes(c.t, c.l, c.rows, c.cols)
		if size != c.size || ok != c.ok {
			t.Errorf("LayoutBytes(%v, %v, %d, %d) = %d, %v; want %d, %v", c.t, c.l, c.rows, c.cols, size, ok, c.size, c.ok)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("RepackR16 of 8 rows did not panic")
		}
	}()
	RepackR16(Q4_K, make([]byte, 8*144), make([]byte, 8*144), 256)
}

// TestRowLayout: every row of a LayoutR16 matrix decodes bit for bit as the
// same row of the ggml layout (the token embedding's lookups).
func TestRowLayout(t *testing.T) {
	r := rand.New(rand.NewPCG(47, 48))
	for _, typ := range r16Types {
		const rows, nb = 32, 2
		cols := nb * r16Cols(typ)
		w, _ := randomMatrix(r, typ, rows, 0, nb)
		size, _ := LayoutBytes(typ, LayoutR16, rows, cols)
		packed := make([]byte, size)
		RepackR16(typ, packed, w, cols)
		got, want := make([]float32, cols), make([]float32, cols)
		for row := range rows {
			Row(typ, w, cols, row, want)
			RowLayout(typ, LayoutR16, packed, cols, row, got)
			for i := range got {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("%v row %d col %d: %v, rows layout %v", typ, row, i, got[i], want[i])
				}
			}
		}
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%v: RowLayout of row %d did not panic", typ, rows)
				}
			}()
			RowLayout(typ, LayoutR16, packed, cols, rows, got)
		}()
	}
}

// TestRepackGroupsMatchLanes: on every tier, the group-at-a-time repacks
// of every type but TQ1_0 and TQ2_0 write the bytes of the reference, one
// block at a time, for random bytes (every scale and high-bit pattern),
// several groups and odd block counts, from a misaligned source, with
// guard bands after the output.
func TestRepackGroupsMatchLanes(t *testing.T) {
	for _, k := range allTiers() {
		t.Run(k.tier.String(), func(t *testing.T) {
			useTier(t, k)
			r := rand.New(rand.NewPCG(45, 46))
			for _, typ := range []DType{Q4_K, Q5_K, Q6_K, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, F16, BF16} {
				if repackGroup(typ) == nil {
					t.Fatalf("%v: no group repack", typ)
				}
				for _, nb := range []int{1, 3, 16} {
					for _, groups := range []int{1, 2, 5} {
						bc, _ := r16Block(typ)
						cols, rows := nb*bc, groups*R16
						rb, _ := typ.RowBytes(cols)
						src := make([]byte, rows*rb+1)[1:]
						for i := range src {
							src[i] = byte(r.Uint32())
						}
						size, _ := LayoutBytes(typ, LayoutR16, rows, cols)
						want := make([]byte, size)
						repackR16Lanes(typ, want, src, cols)
						const guard = 64
						got := make([]byte, size+guard)
						for i := range got {
							got[i] = 0xa5
						}
						RepackR16(typ, got[:size], src, cols)
						if !bytes.Equal(got[:size], want) {
							t.Fatalf("%v nb=%d groups=%d: the group repack differs from the lanes'", typ, nb, groups)
						}
						for i := size; i < len(got); i++ {
							if got[i] != 0xa5 {
								t.Fatalf("%v nb=%d groups=%d: byte %d past the output written", typ, nb, groups, i-size)
							}
						}
					}
				}
			}
		})
	}
}

// TestRoundR16 checks every tier's F16 and BF16 activation encoders
// against roundF16Generic and roundBF16Generic bit for bit: random bit
// patterns (NaNs with payloads, infinities, subnormals), values around
// float16's ties, its largest finite value and the overflow threshold, at
// lengths with and without a tail of fewer than 8 and at misaligned
// offsets, with guard bands.
func TestRoundR16(t *testing.T) {
	r := rand.New(rand.NewPCG(61, 62))
	special := []float32{0, float32(math.Copysign(0, -1)), 65504, 65519.996, 65520, -65520, 1e10,
		float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()),
		math.Float32frombits(0x7f800001), math.Float32frombits(0xffbfffff), math.Float32frombits(0x7fc12345),
		0x1p-24, 0x1p-25, 0x1.8p-25, 0x1p-26, -0x1.4p-20, 0x1p-14, 0x1.ffcp-15, 0x1p-149, 1 + 0x1p-11, 1 + 0x3p-11}
	for _, k := range allTiers() {
		for _, typ := range []DType{F16, BF16} {
			enc, ref := k.roundF16, roundF16Generic
			if typ == BF16 {
				enc, ref = k.roundBF16, roundBF16Generic
			}
			for _, n := range []int{1, 7, 8, 9, 64, 203} {
				for _, off := range []int{0, 1, 3} {
					src := make([]float32, n+off)[off:]
					for i := range src {
						switch i % 4 {
						case 0:
							src[i] = math.Float32frombits(r.Uint32())
						case 1:
							src[i] = special[r.IntN(len(special))]
						case 2: // near a tie: half an ulp of the format, ± 1 in the last bit
							if typ == BF16 {
								src[i] = math.Float32frombits(r.Uint32()&^0xffff | 0x8000 + uint32(r.IntN(3)) - 1)
								break
							}
							h := float32(r.IntN(2048)+1024) * float32(math.Pow(2, float64(r.IntN(40)-30)))
							src[i] = math.Float32frombits(math.Float32bits(h*(1+0x1p-11)) + uint32(r.IntN(3)) - 1)
						default:
							src[i] = float32(r.NormFloat64() * 100)
						}
					}
					want := make([]byte, 4*n)
					ref(src, want)
					const guard = 5
					buf := make([]byte, 4*n+2*guard+off)[off:]
					for i := range buf {
						buf[i] = 0xa5
					}
					nv := n &^ 7
					enc(src[:nv], buf[guard:guard+4*nv])
					ref(src[nv:], buf[guard+4*nv:guard+4*n])
					for i, b := range buf {
						o := i - guard
						if o < 0 || o >= 4*n {
							if b != 0xa5 {
								t.Fatalf("%s %v n=%d: wrote outside the output at %d", k.tier, typ, n, o)
							}
							continue
						}
						if b != want[o] {
							j := o / 4
							t.Fatalf("%s %v n=%d off=%d: value %d (%#x) rounds to %#x, reference %#x", k.tier, typ, n, off, j,
								math.Float32bits(src[j]), binary.LittleEndian.Uint32(buf[guard+4*j:]), binary.LittleEndian.Uint32(want[4*j:]))
						}
					}
				}
			}
		}
	}
}
