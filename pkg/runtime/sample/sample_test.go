package sample

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
)

func TestGreedyIsArgmaxAfterBiasAndPenalties(t *testing.T) {
	logits := []float32{1, 5, 3, 4.9}
	if got := New(Params{}).Sample(append([]float32(nil), logits...), nil); got != 1 {
		t.Errorf("greedy = %d, want 1", got)
	}
	// A bias moves the argmax.
	if got := New(Params{LogitBias: map[int32]float32{2: 3}}).Sample(append([]float32(nil), logits...), nil); got != 2 {
		t.Errorf("greedy with bias = %d, want 2", got)
	}
	// Repetition penalty 2 halves a positive logit seen in the window: 5 → 2.5 < 4.9.
	if got := New(Params{RepeatPenalty: 2}).Sample(append([]float32(nil), logits...), []int32{1}); got != 3 {
		t.Errorf("greedy with repetition penalty = %d, want 3", got)
	}
}

func TestAdjustPenalties(t *testing.T) {
	tests := []struct {
		name    string
		p       Params
		history []int32
		want    []float32
	}{
		{"repeat divides positive, multiplies negative", Params{RepeatPenalty: 2}, []int32{0, 1}, []float32{2, -4, 1}},
		{"presence once per token", Params{PresencePenalty: 0.5}, []int32{0, 0, 1}, []float32{3.5, -2.5, 1}},
		{"frequency per occurrence", Params{FrequencyPenalty: 0.5}, []int32{0, 0, 1}, []float32{3, -2.5, 1}},
		{"window limits the history", Params{PresencePenalty: 1, RepeatLastN: 1}, []int32{0, 1}, []float32{4, -3, 1}},
	}
	for _, tt := range tests {
		logits := []float32{4, -2, 1}
		New(tt.p).Adjust(logits, tt.history)
		for i := range logits {
			if math.Abs(float64(logits[i]-tt.want[i])) > 1e-6 {
				t.Errorf("%s: logits = %v, want %v", tt.name, logits, tt.want)
				break
			}
		}
	}
}

func TestSeedDeterminism(t *testing.T) {
	logits := make([]float32, 50)
	for i := range logits {
		logits[i] = float32(i%7) * 0.3
	}
	draw := func(seed uint64) []int32 {
		s := New(Params{Temperature: 1, Seed: seed})
		var out []int32
		for range 40 {
			out = append(out, s.Sample(append([]float32(nil), logits...), nil))
		}
		return out
	}
	a, b, c := draw(7), draw(7), draw(8)
	same := true
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("same seed, different draws at %d: %v vs %v", i, a, b)
		}
		same = same && a[i] == c[i]
	}
	if same {
		t.Error("seeds 7 and 8 drew identical sequences")
	}
}

func TestTruncation(t *testing.T) {
	// Probabilities (temperature 1): token 0 dominant, then 1, then a tail.
	logits := []float32{5, 4, 0, 0, 0, 0}
	tests := []struct {
		name  string
		p     Params
		allow map[int32]bool
	}{
		{"top-k 1", Params{Temperature: 1, TopK: 1}, map[int32]bool{0: true}},
		{"top-k 2", Params{Temperature: 1, TopK: 2}, map[int32]bool{0: true, 1: true}},
		{"top-p 0.5", Params{Temperature: 1, TopP: 0.5}, map[int32]bool{0: true}},
		{"min-p 0.2", Params{Temperature: 1, MinP: 0.2}, map[int32]bool{0: true, 1: true}},
	}
	for _, tt := range tests {
		for seed := range uint64(200) {
			tt.p.Seed = seed
			got := New(tt.p).Sample(append([]float32(nil), logits...), nil)
			if !tt.allow[got] {
				t.Errorf("%s: drew token %d", tt.name, got)
				break
			}
		}
	}
}

