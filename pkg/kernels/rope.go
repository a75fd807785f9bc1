package kernels

import (
	"fmt"
	"math"
)

// RoPE rotates query/key head vectors by position-dependent angles, with
// ggml's numerics (ggml_rope_cache_init and rotate_pairs in ggml-cpu/ops.cpp)
// for ext_factor 0, i.e. no YaRN ramp: pair i turns by
//
//	θᵢ = FreqScale · (pos · Base^(-2i/Dims)) / FreqFactors[i]
//
// where the power is built as ggml does, by repeated float32 multiplication
// with Base^(-2/Dims), and cos θᵢ and sin θᵢ are both multiplied by
// AttnFactor. Matching that order, rather than computing each power directly,
// is what keeps golden comparisons with llama.cpp within an ulp.
type RoPE struct {
	// Dims is the number of rotated dimensions of each head (ggml's n_dims).
	Dims int
	// HeadSize is the length of one head; 0 means Dims. Dimensions past Dims
	// are left alone (partial rotary, e.g. phi-2 style).
	HeadSize int
	// Base is the frequency base (rope_freq_base, 10000 for llama).
	Base float32
	// FreqScale divides positions (linear scaling); 0 means 1.
	FreqScale float32
	// AttnFactor multiplies cos and sin (LongRoPE's magnitude correction);
	// 0 means 1.
	AttnFactor float32
	// FreqFactors, if set, holds Dims/2 divisors of θ (Llama 3 rope_freqs,
	// LongRoPE short/long factors).
	FreqFactors []float32
	// NeoX rotates pairs (x[i], x[i+Dims/2]) (GPT-NeoX style: qwen2, gemma2,
	// phi3) instead of adjacent pairs (x[2i], x[2i+1]) (llama).
	NeoX bool
}

// maxStackPairs bounds the angle table Apply keeps on the stack; heads with
// more rotated pairs (none in practice) make Apply allocate.
const maxStackPairs = 256

// Apply rotates every head of x in place for position pos. len(x) must be a
// multiple of the head size.
func (r *RoPE) Apply(x []float32, pos int) {
	hs := r.HeadSize
	if hs == 0 {
		hs = r.Dims
	}
	if r.Dims <= 0 || r.Dims%2 != 0 || r.Dims > hs || len(x)%hs != 0 {
		panic(fmt.Sprintf("kernels: RoPE: dims %d, head size %d, len %d", r.Dims, hs, len(x)))
	}
	half := r.Dims / 2
	if r.FreqFactors != nil && len(r.FreqFactors) < half {
		panic(fmt.Sprintf("kernels: RoPE: %d freq factors, want %d", len(r.FreqFactors), half))
	}
	var cosBuf, sinBuf [maxStackPairs]float32
	cs, sn := cosBuf[:], sinBuf[:]
	if half > maxStackPairs {
		cs, sn = make([]float32, half), make([]float32, half)
	}
	r.angles(pos, cs[:half], sn[:half])
	for h := 0; h < len(x); h += hs {
		v := x[h : h+r.Dims]
		if r.NeoX {
			rotate(v[:half], v[half:], cs, sn)
		} else {
			for i := range half {
				x0, x1 := v[2*i], v[2*i+1]
				v[2*i] = float32(x0*cs[i]) - float32(x1*sn[i])
				v[2*i+1] = float32(x0*sn[i]) + float32(x1*cs[i])
			}
		}
	}
}

// rotate turns each pair (a[i], b[i]) by the angle with cosine c[i] and sine
// s[i]. The float32 conversions keep the products rounded separately (no
// fused multiply-add), as in ggml's scalar code.
func rotate(a, b, c, s []float32) {
	for i := range a {
		x0, x1 := a[i], b[i]
		a[i] = float32(x0*c[i]) - float32(x1*s[i])
		b[i] = float32(x0*s[i]) + float32(x1*c[i])
	}
}

// angles fills the cos/sin table for pos (ggml_rope_cache_init + rope_yarn
// with ext_factor 0).
func (r *RoPE) angles(pos int, cs, sn []float32) {
	freqScale, mscale := r.FreqScale, r.AttnFactor
	if freqScale == 0 {
		freqScale = 1
	}
	if mscale == 0 {
		mscale = 1
	}
	thetaScale := float32(math.Pow(float64(r.Base), float64(float32(-2)/float32(r.Dims))))
	theta := float32(pos)
	for i := range cs {
		t := theta
		if r.FreqFactors != nil {
			t /= r.FreqFactors[i]
		}
		t *= freqScale
		cs[i] = float32(math.Cos(float64(t))) * mscale
		sn[i] = float32(math.Sin(float64(t))) * mscale
		theta *= thetaScale
	}
}
