// Package sample picks the next token from a row of logits. The chain follows
// llama.cpp's default order: logit bias → penalties → top-k → typical-p →
// top-p → min-p → temperature → draw. Temperature ≤ 0 means greedy (argmax
// after bias and penalties). The same seed and the same inputs give the same
// tokens.
package sample

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
)

// Params are the sampling parameters of one generation. The zero value is
// greedy decoding with no penalties.
type Params struct {
	Temperature      float32
	TopK             int     // 0 = off
	TopP             float32 // 1 or 0 = off
	MinP             float32 // 0 = off
	TypicalP         float32 // 1 or 0 = off
	RepeatPenalty    float32 // 1 or 0 = off; divides positive logits, multiplies negative ones
	RepeatLastN      int     // window of past tokens the penalties look at; 0 = 64, -1 = all
	PresencePenalty  float32 // subtracted once from every token seen in the window
	FrequencyPenalty float32 // subtracted per occurrence in the window
	LogitBias        map[int32]float32
	Seed             uint64
}

// Defaults are llama.cpp's sampling defaults (common_params_sampling):
// temperature 0.8, top-k 40, top-p 0.95, min-p 0.05, and no typical-p and
// no penalties (1 and 1 are off). Every frontend starts from them and
// overrides what its caller sets; the seed is the caller's to choose.
func Defaults() Params {
	return Params{Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05, TypicalP: 1, RepeatPenalty: 1}
}

// ErrParams is wrapped by parameter validation errors.
var ErrParams = errors.New("invalid sampling parameters")

// Validate checks ranges, so bad requests fail before any work.
func (p *Params) Validate(vocab int) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrParams, fmt.Sprintf(format, a...))
	}
	finite := func(f float32) bool { return !math.IsNaN(float64(f)) && !math.IsInf(float64(f), 0) }
	switch {
	case !finite(p.Temperature) || p.Temperature < 0 || p.Temperature > 100:
		return bad("temperature %g must be in [0, 100]", p.Temperature)
	case p.TopK < 0:
		return bad("top_k %d must be ≥ 0", p.TopK)
	case !finite(p.TopP) || p.TopP < 0 || p.TopP > 1:
		return bad("top_p %g must be in [0, 1]", p.TopP)
	case !finite(p.MinP) || p.MinP < 0 || p.MinP > 1:
		return bad("min_p %g must be in [0, 1]", p.MinP)
	case !finite(p.TypicalP) || p.TypicalP < 0 || p.TypicalP > 1:
		return bad("typical_p %g must be in [0, 1]", p.TypicalP)
	case !finite(p.RepeatPenalty) || p.RepeatPenalty < 0 || p.RepeatPenalty > 100:
		return bad("repetition_penalty %g must be in [0, 100]", p.RepeatPenalty)
	case p.RepeatLastN < -1:
		return bad("repeat_last_n %d must be ≥ -1", p.RepeatLastN)
	case !finite(p.PresencePenalty) || math.Abs(float64(p.PresencePenalty)) > 100:
		return bad("presence_penalty %g must be in [-100, 100]", p.PresencePenalty)
	case !finite(p.FrequencyPenalty) || math.Abs(float64(p.FrequencyPenalty)) > 100:
		return bad("frequency_penalty %g must be in [-100, 100]", p.FrequencyPenalty)
	}
	for id, b := range p.LogitBias {
		if id < 0 || int(id) >= vocab {
			return bad("logit_bias names token %d outside the vocabulary (0..%d)", id, vocab-1)
		}
		if math.IsNaN(float64(b)) {
			return bad("logit_bias for token %d is NaN", id)
		}
	}
	return nil
}

// Sampler holds a generation's sampling state: its parameters, its random
// stream and scratch space. Not safe for concurrent use.
type Sampler struct {
	p    Params
	rng  *rand.Rand
	cand []candidate
	seen map[int32]int
}

type candidate struct {
	id    int32
	logit float32
	p     float32
}

