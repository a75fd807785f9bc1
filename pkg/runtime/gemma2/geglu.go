package gemma2

import (
	"math"
	"sync"

	"github.com/corelm/corelm/pkg/kernels"
)

// GeGLU sets dst[i] = gelu(gate[i])·up[i] with the tanh form of GELU,
// 0.5·x·(1+tanh(√(2/π)·(x+0.044715·x³))), evaluated the way ggml's CPU
// backend does it (ggml_vec_geglu_f32 under GGML_GELU_FP16): for
// -10 < x < 10, x is rounded to f16 and the result read from a table of
// f16-rounded GELU values; below -10 it is 0 and above 10 it is x. That
// table is why GELU in llama.cpp is only f16-accurate; reproducing it keeps
// Gemma's logits within the golden tolerance of llama.cpp's, and it is a
// lookup instead of a tanh per element. dst may alias gate or up.
//
// It lives here rather than in pkg/kernels because kernels.GELU evaluates
// the formula exactly; a table-exact GeGLU belongs there eventually.
func GeGLU(dst, gate, up []float32) {
	if len(gate) != len(dst) || len(up) != len(dst) {
		panic("gemma2: GeGLU: length mismatch")
	}
	t := geluTable()
	for i, x := range gate {
		switch {
		case x <= -10:
			dst[i] = 0
		case x >= 10:
			dst[i] = x * up[i]
		default:
			dst[i] = t[kernels.F32ToF16(x)] * up[i]
		}
	}
}

// geluF32 is ggml_gelu_f32: the tanh approximation in float32 arithmetic.
func geluF32(x float32) float32 {
	const (
		coefA       = float32(0.044715)
		sqrt2OverPi = float32(0.79788456080286535587989211986876)
	)
	return 0.5 * x * (1 + float32(math.Tanh(float64(sqrt2OverPi*x*(1+coefA*x*x)))))
}

// geluTable maps every f16 bit pattern to its GELU, rounded to f16 and
// widened back (ggml_table_gelu_f16), 256 KiB built on first use.
var geluTable = sync.OnceValue(func() *[1 << 16]float32 {
	t := new([1 << 16]float32)
	for i := range t {
		x := kernels.F16ToF32(uint16(i))
		t[i] = kernels.F16ToF32(kernels.F32ToF16(geluF32(x)))
	}
	return t
})
