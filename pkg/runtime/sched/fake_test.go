package sched

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/corelm/corelm/pkg/runtime/model"
)

// fakeModel is a deterministic stand-in for a transformer: the next token
// depends on every token the sequence consumed, so any mix-up between
// sequences or a lost token shows in the output. It checks that Forward is
// never entered concurrently and can hold steps on a gate.
type fakeModel struct {
	cfg    model.Config
	mu     sync.Mutex
	sums   map[*model.State]int64
	inside atomic.Int32
	steps  atomic.Int64
	gate   chan struct{} // when non-nil, each Forward takes a value first
	fail   atomic.Bool
}

const fakeVocab = 64

func newFakeModel() *fakeModel {
	return &fakeModel{
		cfg:  model.Config{Arch: "fake", Context: 256, Dim: 8, Layers: 1, FFN: 8, Heads: 1, KVHeads: 1, HeadDim: 32, ValueDim: 32, Vocab: fakeVocab},
		sums: map[*model.State]int64{},
	}
}

func (m *fakeModel) Config() *model.Config { return &m.cfg }

func (m *fakeModel) NewState(opts model.StateOptions) (*model.State, error) {
	return model.NewState(&m.cfg, opts, nil)
}

func (m *fakeModel) KVBytes(opts model.StateOptions) int64 {
	return model.KVBytes(&m.cfg, opts, nil)
}

// blockBytes is the size of one KV block of the fake's cache.
func (m *fakeModel) blockBytes() int64 {
	g := model.CacheGeometry(&m.cfg, model.StateOptions{}, nil)
	return g.BlockBytes()
}

func (m *fakeModel) Forward(b *model.Batch) error {
	if m.inside.Add(1) != 1 {
		panic("fakeModel: concurrent Forward")
	}
	defer m.inside.Add(-1)
	if m.gate != nil {
		<-m.gate
	}
	m.steps.Add(1)
	if m.fail.Load() {
		return model.Invalidf("fake failure")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range b.Seqs {
		s := &b.Seqs[i]
		if err := s.State.CheckRoom(len(s.Tokens)); err != nil {
			return err
		}
		sum := m.sums[s.State]
		for _, t := range s.Tokens {
			sum = sum*31 + int64(t) + 7
			sum %= 1_000_003
		}
		m.sums[s.State] = sum
		s.State.Pos += len(s.Tokens)
		if s.Logits > 0 {
			if cap(s.Out) < fakeVocab {
				s.Out = make([]float32, fakeVocab)
			}
			s.Out = s.Out[:fakeVocab]
			clear(s.Out)
			s.Out[fakeNext(sum, s.State.Pos)] = 1
		}
	}
	return nil
}

// fakeNext never returns 0, so token 0 can serve as a stop token.
func fakeNext(sum int64, pos int) int {
	return int((sum*13+int64(pos))%(fakeVocab-1)) + 1
}

// letters decodes token t as the letter 'a'+t%26.
type letters struct{}

func (letters) Push(t int32) (string, []byte) {
	s := string(rune('a' + t%26))
	return s, []byte(s)
}
func (letters) Flush() string { return "" }

func lettersOf(toks []int32) string {
	var sb strings.Builder
	for _, t := range toks {
		sb.WriteString(string(rune('a' + t%26)))
	}
	return sb.String()
}

func testPrompt(seed, n int) []int32 {
	p := make([]int32, n)
	for i := range p {
		p[i] = int32((seed*17 + i*5 + 3) % fakeVocab)
	}
	return p
}

// soloFake runs req alone on a fresh fake model and returns its tokens.
func soloFake(t *testing.T, req Request) []int32 {
	t.Helper()
	s := New(newFakeModel(), Config{MaxSeqs: 1})
	defer s.Shutdown(t.Context())
	toks, _ := collect(t, s, req)
	return toks
}
