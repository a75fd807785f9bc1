//go:build !purego

package kernels

// The ternary kernels of the assembly tiers (internal/asmgen/ternary.go):
// integer dots on the packed trits, one FMA per lane and block, in the
// order x86DotTernary models.

func setTernaryAVX2(k *kernelSet) {
	k.dot[TQ1_0] = dotTQ1_0AVX2
	k.dot[TQ2_0] = dotTQ2_0AVX2
	k.rows[TQ1_0] = rowsKernel{4, rowsTQ1_0AVX2}
	k.rows[TQ2_0] = rowsKernel{4, rowsTQ2_0AVX2}
	k.cols[TQ1_0] = colsKernel{4, colsTQ1_0AVX2}
	k.cols[TQ2_0] = colsKernel{4, colsTQ2_0AVX2}
}

func setTernaryAVX512(k *kernelSet) {
	k.dot[TQ1_0] = dotTQ1_0AVX512
	k.dot[TQ2_0] = dotTQ2_0AVX512
	k.rows[TQ1_0] = rowsKernel{8, rowsTQ1_0AVX512}
	k.rows[TQ2_0] = rowsKernel{8, rowsTQ2_0AVX512}
	k.cols[TQ1_0] = colsKernel{4, colsTQ1_0AVX512}
	k.cols[TQ2_0] = colsKernel{4, colsTQ2_0AVX512}
	k.r16[TQ2_0] = r16TQ2_0AVX512
	k.r16[TQ1_0] = r16TQ1_0AVX512
}
