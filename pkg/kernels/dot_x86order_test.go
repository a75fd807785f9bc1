package kernels

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"os"
	"reflect"
	"strings"
	"testing"
	"unsafe"
)

// The exact model of the assembly kernels (ggml's AVX2 order, see
// dispatch.go). The integer lane sums are the reference's integers grouped
// by lane: element e of a block goes to lane e%32/4. Every assembly kernel
// must reproduce these models bit for bit; the models in turn must agree
// with the reference (ggml's scalar order) within float32 summation error,
// which TestX86OrderMatchesReference bounds by 4e-7·Σ|w·x| (a few ulps of
// the magnitude of the sum: both orders add the same exact block products,
// rounded differently).

func q8Quant(y []byte, e int) int32 { return int32(int8(y[4+e])) }

func x86DotQ4K(w, xq []byte) float32 { return x86DotQ45K(w, xq, false) }

func x86DotQ5K(w, xq []byte) float32 { return x86DotQ45K(w, xq, true) }

// x86DotQ45K models the Q4_K kernel, and with five the Q5_K one (the same
// order; the fifth bit of element 32g+l is bit g of qh[l]).
func x86DotQ45K(w, xq []byte, five bool) float32 {
	bb := 144
	if five {
		bb = 176
	}
	var a [QK_K]int8
	var acc [12]float32
	for ib := range len(w) / bb {
		x, y := w[ib*bb:(ib+1)*bb], xq[ib*q8KBytes:(ib+1)*q8KBytes]
		yd := math.Float32frombits(binary.LittleEndian.Uint32(y))
		d, dmin := yd*getF16(x), yd*getF16(x[2:])
		var lane [8]int32
		unpackQ45K(x, five, &a)
		for g := range 8 {
			s, _ := scaleMinK4(g, x[4:16])
			for l := range 32 {
				lane[l/4] += int32(s) * int32(a[32*g+l]) * q8Quant(y, 32*g+l)
			}
		}
		for k := range 4 {
			_, m0 := scaleMinK4(2*k, x[4:16])
			_, m1 := scaleMinK4(2*k+1, x[4:16])
			b := func(g int) int32 { return int32(int16(binary.LittleEndian.Uint16(y[260+2*g:]))) }
			m := int32(m0)*(b(4*k)+b(4*k+1)) + int32(m1)*(b(4*k+2)+b(4*k+3))
			acc[8+k] = fma32(-dmin, float32(m), acc[8+k])
		}
		for l := range lane {
			acc[l] = fma32(d, float32(lane[l]), acc[l])
		}
	}
	return hsumQ4K(&acc)
}

func x86DotQ6K(w, xq []byte) float32 {
	var acc [8]float32
	var a [QK_K]int8
	for ib := range len(w) / 210 {
		x, y := w[ib*210:(ib+1)*210], xq[ib*q8KBytes:(ib+1)*q8KBytes]
		yd := math.Float32frombits(binary.LittleEndian.Uint32(y))
		unpackQ6K(x, &a)
		sc := x[192:208]
		var lane [8]int32
		for e := range QK_K {
			lane[e%32/4] += int32(int8(sc[e/16])) * int32(a[e]) * q8Quant(y, e)
		}
		d := yd * getF16(x[208:])
		for l := range lane {
			acc[l] = fma32(d, float32(lane[l]), acc[l])
		}
	}
	return hsum8(&acc)
}

// x86DotLegacy models the Q8_0 and Q4_0 kernels; quant returns weight
// element e of a block.
func x86DotLegacy(w, xq []byte, bb int, quant func(b []byte, e int) int32) float32 {
	var acc [8]float32
	for ib := range len(w) / bb {
		x, y := w[ib*bb:(ib+1)*bb], xq[ib*q8_0Bytes:(ib+1)*q8_0Bytes]
		var lane [8]int32
		for e := range 32 {
			lane[e/4] += quant(x, e) * int32(int8(y[2+e]))
		}
		d := getF16(x) * getF16(y)
		for l := range lane {
			acc[l] = fma32(d, float32(lane[l]), acc[l])
		}
	}
	return hsum8(&acc)
}

func x86DotQ8_0(w, xq []byte) float32 {
	return x86DotLegacy(w, xq, 34, func(b []byte, e int) int32 { return int32(int8(b[2+e])) })
}

func x86DotQ4_0(w, xq []byte) float32 {
	return x86DotLegacy(w, xq, 18, func(b []byte, e int) int32 { return int32(b[2+e%16]>>(4*(e/16))&0xf) - 8 })
}

