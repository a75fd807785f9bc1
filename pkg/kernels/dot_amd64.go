//go:build !purego

package kernels

import "golang.org/x/sys/cpu"

//go:generate sh -c "cd ../../internal/asmgen && go run . -out ../../pkg/kernels/dot_amd64.s -stubs ../../pkg/kernels/dot_amd64_stubs.go -pkg kernels"

var (
	avx2Vec = vecKernels{
		quantQ8K: quantQ8KAsm,
		f16F32:   dotF16F32Asm,
		f16F16:   dotF16F16Asm,
		axpyF16:  axpyF16Asm,
		dotsF16:  dotsF16Asm,
		axpysF16: axpysF16Asm,
		expSub:   expSubAsm,
		swiglu:   swigluAsm,
		max:      maxAsm,
	}
	avx2Kernels = &kernelSet{
		tier:    TierAVX2,
		q4K:     dotQ4KAsm2,
		q5K:     dotQ5KAsm2,
		q6K:     dotQ6KAsm,
		q8_0:    dotQ8_0Asm,
		q4_0:    dotQ4_0Asm,
		rowsQ4K: rowsQ4KAsm2,
		rowsQ6K: rowsQ6KAsm2,
		rowsN:   4,

		vecKernels: avx2Vec,
	}
	avx512Kernels = &kernelSet{
		tier:    TierAVX512,
		q4K:     dotQ4KAsm512,
		q5K:     dotQ5KAsm512,
		q6K:     dotQ6KAsm512,
		q8_0:    dotQ8_0Asm,
		q4_0:    dotQ4_0Asm,
		rowsQ4K: rowsQ4KAsm512,
		rowsQ6K: rowsQ6KAsm512,
		rowsQ5K: rowsQ5KAsm512,
		rowsN:   8,
		colsQ4K: colsQ4KAsm512,
		colsQ6K: colsQ6KAsm512,
		colsN:   4,
		r16Q4K:  r16Q4KAsm512,
		r16Q6K:  r16Q6KAsm512,

		vecKernels: avx2Vec,
	}
)

func hostKernels() []*kernelSet {
	x := &cpu.X86
	var ks []*kernelSet
	if x.HasAVX2 && x.HasFMA && x.HasF16C {
		ks = append(ks, avx2Kernels)
		if x.HasAVX512F && x.HasAVX512BW && x.HasAVX512VL && x.HasAVX512DQ && x.HasAVX512VNNI {
			ks = append(ks, avx512Kernels)
		}
	}
	return ks
}

// The wrappers below call the assembly directly (not through a function
// value) so that their accumulators stay on the stack.

func dotQ4KAsm2(w, xq []byte) float32 {
	var acc [12]float32
	if nb := len(w) / 144; nb > 0 {
		_ = xq[nb*q8KBytes-1]
		dotQ4KAVX2(&w[0], &xq[0], nb, &acc)
	}
	return hsumQ4K(&acc)
}

func dotQ4KAsm512(w, xq []byte) float32 {
	var acc [12]float32
	if nb := len(w) / 144; nb > 0 {
		_ = xq[nb*q8KBytes-1]
		dotQ4KAVX512(&w[0], &xq[0], nb, &acc)
	}
	return hsumQ4K(&acc)
}

func dotQ5KAsm2(w, xq []byte) float32 {
	var acc [12]float32
	if nb := len(w) / 176; nb > 0 {
		_ = xq[nb*q8KBytes-1]
		dotQ5KAVX2(&w[0], &xq[0], nb, &acc)
	}
	return hsumQ4K(&acc)
}

func dotQ5KAsm512(w, xq []byte) float32 {
	var acc [12]float32
	if nb := len(w) / 176; nb > 0 {
		_ = xq[nb*q8KBytes-1]
		dotQ5KAVX512(&w[0], &xq[0], nb, &acc)
	}
	return hsumQ4K(&acc)
}

func rowsQ4KAsm2(w, xq []byte, xrb int, out []float32, ostride int) {
	var acc [48]float32
	if nb := len(w) / 144; nb > 0 {
		_ = xq[3*xrb+nb*q8KBytes-1] // all four rows are in bounds
		dotQ4KRows4AVX2(&w[0], &xq[0], xrb, nb, &acc)
	}
	_ = out[3*ostride]
	for r := range 4 {
		out[r*ostride] = hsumQ4K((*[12]float32)(acc[12*r : 12*r+12]))
	}
}

func rowsQ4KAsm512(w, xq []byte, xrb int, out []float32, ostride int) {
	var acc [128]float32
	if nb := len(w) / 144; nb > 0 {
		_ = xq[7*xrb+nb*q8KBytes-1]
		dotQ4KRows8AVX512(&w[0], &xq[0], xrb, nb, &acc)
	}
	rows8Sums(&acc, out, ostride)
}