// New returns a sampler for p.
func New(p Params) *Sampler {
	return &Sampler{p: p, rng: rand.New(rand.NewPCG(p.Seed, p.Seed^0x9e3779b97f4a7c15)), seen: map[int32]int{}}
}

// Adjust applies logit bias and the repetition, presence and frequency
// penalties for history (the sequence so far) to logits, in place.
func (s *Sampler) Adjust(logits []float32, history []int32) {
	for id, b := range s.p.LogitBias {
		if int(id) < len(logits) {
			logits[id] += b
		}
	}
	rp, pp, fp := s.p.RepeatPenalty, s.p.PresencePenalty, s.p.FrequencyPenalty
	if (rp == 0 || rp == 1) && pp == 0 && fp == 0 {
		return
	}
	window := s.p.RepeatLastN
	if window == 0 {
		window = 64
	}
	if window < 0 || window > len(history) {
		window = len(history)
	}
	clear(s.seen)
	for _, id := range history[len(history)-window:] {
		s.seen[id]++
	}
	for id, count := range s.seen {
		if id < 0 || int(id) >= len(logits) {
			continue
		}
		l := logits[id]
		if rp != 0 && rp != 1 {
			if l > 0 {
				l /= rp
			} else {
				l *= rp
			}
		}
		l -= float32(count)*fp + pp
		logits[id] = l
	}
}

// Sample adjusts logits for history and picks the next token.
func (s *Sampler) Sample(logits []float32, history []int32) int32 {
	s.Adjust(logits, history)
	return s.pick(logits)
}

// SampleRestricted is Sample with restrict applied between the bias and
// penalties and the rest of the chain: restrict sets the logits of the
// tokens that may not come next to -Inf (a grammar's mask), so top-k,
// top-p, min-p and temperature see only the allowed tokens. An error from
// restrict is returned and no token is picked.
func (s *Sampler) SampleRestricted(logits []float32, history []int32, restrict func([]float32) error) (int32, error) {
	s.Adjust(logits, history)
	if err := restrict(logits); err != nil {
		return 0, err
	}
	return s.pick(logits), nil
}

// pick runs the chain after bias and penalties: top-k, typical-p, top-p,
// min-p, temperature and the draw (argmax at temperature 0).
func (s *Sampler) pick(logits []float32) int32 {
	if s.p.Temperature <= 0 {
		return Argmax(logits)
	}
	c := s.cand[:0]
	for i, l := range logits {
		if !math.IsInf(float64(l), -1) && !math.IsNaN(float64(l)) {
			c = append(c, candidate{id: int32(i), logit: l})
		}
	}
	if len(c) == 0 {
		return Argmax(logits)
	}
	// Candidates in order: highest logit first, the lower id first on
	// ties. That is a total order, so keeping the k best with a heap and
	// sorting only them gives exactly the first k of a full sort, at a
	// fraction of its cost on a 128k vocabulary.
	if k := s.p.TopK; k > 0 && k < len(c) {
		c = best(c, k)
	} else {
		slices.SortFunc(c, compareCandidates)
	}
	softmax(c, 1)
	if tp := s.p.TypicalP; tp > 0 && tp < 1 {
		c = typical(c, tp)
	}
	if tp := s.p.TopP; tp > 0 && tp < 1 {
		cum := float32(0)
		for i := range c {
			cum += c[i].p
			if cum >= tp {
				c = c[:i+1]
				break
			}
		}
	}
	if mp := s.p.MinP; mp > 0 && len(c) > 1 {
		limit := c[0].p * mp
		keep := 1
		for keep < len(c) && c[keep].p >= limit {
			keep++
		}
		c = c[:keep]
	}
	softmax(c, s.p.Temperature)
	s.cand = c
	r := s.rng.Float32()
	cum := float32(0)
	for _, x := range c {
		cum += x.p
		if r < cum {
			return x.id
		}
	}
	return c[len(c)-1].id
}