// fastTypes are the weight types with assembly kernels, with their models.
var fastTypes = []struct {
	t     DType
	model func(w, xq []byte) float32
}{
	{Q4_K, x86DotQ4K}, {Q5_K, x86DotQ5K}, {Q6_K, x86DotQ6K}, {Q8_0, x86DotQ8_0}, {Q4_0, x86DotQ4_0},
}

// useTier makes k the active kernel set until the test ends.
func useTier(tb testing.TB, k *kernelSet) {
	tb.Helper()
	old := kern
	kern = k
	tb.Cleanup(func() { kern = old })
}

// allTiers is the reference plus every assembly tier the host runs.
func allTiers() []*kernelSet { return append([]*kernelSet{genericKernels}, hostKernels()...) }

// randomRow returns nb blocks of weights of type t and of their vec-dot
// type, either quantized from gaussians or random bytes with sane scales
// (every bit pattern of quants and sub-block scales; activations never
// -128, which Quantize never writes, and Q8_K group sums consistent).
func randomRow(r *rand.Rand, t DType, nb int, rawBytes bool) (w, xq []byte) {
	n := nb * t.BlockSize()
	vt := VecDotType(t)
	if !rawBytes || t.BlockSize() == 1 { // the float formats: finite values
		return quantize(t, gaussian(r, n, 0.1)), quantize(vt, gaussian(r, n, 1))
	}
	w = make([]byte, nb*t.BlockBytes())
	for i := range w {
		w[i] = byte(r.Uint32())
	}
	half := func() uint16 { return F32ToF16(float32(r.NormFloat64() * 0.01)) }
	bb := t.BlockBytes()
	for b := range nb {
		blk := w[b*bb : (b+1)*bb]
		switch t {
		case Q4_K, Q5_K:
			binary.LittleEndian.PutUint16(blk, half())
			binary.LittleEndian.PutUint16(blk[2:], half())
		case Q6_K:
			binary.LittleEndian.PutUint16(blk[208:], half())
		case TQ1_0, TQ2_0:
			binary.LittleEndian.PutUint16(blk[bb-2:], half())
		case Q4_1, Q5_1:
			binary.LittleEndian.PutUint16(blk, half())
			binary.LittleEndian.PutUint16(blk[2:], half()) // m
		default:
			binary.LittleEndian.PutUint16(blk, half())
		}
	}
	xb := vt.BlockBytes()
	xq = make([]byte, nb*xb)
	for b := range nb {
		blk := xq[b*xb : (b+1)*xb]
		if vt == Q8_K {
			binary.LittleEndian.PutUint32(blk, math.Float32bits(float32(r.Float64()*0.05)))
			for g := range 16 {
				s := 0
				for e := range 16 {
					v := int8(r.IntN(255) - 127)
					blk[4+16*g+e] = byte(v)
					s += int(v)
				}
				binary.LittleEndian.PutUint16(blk[260+2*g:], uint16(int16(s)))
			}
		} else {
			binary.LittleEndian.PutUint16(blk, half())
			qs := blk[2:]
			if vt == Q8_1 {
				binary.LittleEndian.PutUint16(blk[2:], half()) // s
				qs = blk[4:]
			}
			for e := range 32 {
				qs[e] = byte(int8(r.IntN(255) - 127))
			}
		}
	}
	return w, xq
}

// misalign copies b to an offset off bytes past a 64-byte boundary.
func misalign(b []byte, off int) []byte {
	buf := make([]byte, len(b)+off+64)
	base := int(uintptrOf(buf) % 64)
	start := (64-base)%64 + off
	c := buf[start : start+len(b) : start+len(b)]
	copy(c, b)
	return c
}

// guardValue fills the guard bands around kernel outputs.
const guardValue = 12345

// guarded returns n floats set to guardValue.
func guarded(n int) []float32 {
	buf := make([]float32, n)
	for i := range buf {
		buf[i] = guardValue
	}
	return buf
}

// checkGuarded fails t unless output i of buf, at guard+i·stride, is want[i]
// bit for bit and every other float of buf is still guardValue.
func checkGuarded(t *testing.T, what string, buf []float32, guard, stride int, want []float32) {
	t.Helper()
	for i, v := range buf {
		if j := i - guard; j >= 0 && j%stride == 0 && j/stride < len(want) {
			if math.Float32bits(v) != math.Float32bits(want[j/stride]) {
				t.Fatalf("%s: output %d = %v, model %v", what, j/stride, v, want[j/stride])
			}
		} else if v != guardValue {
			t.Fatalf("%s: wrote outside the outputs (index %d)", what, i)
		}
	}
}

