package server

import (
	"testing"

	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// TestCachedTokens: a second request resending the first one's prompt and
// more reports the shared prefix as cached tokens in its usage, generates
// what an opted-out request (cache: false) generates, and the opted-out
// request reports none.
func TestCachedTokens(t *testing.T) {
	client, _ := serveInProcess(t, Options{Threads: 1})
	temp := float32(0)
	story := "Once upon a time there was a little girl who lived in a village near the forest. She liked to play with her dog every day."
	gen := func(text string, cache *bool) (*corelmv1.GenerateFinal, string) {
		t.Helper()
		stream, err := client.GenerateStream(t.Context(), &corelmv1.GenerateStart{
			ModelId: "stories", MaxTokens: 12, Sampling: &corelmv1.SamplingParams{Temperature: &temp},
			Prompt: &corelmv1.GenerateStart_Text{Text: text}, Cache: cache,
		})
		if err != nil {
			t.Fatal(err)
		}
		var out string
		var final *corelmv1.GenerateFinal
		for {
			resp, err := stream.Recv()
			if err != nil {
				break
			}
			out += resp.GetToken().GetText()
			if f := resp.GetFinal(); f != nil {
				final = f
			}
		}
		if final == nil {
			t.Fatal("no final frame")
		}
		return final, out
	}
	first, _ := gen(story, nil)
	if c := first.GetUsage().GetCachedTokens(); c != 0 {
		t.Errorf("first request: %d cached tokens", c)
	}
	more := story + " One day the dog ran away."
	off := false
	plain, want := gen(more, &off)
	if c := plain.GetUsage().GetCachedTokens(); c != 0 {
		t.Errorf("cache: false: %d cached tokens", c)
	}
	again, got := gen(more, nil)
	if c := again.GetUsage().GetCachedTokens(); c < first.GetUsage().GetPromptTokens()-1 {
		t.Errorf("resent prompt: %d cached tokens, want at least %d", c, first.GetUsage().GetPromptTokens()-1)
	}
	t.Logf("%d of %d prompt tokens cached; %q", again.GetUsage().GetCachedTokens(), again.GetUsage().GetPromptTokens(), got)
	if got != want || got == "" {
		t.Errorf("with the cache %q, without %q", got, want)
	}
}