func rowsQ5KAsm512(w, xq []byte, xrb int, out []float32, ostride int) {
	var acc [128]float32
	if nb := len(w) / 176; nb > 0 {
		_ = xq[7*xrb+nb*q8KBytes-1]
		dotQ5KRows8AVX512(&w[0], &xq[0], xrb, nb, &acc)
	}
	rows8Sums(&acc, out, ostride)
}

// The cols wrappers check that the four weight rows and the activation
// row are in bounds; the kernels do the horizontal sums themselves.

func colsQ4KAsm512(w []byte, wrb int, xq []byte, out []float32) {
	o := (*[4]float32)(out[:4])
	nb := wrb / 144
	if nb == 0 {
		*o = [4]float32{}
		return
	}
	_ = w[3*wrb+nb*144-1]
	_ = xq[nb*q8KBytes-1]
	dotQ4KCols4AVX512(&w[0], wrb, &xq[0], nb, o)
}

func colsQ6KAsm512(w []byte, wrb int, xq []byte, out []float32) {
	o := (*[4]float32)(out[:4])
	nb := wrb / 210
	if nb == 0 {
		*o = [4]float32{}
		return
	}
	_ = w[3*wrb+nb*210-1]
	_ = xq[nb*q8KBytes-1]
	dotQ6KCols4AVX512(&w[0], wrb, &xq[0], nb, o)
}

// The r16 wrappers check that the group's blocks, the R activation rows and
// the R output runs are in bounds, and take the rows 8, 4, 2 and 1 at a time.

func r16Q4KAsm512(w []byte, nb int, xq []byte, xrb, R int, out []float32, ostride int) {
	r16Asm(w, nb, r16Q4KBlock, xq, xrb, R, out, ostride, &r16Q4KKernels)
}

func r16Q6KAsm512(w []byte, nb int, xq []byte, xrb, R int, out []float32, ostride int) {
	r16Asm(w, nb, r16Q6KBlock, xq, xrb, R, out, ostride, &r16Q6KKernels)
}

type r16Kernel func(w *byte, nb int, x *byte, xstride int, out *float32, ostride int)

// Indexed by log2 of the rows taken at once.
var (
	r16Q4KKernels = [4]r16Kernel{dotQ4KR16x1AVX512, dotQ4KR16x2AVX512, dotQ4KR16x4AVX512, dotQ4KR16x8AVX512}
	r16Q6KKernels = [4]r16Kernel{dotQ6KR16x1AVX512, dotQ6KR16x2AVX512, dotQ6KR16x4AVX512, dotQ6KR16x8AVX512}
)

func r16Asm(w []byte, nb, gbb int, xq []byte, xrb, R int, out []float32, ostride int, ks *[4]r16Kernel) {
	if nb <= 0 || R <= 0 {
		for r := range R {
			clear(out[r*ostride : r*ostride+R16])
		}
		return
	}
	_ = w[nb*gbb-1]
	_ = xq[(R-1)*xrb+nb*q8KBytes-1]
	_ = out[(R-1)*ostride+R16-1]
	for r := 0; r < R; {
		i := 3
		for 1<<i > R-r {
			i--
		}
		ks[i](&w[0], nb, &xq[r*xrb], xrb, &out[r*ostride], ostride)
		r += 1 << i
	}
}

// rows8Sums reduces the avx512 rows kernels' accumulators (16 per row: 8
// lanes, 4 min lanes, 4 zeros).
func rows8Sums(acc *[128]float32, out []float32, ostride int) {
	_ = out[7*ostride]
	for r := range 8 {
		out[r*ostride] = hsumQ4K((*[12]float32)(acc[16*r : 16*r+12]))
	}
}

func dotQ6KAsm(w, xq []byte) float32 {
	var acc [8]float32
	if nb := len(w) / 210; nb > 0 {
		_ = xq[nb*q8KBytes-1]
		dotQ6KAVX2(&w[0], &xq[0], nb, &acc)
	}
	return hsum8(&acc)
}

func dotQ6KAsm512(w, xq []byte) float32 {
	var acc [8]float32
	if nb := len(w) / 210; nb > 0 {
		_ = xq[nb*q8KBytes-1]
		dotQ6KAVX512(&w[0], &xq[0], 0, nb, &acc)
	}
	return hsum8(&acc)
}

func rowsQ6KAsm2(w, xq []byte, xrb int, out []float32, ostride int) {
	var acc [32]float32
	if nb := len(w) / 210; nb > 0 {
		_ = xq[3*xrb+nb*q8KBytes-1]
		dotQ6KRows4AVX2(&w[0], &xq[0], xrb, nb, &acc)
	}
	_ = out[3*ostride]
	for r := range 4 {
		out[r*ostride] = hsum8((*[8]float32)(acc[8*r : 8*r+8]))
	}
}

func rowsQ6KAsm512(w, xq []byte, xrb int, out []float32, ostride int) {
	var acc [64]float32
	if nb := len(w) / 210; nb > 0 {
		_ = xq[7*xrb+nb*q8KBytes-1]
		dotQ6KRows8AVX512(&w[0], &xq[0], xrb, nb, &acc)
	}
	_ = out[7*ostride]
	for r := range 8 {
		out[r*ostride] = hsum8((*[8]float32)(acc[8*r : 8*r+8]))
	}
}