func TestX86OrderMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(31, 32))
	for _, ft := range fastTypes {
		ref := func(w, xq []byte) float32 { return dotQReference(ft.t, w, xq) }
		for _, nb := range []int{1, 3, 7, 64, 65} {
			for _, raw := range []bool{false, true} {
				w, xq := randomRow(r, ft.t, nb, raw)
				got, want := ft.model(w, xq), ref(w, xq)
				_, mag := dot64(dequant(ft.t, w, nb*ft.t.BlockSize()), dequant(VecDotType(ft.t), xq, nb*ft.t.BlockSize()))
				if math.Abs(float64(got-want)) > 4e-7*mag+1e-30 {
					t.Errorf("%v nb=%d raw=%v: x86 order %v, reference %v (Σ|w·x| %v)", ft.t, nb, raw, got, want, mag)
				}
			}
		}
	}
}

// TestFastDotExact runs every assembly kernel of every host tier against its
// exact model: odd block counts, both operands at every offset 0..63 past a
// cache line, quantized and raw-byte data.
func TestFastDotExact(t *testing.T) {
	r := rand.New(rand.NewPCG(33, 34))
	for _, k := range hostKernels() {
		for _, ft := range fastTypes {
			f := k.dot[ft.t]
			for _, nb := range []int{1, 3, 7, 64, 65} {
				for _, raw := range []bool{false, true} {
					w0, x0 := randomRow(r, ft.t, nb, raw)
					want := ft.model(w0, x0)
					for off := range 64 {
						w, xq := misalign(w0, off), misalign(x0, (off*7)%64)
						if got := f(w, xq); math.Float32bits(got) != math.Float32bits(want) {
							t.Fatalf("%v %v nb=%d raw=%v off=%d: %v, model %v", k.tier, ft.t, nb, raw, off, got, want)
						}
					}
				}
			}
		}
	}
}

// TestFastRowsExact checks the multi-row kernels against their model, with
// activation rows neither adjacent nor aligned.
func TestFastRowsExact(t *testing.T) {
	r := rand.New(rand.NewPCG(35, 36))
	for _, k := range hostKernels() {
		for _, rt := range fastTypes[:3] {
			if k.rows[rt.t].n == 0 {
				continue
			}
			R, rows := k.rows[rt.t].n, k.rows[rt.t].f
			for _, nb := range []int{1, 3, 7, 64, 65} {
				for _, raw := range []bool{false, true} {
					w, _ := randomRow(r, rt.t, nb, raw)
					xrb := nb*q8KBytes + 13
					xq := make([]byte, R*xrb)
					want := make([]float32, R)
					for i := range R {
						_, x := randomRow(r, rt.t, nb, raw)
						copy(xq[i*xrb:], x)
						want[i] = rt.model(w, x)
					}
					for _, off := range []int{0, 1, 17, 63} {
						// Outputs every third float, guards around and between them.
						const guard, stride = 3, 3
						buf := guarded(stride*R + 2*guard)
						rows(misalign(w, off), misalign(xq, 63-off), xrb, buf[guard:], stride)
						checkGuarded(t, fmt.Sprintf("%v %v nb=%d raw=%v off=%d", k.tier, rt.t, nb, raw, off), buf, guard, stride, want)
					}
				}
			}
		}
	}
}

// TestDotQDispatch checks DotQ goes through each tier's kernels.
func TestDotQDispatch(t *testing.T) {
	r := rand.New(rand.NewPCG(37, 38))
	for _, k := range allTiers() {
		useTier(t, k)
		for _, ft := range fastTypes {
			w, xq := randomRow(r, ft.t, 5, false)
			want := dotQReference(ft.t, w, xq)
			if k.tier != TierGeneric {
				want = ft.model(w, xq)
			}
			if got := DotQ(ft.t, 5*ft.t.BlockSize(), w, xq); got != want {
				t.Errorf("%v %v: DotQ = %v, want %v", k.tier, ft.t, got, want)
			}
		}
	}
}