// compareCandidates orders candidates best first: higher logit, then
// lower id.
func compareCandidates(a, b candidate) int {
	switch {
	case a.logit > b.logit:
		return -1
	case a.logit < b.logit:
		return 1
	}
	return int(a.id - b.id)
}

// best moves the k best candidates of c to its front, sorted, and returns
// them: a min-heap of the k best so far (its root the worst of them) over
// one pass.
func best(c []candidate, k int) []candidate {
	h := c[:k]
	worse := func(i, j int) bool { return compareCandidates(h[i], h[j]) > 0 }
	down := func(i int) {
		for {
			w, l, r := i, 2*i+1, 2*i+2
			if l < k && worse(l, w) {
				w = l
			}
			if r < k && worse(r, w) {
				w = r
			}
			if w == i {
				return
			}
			h[i], h[w] = h[w], h[i]
			i = w
		}
	}
	for i := k/2 - 1; i >= 0; i-- {
		down(i)
	}
	for _, x := range c[k:] {
		if compareCandidates(x, h[0]) < 0 {
			h[0] = x
			down(0)
		}
	}
	slices.SortFunc(h, compareCandidates)
	return h
}

// softmax fills p of sorted candidates from their logits at temperature t.
func softmax(c []candidate, t float32) {
	maxL := c[0].logit
	sum := float64(0)
	for i := range c {
		e := math.Exp(float64((c[i].logit - maxL) / t))
		c[i].p = float32(e)
		sum += e
	}
	for i := range c {
		c[i].p = float32(float64(c[i].p) / sum)
	}
}

// typical keeps the tokens whose surprise is closest to the distribution's
// entropy until their mass reaches p (locally typical sampling).
func typical(c []candidate, p float32) []candidate {
	entropy := 0.0
	for _, x := range c {
		if x.p > 0 {
			entropy -= float64(x.p) * math.Log(float64(x.p))
		}
	}
	type scored struct {
		candidate
		dev float64
	}
	sc := make([]scored, len(c))
	for i, x := range c {
		sc[i] = scored{x, math.Abs(-math.Log(float64(x.p)) - entropy)}
	}
	sort.SliceStable(sc, func(i, j int) bool { return sc[i].dev < sc[j].dev })
	cum := float32(0)
	keep := len(sc)
	for i := range sc {
		cum += sc[i].p
		if cum >= p {
			keep = i + 1
			break
		}
	}
	out := c[:0]
	for _, x := range sc[:keep] {
		out = append(out, x.candidate)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].logit > out[j].logit })
	return out
}

// Argmax returns the index of the largest logit (the lowest index on ties).
func Argmax(logits []float32) int32 {
	best := 0
	for i, l := range logits {
		if l > logits[best] {
			best = i
		}
	}
	return int32(best)
}

// TokenLogprob is a token and its log-probability.
type TokenLogprob struct {
	ID      int32
	Logprob float32
}

// Logprobs returns the log-probability of chosen under softmax(logits) and
// the topN most likely tokens.
func Logprobs(logits []float32, chosen int32, topN int) (TokenLogprob, []TokenLogprob) {
	maxL := logits[Argmax(logits)]
	sum := 0.0
	for _, l := range logits {
		sum += math.Exp(float64(l - maxL))
	}
	lse := float64(maxL) + math.Log(sum)
	lp := func(id int32) float32 { return float32(float64(logits[id]) - lse) }
	chosenLP := TokenLogprob{chosen, lp(chosen)}
	if topN <= 0 {
		return chosenLP, nil
	}
	topN = min(topN, len(logits))
	top := make([]TokenLogprob, 0, topN+1)
	for i, l := range logits {
		if len(top) < topN || l > logits[top[len(top)-1].ID] {
			top = append(top, TokenLogprob{ID: int32(i)})
			sort.SliceStable(top, func(a, b int) bool { return logits[top[a].ID] > logits[top[b].ID] })
			if len(top) > topN {
				top = top[:topN]
			}
		}
	}
	for i := range top {
		top[i].Logprob = lp(top[i].ID)
	}
	return chosenLP, top
}
