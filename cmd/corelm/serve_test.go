package main

import (
	"os"
	"regexp"
	"slices"
	"testing"

	"github.com/corelm/corelm/internal/servicetest"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// banner is serve-all's line once it serves: the inference service's
// address and the shared-memory directory.
var banner = regexp.MustCompile(`(?m)^serving .* on (\S+) \(loader on \S+, packed files in (\S+)\)`)

// TestServeAll runs `corelm serve-all` as a process with its defaults (the
// embedded model, temporary source and shared-memory directories), streams
// a greedy generation through the loader-published model, then stops it
// with SIGTERM: it must exit 0 and remove its temporary directories.
func TestServeAll(t *testing.T) {
	p := servicetest.Start(t, cli(t.Context(), "serve-all", "--listen", "127.0.0.1:0", "--max-seqs", "2"),
		func(line string) (string, bool) {
			if m := banner.FindStringSubmatch(line); m != nil {
				return m[1], true
			}
			return "", false
		})
	shm := banner.FindStringSubmatch(p.Logs())
	servicetest.WaitServing(t, p.Conn, corelmv1.InferenceService_ServiceDesc.ServiceName)

	const text = "Once upon a time"
	prompt, want, _ := servicetest.Greedy(t, text, 32)
	temp := float32(0)
	stream, err := corelmv1.NewInferenceServiceClient(p.Conn).GenerateStream(t.Context(), &corelmv1.GenerateStart{
		ModelId: storiesID, Prompt: &corelmv1.GenerateStart_Text{Text: text}, MaxTokens: 32,
		Sampling: &corelmv1.SamplingParams{Temperature: &temp},
	})
	if err != nil {
		t.Fatal(err)
	}
	var ids []int32
	var final *corelmv1.GenerateFinal
	err = servicetest.RecvAll(stream.Recv, func(resp *corelmv1.GenerateResponse) {
		switch f := resp.GetFrame().(type) {
		case *corelmv1.GenerateResponse_Token:
			if final != nil {
				t.Error("a token after the final frame")
			}
			ids = append(ids, f.Token.GetId())
		case *corelmv1.GenerateResponse_Final:
			final = f.Final
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) == 0 || !slices.Equal(ids, want) {
		t.Errorf("streamed %v\nwant      %v", ids, want)
	}
	if u := final.GetUsage(); final == nil || u.GetPromptTokens() != int32(len(prompt)) || u.GetCompletionTokens() != int32(len(ids)) {
		t.Errorf("final frame %v; want usage prompt %d, completion %d", final, len(prompt), len(ids))
	}

	p.Stop(t)
	if _, err := os.Stat(shm[2]); !os.IsNotExist(err) {
		t.Errorf("temporary shared-memory directory %s left behind (%v)", shm[2], err)
	}
}