func TestPickKernels(t *testing.T) {
	best := genericKernels
	if hk := hostKernels(); len(hk) > 0 {
		best = hk[len(hk)-1]
	}
	tests := []struct {
		env  string
		want Tier
	}{
		{"", best.tier}, {"generic", TierGeneric}, {"PUREGO", TierGeneric}, {"avx2", min(best.tier, TierAVX2)},
		{" AVX512VNNI", best.tier}, {"avx512", best.tier}, {"bogus", TierGeneric}, {"avx-2", TierGeneric},
	}
	for _, tt := range tests {
		k, err := pickKernels(tt.env)
		if got := k.tier; got != tt.want {
			t.Errorf("CORELM_KERNELS=%q: tier %v, want %v", tt.env, got, tt.want)
		}
		if bad := tt.env == "bogus" || tt.env == "avx-2"; bad != errors.Is(err, ErrUnknownTier) {
			t.Errorf("CORELM_KERNELS=%q: error %v", tt.env, err)
		} else if bad && !strings.Contains(err.Error(), "generic, avx2 or avx512vnni") {
			t.Errorf("CORELM_KERNELS=%q: error %q does not name the tiers", tt.env, err)
		}
	}
	if err := Check(); err != nil {
		t.Errorf("Check() = %v with CORELM_KERNELS=%q", err, os.Getenv("CORELM_KERNELS"))
	}
}

// TestTablesComplete: every tier's table has every entry the call sites
// call without a check (only the multi-row forms rows and cols are
// optional).
func TestTablesComplete(t *testing.T) {
	for _, k := range allTiers() {
		v := reflect.ValueOf(k).Elem()
		for i := range v.NumField() {
			if f := v.Field(i); f.Kind() == reflect.Func && f.IsNil() {
				t.Errorf("%v: %s is nil", k.tier, v.Type().Field(i).Name)
			}
		}
		for typ := range DType(nTypes) {
			if Supported(typ) && typ != Q8_1 && typ != Q8_K && k.dot[typ] == nil {
				t.Errorf("%v: no dot for %v", k.tier, typ)
			}
		}
		for _, typ := range r16Types {
			if k.r16[typ] == nil {
				t.Errorf("%v: no r16 kernel for %v", k.tier, typ)
			}
		}
	}
}

func TestFMA32(t *testing.T) {
	r := rand.New(rand.NewPCG(39, 40))
	exact := func(a, b, c float32) float32 {
		x := new(big.Float).SetPrec(200).SetFloat64(float64(a))
		x.Mul(x, new(big.Float).SetFloat64(float64(b)))
		x.Add(x, new(big.Float).SetFloat64(float64(c)))
		f, _ := x.Float32()
		return f
	}
	// Include the double-rounding trap: c + (half an ulp of c + a tiny bit).
	c := float32(1)
	half := float32(0x1p-24) * (1 + 0x1p-20)
	if got, want := fma32(half, 1, c), exact(half, 1, c); got != want {
		t.Errorf("midpoint case: fma32 = %v, want %v", got, want)
	}
	for range 200000 {
		a, b, c := float32(r.NormFloat64()), float32(r.NormFloat64()), float32(r.NormFloat64()*math.Pow(2, float64(r.IntN(60)-30)))
		if got, want := fma32(a, b, c), exact(a, b, c); got != want {
			t.Fatalf("fma32(%v,%v,%v) = %v, want %v", a, b, c, got, want)
		}
	}
}

func dotQReference(t DType, w, xq []byte) float32 { return genericKernels.dot[t](w, xq) }

func uintptrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }

func TestSumU64(t *testing.T) {
	r := rand.New(rand.NewPCG(41, 42))
	for _, k := range hostKernels() {
		for _, n := range []int{0, 7, 8, 127, 128, 129, 4096 + 40} {
			b := make([]byte, n+1)
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			if got, want := k.sumU64(b[1:]), sumU64Generic(b[1:]); got != want {
				t.Errorf("%v n=%d: sumU64 %x, want %x", k.tier, n, got, want)
			}
		}
	}
}