func dotQ8_0Asm(w, xq []byte) float32 {
	var acc [8]float32
	if nb := len(w) / 34; nb > 0 {
		_ = xq[nb*q8_0Bytes-1]
		dotQ8_0AVX2(&w[0], &xq[0], nb, &acc)
	}
	return hsum8(&acc)
}

func dotQ4_0Asm(w, xq []byte) float32 {
	var acc [8]float32
	if nb := len(w) / 18; nb > 0 {
		_ = xq[nb*q8_0Bytes-1]
		dotQ4_0AVX2(&w[0], &xq[0], nb, &acc)
	}
	return hsum8(&acc)
}

func quantQ8KAsm(src []float32, dst []byte) {
	if nb := len(src) / QK_K; nb > 0 {
		_ = dst[nb*q8KBytes-1]
		quantQ8KAVX2(&src[0], &dst[0], nb)
	}
}

// The F16 dots run the assembly over the first n&^15 elements and finish
// the sum with the reference loop.

func dotF16F32Asm(w []byte, x []float32) float32 {
	n := len(x) &^ 15
	var sum float64
	if n > 0 {
		_ = w[2*n-1]
		sum = dotF16F32AVX2(&w[0], &x[0], n)
	}
	for i := n; i < len(x); i++ {
		sum += float64(F16ToF32(uint16(w[2*i])|uint16(w[2*i+1])<<8) * x[i])
	}
	return float32(sum)
}

func dotF16F16Asm(w, x []byte) float32 {
	n := len(w) / 2 &^ 15
	var sum float64
	if n > 0 {
		_ = x[2*n-1]
		sum = dotF16F16AVX2(&w[0], &x[0], n)
	}
	for i := 2 * n; i+2 <= len(w); i += 2 {
		sum += float64(F16ToF32(uint16(w[i])|uint16(w[i+1])<<8) * F16ToF32(uint16(x[i])|uint16(x[i+1])<<8))
	}
	return float32(sum)
}

func sumU64(b []byte) uint64 {
	if !cpu.X86.HasAVX2 || len(b) < 128 {
		return sumU64Generic(b)
	}
	n := len(b) &^ 127
	return sumU64AVX2(&b[0], n) + sumU64Generic(b[n:])
}

// axpyF16Asm runs the assembly over the first len(o)&^15 values and the
// reference over the rest.
func axpyF16Asm(w float32, v []byte, o []float32) {
	n := len(o) &^ 15
	if n > 0 {
		_ = v[2*n-1]
		axpyF16AVX2(w, &v[0], &o[0], n)
	}
	axpyF16Generic(w, v[2*n:], o[n:])
}

// dotsF16Asm checks that the last row is in bounds; DotsF16 checked the
// rest.
func dotsF16Asm(k []byte, stride int, q, out []float32) {
	if len(out) == 0 {
		return
	}
	if len(q)%32 != 0 {
		for i := range out {
			out[i] = dotF16F32Asm(k[i*stride:i*stride+2*len(q)], q)
		}
		return
	}
	_ = k[(len(out)-1)*stride+2*len(q)-1]
	dotsF16AVX2(&k[0], stride, &q[0], len(q), len(out), &out[0])
}

// axpysF16Asm checks that the last row is in bounds; AxpysF16 checked the
// rest. Head sizes that are not a multiple of 64 go row by row.
func axpysF16Asm(w []float32, v []byte, stride int, o []float32) {
	if len(w) == 0 {
		return
	}
	if len(o)%64 != 0 {
		for i, wi := range w {
			axpyF16Asm(wi, v[i*stride:i*stride+2*len(o)], o)
		}
		return
	}
	_ = v[(len(w)-1)*stride+2*len(o)-1]
	axpysF16AVX2(&w[0], &v[0], stride, len(w), &o[0], len(o))
}

// expSubAsm runs the whole groups of eight through the kernel and the rest
// through exp32.
func expSubAsm(x []float32, m float32) float32 {
	n := len(x) &^ 7
	var sum float32
	if n > 0 {
		sum = expSubAVX2(&x[0], n, m)
	}
	for i := n; i < len(x); i++ {
		x[i] = exp32(x[i] - m)
		sum += x[i]
	}
	return sum
}

// swigluAsm: lengths checked by SwiGLU.
func swigluAsm(dst, gate, up []float32) {
	n := len(dst) &^ 7
	if n > 0 {
		swigluAVX2(&dst[0], &gate[0], &up[0], n)
	}
	swigluGeneric(dst[n:], gate[n:], up[n:])
}

// maxAsm runs the whole groups of 32 through the kernel.
func maxAsm(x []float32) float32 {
	n := len(x) &^ 31
	if n == 0 {
		return maxGeneric(x)
	}
	m := maxAVX2(&x[0], n)
	if n < len(x) {
		m = max(m, maxGeneric(x[n:]))
	}
	return m
}
