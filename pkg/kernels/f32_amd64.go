//go:build !purego

package kernels

import "unsafe"

// The F32 weight rows' kernels of the assembly tiers (internal/asmgen/f32.go):
// 32 lanes of float32 fused multiply-adds per row, reduced pairwise, the
// columns past the last whole 32 fused in one by one; dotF32LanesModel
// (f32_test.go) is their twin. One structure for both tiers, so the
// one-row and the several-row kernels of either give the same bits.

// setF32AVX2 and setF32AVX512 put a tier's F32 kernels in its table.
func setF32AVX2(k *kernelSet) {
	k.f32F32 = dotF32F32AVX2
	k.dot[F32] = dotF32AVX2
	k.colsF32 = colsF32Kernel{2, colsF32AVX2}
}

func setF32AVX512(k *kernelSet) {
	k.f32F32 = dotF32F32AVX512
	k.dot[F32] = dotF32AVX512
	k.colsF32 = colsF32Kernel{4, colsF32AVX512}
	k.tileF32 = tileF32Kernel{4, 2, tileF32AVX512}
}

func dotF32F32AVX2(w []byte, x []float32) float32   { return f32Row(false, w, x) }
func dotF32F32AVX512(w []byte, x []float32) float32 { return f32Row(true, w, x) }

// dotF32AVX2 and dotF32AVX512 are dot[F32]: an activation row encoded as
// F32 is its float32s' bytes (little-endian, as the host's), which the
// kernel reads in place.
func dotF32AVX2(w, xq []byte) float32   { return f32Row(false, w, f32sOf(xq)) }
func dotF32AVX512(w, xq []byte) float32 { return f32Row(true, w, f32sOf(xq)) }

// f32sOf returns the float32s whose bytes b holds, in place.
func f32sOf(b []byte) []float32 {
	if len(b) < 4 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4)
}

// f32Row is the one-row dot of w (at least 4·len(x) bytes, checked by the
// callers) with x. It calls the assembly directly, not through a func
// value, so that the kernel's //go:noescape keeps o on the stack.
func f32Row(avx512 bool, w []byte, x []float32) float32 {
	var o [1]float32
	if n := len(x); n > 0 {
		_ = w[4*n-1]
		if avx512 {
			f32Cols1AVX512Asm(&w[0], 4*n, &x[0], n, &o)
		} else {
			f32Cols1AVX2Asm(&w[0], 4*n, &x[0], n, &o)
		}
	}
	return o[0]
}

// colsF32AVX2 and colsF32AVX512 are colsF32 of their tiers (2 and 4
// weight rows).
func colsF32AVX2(w []byte, wrb int, x, out []float32) {
	o := (*[2]float32)(out[:2])
	if len(x) == 0 {
		*o = [2]float32{}
		return
	}
	_ = w[wrb+4*len(x)-1]
	f32Cols2AVX2Asm(&w[0], wrb, &x[0], len(x), o)
}

func colsF32AVX512(w []byte, wrb int, x, out []float32) {
	o := (*[4]float32)(out[:4])
	if len(x) == 0 {
		*o = [4]float32{}
		return
	}
	_ = w[3*wrb+4*len(x)-1]
	f32Cols4AVX512Asm(&w[0], wrb, &x[0], len(x), o)
}

// tileF32AVX512 is tileF32 of its tier: 4 weight rows by 2 activation
// rows.
func tileF32AVX512(w []byte, wrb int, x []float32, cols int, out []float32, ostride int) {
	_ = out[ostride+3]
	if cols == 0 {
		clear(out[:4])
		clear(out[ostride : ostride+4])
		return
	}
	_ = w[3*wrb+4*cols-1]
	_ = x[2*cols-1]
	f32Tile4x2AVX512Asm(&w[0], wrb, &x[0], 4*cols, cols, &out[0], ostride)
}