// TestFastQuantQ8KExact: the assembly Q8_K encoder writes the reference's
// bytes: odd block counts, misaligned source and destination, guard bands,
// all-zero blocks, exact ties (x·iscale = k+0.5) and a repeated maximum with
// both signs (the first one sets the sign of d).
func TestFastQuantQ8KExact(t *testing.T) {
	r := rand.New(rand.NewPCG(43, 44))
	for _, k := range hostKernels() {
		for _, nb := range []int{1, 3, 7, 64, 65} {
			for variant := range 4 {
				x := gaussian(r, nb*QK_K, 1)
				switch variant {
				case 1: // zero blocks and a block of exact ties
					clear(x[:QK_K])
					if nb > 1 {
						for i := range QK_K {
							x[QK_K+i] = float32(i%255-127) + 0.5
						}
						x[QK_K+7] = -127
					}
				case 2: // the maximum magnitude twice, with opposite signs
					for b := range nb {
						x[b*QK_K+3], x[b*QK_K+200] = 9, -9
					}
				case 3: // tiny and huge scales
					for i := range x {
						x[i] *= float32(math.Pow(2, float64(i/QK_K%40-20)))
					}
				}
				want := make([]byte, nb*q8KBytes)
				for b := range nb {
					quantQ8K(x[b*QK_K:(b+1)*QK_K], want[b*q8KBytes:])
				}
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
					k.quantQ8K(src, dst)
					for i := range guard {
						if buf[i] != 0xa5 || buf[len(buf)-1-i] != 0xa5 {
							t.Fatalf("%v nb=%d: guard band overwritten", k.tier, nb)
						}
					}
					for i := range want {
						if dst[i] != want[i] {
							t.Fatalf("%v nb=%d variant=%d off=%d: byte %d (block %d, offset %d) = %#x, want %#x",
								k.tier, nb, variant, off, i, i/q8KBytes, i%q8KBytes, dst[i], want[i])
						}
					}
				}
			}
		}
		// Non-finite input must not hang or fault.
		x := make([]float32, QK_K)
		x[5] = float32(math.NaN())
		k.quantQ8K(x, make([]byte, q8KBytes))
		x[5] = float32(math.Inf(-1))
		k.quantQ8K(x, make([]byte, q8KBytes))
	}
}

// TestFastF16 checks the F16 dots (F16 weights against float32 activations,
// as in attention over an f16 KV cache, and against F16 activations, as in
// MatMul) with the reference. The products are the same float32 values;
// only the float64 summation order differs, so the float64 sums agree to
// n·2⁻⁵³·Σ|p| and the results to within one float32 rounding: the bound
// tested is one ulp of the result plus 2⁻⁴⁰·Σ|p|.
func TestFastF16(t *testing.T) {
	r := rand.New(rand.NewPCG(45, 46))
	for _, k := range hostKernels() {
		for _, n := range []int{1, 15, 16, 17, 48, 128, 1000, 4096} {
			xf := gaussian(r, n, 1)
			w := quantize(F16, gaussian(r, n, 0.5))
			xh := quantize(F16, xf)
			var want32, want16, mag float64
			for i := range n {
				a := F16ToF32(binary.LittleEndian.Uint16(w[2*i:]))
				p := a * xf[i]
				want32 += float64(p)
				mag += math.Abs(float64(p))
				want16 += float64(a * F16ToF32(binary.LittleEndian.Uint16(xh[2*i:])))
			}
			for _, off := range []int{0, 1, 2, 31, 63} {
				wm := misalign(w, off)
				xs := make([]float32, n+off)[off:]
				copy(xs, xf)
				check := func(what string, got float32, want float64) {
					t.Helper()
					w32 := float32(want)
					ulp := math.Abs(float64(math.Nextafter32(w32, float32(math.Inf(1))) - w32))
					if d := math.Abs(float64(got) - want); d > ulp+0x1p-40*mag {
						t.Errorf("%v %s n=%d off=%d: %v, reference %v", k.tier, what, n, off, got, w32)
					}
				}
				check("F16×F32", k.f16F32(wm, xs), want32)
				check("F16×F16", k.dot[F16](wm, misalign(xh, 63-off)), want16)
			}
		}
	}
}

// TestFastColsExact checks the multi-weight-row (decode) kernels against the
// one-row model, with weight rows neither adjacent nor aligned.
func TestFastColsExact(t *testing.T) {
	r := rand.New(rand.NewPCG(39, 40))
	for _, k := range hostKernels() {
		for _, ct := range fastTypes[:3] {
			if k.cols[ct.t].n == 0 {
				continue
			}
			C, cols := k.cols[ct.t].n, k.cols[ct.t].f
			for _, nb := range []int{1, 3, 7, 64, 65} {
				for _, raw := range []bool{false, true} {
					wrb0 := nb * ct.t.BlockBytes()
					wrb := wrb0 + 13
					w := make([]byte, C*wrb)
					_, x := randomRow(r, ct.t, nb, raw)
					want := make([]float32, C)
					for i := range C {
						wi, _ := randomRow(r, ct.t, nb, raw)
						copy(w[i*wrb:], wi)
						want[i] = ct.model(wi, x)
					}
					for _, off := range []int{0, 1, 17, 63} {
						const guard = 3
						buf := guarded(C + 2*guard)
						cols(misalign(w, off), wrb, misalign(x, 63-off), buf[guard:guard+C])
						checkGuarded(t, fmt.Sprintf("%v %v nb=%d raw=%v off=%d", k.tier, ct.t, nb, raw, off), buf, guard, 1, want)
					}
				}
			}
		}
	}
}
