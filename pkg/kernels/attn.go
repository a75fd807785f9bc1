package kernels

// ExpMax replaces x by exp(x − max x) and returns the max and Σ exp(x − max
// x) (summed in float64, rounded once): Softmax without its final scaling.
// It is the partial softmax state of one range of attention scores, which
// flash-decoding merges across ranges; Softmax(x) equals x scaled by 1/sum.
func ExpMax(x []float32) (m, sum float32) {
	if len(x) == 0 {
		return 0, 0
	}
	m = kern.max(x)
	return m, kern.expSub(x, m)
}
