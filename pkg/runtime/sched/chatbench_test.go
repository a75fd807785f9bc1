package sched

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/runtime/internal/runtimetest"
	"github.com/corelm/corelm/pkg/runtime/llama"
	"github.com/corelm/corelm/pkg/runtime/model"
)

// TestChatTTFT measures time to first token over a ten-turn chat in which
// each turn resends the whole history (as chat clients do) plus a new user
// message of 40 tokens, and the model answers 16 tokens: with the prefix
// cache and without. It runs only when CORELM_BENCH_CHAT is set, on the
// llama-family GGUF file it names ("tiny": the synthetic tiny llama).
func TestChatTTFT(t *testing.T) {
	which := os.Getenv("CORELM_BENCH_CHAT")
	if which == "" {
		t.Skip("set CORELM_BENCH_CHAT=tiny or a GGUF path to run")
	}
	var m model.Model
	if which == "tiny" {
		m = loadSynth(t)
	} else {
		raw, err := os.ReadFile(which)
		if err != nil {
			t.Fatal(err)
		}
		f, err := gguf.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if m, err = llama.New(model.FromGGUF(f), model.Env{Pool: runtimetest.Pool(t, 2)}); err != nil {
			t.Fatal(err)
		}
	}
	vocab := m.Config().Vocab
	chat := func(cache int64) (ttft [10]time.Duration, cached [10]int) {
		s := New(m, Config{MaxSeqs: 1, Context: 2048, CacheBudget: cache})
		defer shutdown(t, s)
		history := []int32{1}
		for turn := range 10 {
			for j := range 40 {
				history = append(history, int32(3+(turn*131+j*17)%(vocab-10)))
			}
			out := run(t, s, Request{Prompt: history, MaxTokens: 16})
			ttft[turn], cached[turn] = out.final.Timings.TTFT, out.final.Usage.CachedTokens
			history = append(history, out.toks...)
		}
		return ttft, cached
	}
	cold, _ := chat(0)
	warm, cached := chat(1 << 30)
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n| turn | prompt | cached | TTFT without | TTFT with | ratio |\n|---|---|---|---|---|---|\n")
	prompt := 1
	for i := range 10 {
		prompt += 40
		fmt.Fprintf(&sb, "| %d | %d | %d | %v | %v | %.1f× |\n", i+1, prompt, cached[i],
			cold[i].Round(time.Microsecond*100), warm[i].Round(time.Microsecond*100), float64(cold[i])/float64(warm[i]))
		prompt += 16
	}
	t.Log(sb.String())
}