func TestLogprobs(t *testing.T) {
	logits := []float32{0, float32(math.Log(3)), 0}
	chosen, top := Logprobs(logits, 1, 2)
	if math.Abs(float64(chosen.Logprob)-math.Log(0.6)) > 1e-6 {
		t.Errorf("logprob of token 1 = %g, want ln 0.6", chosen.Logprob)
	}
	if len(top) != 2 || top[0].ID != 1 || math.Abs(float64(top[1].Logprob)-math.Log(0.2)) > 1e-6 {
		t.Errorf("top-2 = %+v", top)
	}
}

func TestValidate(t *testing.T) {
	bad := []Params{
		{Temperature: -1}, {Temperature: float32(math.NaN())}, {TopK: -1}, {TopP: 1.5}, {MinP: -0.1},
		{TypicalP: 2}, {RepeatPenalty: -1}, {RepeatLastN: -2}, {PresencePenalty: 1000},
		{LogitBias: map[int32]float32{99: 1}},
	}
	for _, p := range bad {
		if err := p.Validate(10); !errors.Is(err, ErrParams) {
			t.Errorf("Validate(%+v) = %v, want ErrParams", p, err)
		}
	}
	ok := Params{Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05, TypicalP: 1, RepeatPenalty: 1.1, LogitBias: map[int32]float32{3: -100}}
	if err := ok.Validate(10); err != nil {
		t.Errorf("Validate(defaults) = %v", err)
	}
}

// TestDefaults: llama.cpp's values, valid, and their "off" settings of
// typical-p and the repetition penalty (1) sample as the zero values do.
func TestDefaults(t *testing.T) {
	d := Defaults()
	if d.Temperature != 0.8 || d.TopK != 40 || d.TopP != 0.95 || d.MinP != 0.05 {
		t.Errorf("Defaults() = %+v, want llama.cpp's temperature 0.8, top-k 40, top-p 0.95, min-p 0.05", d)
	}
	if err := d.Validate(8); err != nil {
		t.Fatal(err)
	}
	zero := d
	zero.TypicalP, zero.RepeatPenalty = 0, 0
	logits := []float32{0.3, 1.2, 0.9, 1.1, -0.5, 0.8, 1.0, 0.2}
	history := []int32{1, 1, 3}
	for seed := range uint64(20) {
		d.Seed, zero.Seed = seed, seed
		a := New(d).Sample(append([]float32(nil), logits...), history)
		b := New(zero).Sample(append([]float32(nil), logits...), history)
		if a != b {
			t.Fatalf("seed %d: %d with typical-p and repetition penalty 1, %d with 0", seed, a, b)
		}
	}
}

// referenceTopK is the candidate order before best: a full sort, cut to k.
func referenceTopK(c []candidate, k int) []candidate {
	c = append([]candidate(nil), c...)
	sort.Slice(c, func(i, j int) bool {
		if c[i].logit != c[j].logit {
			return c[i].logit > c[j].logit
		}
		return c[i].id < c[j].id
	})
	return c[:k]
}

// TestBestEqualsFullSort: the heap selection keeps exactly the first k of
// a full sort, ties included, so sampling draws the same tokens as before.
func TestBestEqualsFullSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for range 300 {
		n := 1 + rng.IntN(3000)
		c := make([]candidate, n)
		for i := range c {
			c[i] = candidate{id: int32(i), logit: float32(rng.IntN(50)) / 4} // many ties
		}
		rng.Shuffle(n, func(i, j int) { c[i], c[j] = c[j], c[i] })
		k := 1 + rng.IntN(n)
		want := referenceTopK(c, k)
		got := best(append([]candidate(nil), c...), k)
		if !slices.Equal(got, want) {
			t.Fatalf("n=%d k=%d: best differs from the full sort", n, k)
		}
	}
}

// BenchmarkSample128k: one draw at the default parameters from Llama-3's
// vocabulary size.
func BenchmarkSample128k(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	logits := make([]float32, 128256)
	for i := range logits {
		logits[i] = float32(rng.NormFloat64()) * 3
	}
	s := New(Defaults())
	work := make([]float32, len(logits))
	for b.Loop() {
		copy(work, logits)
		s.Sample(work, nil)
	}
}
