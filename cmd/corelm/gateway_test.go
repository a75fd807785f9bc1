package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/corelm/corelm/internal/servicetest"
)

// gatewayBanner is serve-all's line naming the HTTP gateway's address.
var gatewayBanner = regexp.MustCompile(`(?m)^OpenAI API on (http://\S+)/v1 `)

// TestServeAllGateway: serve-all runs the HTTP gateway in process on
// --http-listen: a greedy completion through it is the embedded model's.
func TestServeAllGateway(t *testing.T) {
	p, _ := startServeAll(t, "")
	// The gateway's line follows the banner Start waited for.
	var m []string
	for deadline := time.Now().Add(10 * time.Second); m == nil; time.Sleep(10 * time.Millisecond) {
		if m = gatewayBanner.FindStringSubmatch(p.Logs()); m == nil && time.Now().After(deadline) {
			t.Fatalf("no gateway banner in:\n%s", p.Logs())
		}
	}
	const text = "Once upon a time"
	_, _, want := servicetest.Greedy(t, text, 16)
	body, _ := json.Marshal(map[string]any{"model": "stories", "prompt": text, "max_tokens": 16, "temperature": 0})
	resp, err := http.Post(m[1]+"/v1/completions", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		Choices []struct {
			Text string `json:"text"`
		} `json:"choices"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != 200 || len(got.Choices) != 1 {
		t.Fatalf("%d %v %+v", resp.StatusCode, err, got)
	}
	if got.Choices[0].Text != want {
		t.Errorf("completion %q, want %q", got.Choices[0].Text, want)
	}
}
