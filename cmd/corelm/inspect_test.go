package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
)

// TestInspectMemory: inspect's memory table is the service's plan — the
// context chosen within the budget (the trained one for the stories model)
// — and an explicit context that does not fit says so with the numbers.
func TestInspectMemory(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		context  int
		fits     bool
		errWords []string
	}{
		{"default: the trained context", []string{"--machine", "6GiB"}, 2048, true, nil},
		{"explicit context within the budget", []string{"--ctx", "1000", "--memory-budget", "1GiB"}, 1000, true, nil},
		{"a tiny budget", []string{"--memory-budget", "1MiB"}, 128, false, []string{"a context of 128", "budget 1.00 MiB", "leave no room"}},
		{"a tight budget: the largest context that fits", []string{"--memory-budget", "2MiB"}, 810, true, nil},
		{"explicit context over the budget", []string{"--ctx", "2048", "--memory-budget", "2800KiB"}, 2048, false,
			[]string{"a context of 2048", "the largest context that fits is"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := corelm(t, append([]string{"inspect", "--json"}, tt.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			var rep inspectReport
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatal(err)
			}
			if len(rep.Memory) == 0 || rep.File != "stories" {
				t.Fatalf("report of %q with %d memory rows", rep.File, len(rep.Memory))
			}
			row := rep.Memory[0] // f16; the stories model's heads are too narrow for q8_0
			if row.Context != tt.context || row.Fits != tt.fits || row.KVPerToken <= 0 || row.TotalBytes != row.WeightBytes+row.KVBytes+row.ComputeB {
				t.Errorf("row %+v, want context %d, fits %v", row, tt.context, tt.fits)
			}
			for _, w := range tt.errWords {
				if !strings.Contains(row.Error, w) {
					t.Errorf("error %q lacks %q", row.Error, w)
				}
			}
		})
	}
}

// TestInspectActiveBytes: for a mixture of experts the memory table shows
// what a token reads — the experts' tensors at used/count, the embedding's
// one row — next to the whole file, which is what the budget counts.
// The packed copy counts its experts, stored expert by expert, the same
// way.
func TestInspectActiveBytes(t *testing.T) {
	gguf := "../../pkg/runtime/testdata/golden/models/olmoe-Q4_K_M.gguf"
	packed := filepath.Join(t.TempDir(), "olmoe.clm")
	if _, errOut, code := corelm(t, "pack", gguf, packed); code != 0 {
		t.Fatalf("pack: exit %d: %s", code, errOut)
	}
	for _, tc := range []struct{ file, storage string }{{gguf, "stacks"}, {packed, "by_expert"}} {
		t.Run(filepath.Ext(tc.file), func(t *testing.T) { testInspectActiveBytes(t, tc.file, tc.storage) })
	}
}

func testInspectActiveBytes(t *testing.T, file, storage string) {
	out, errOut, code := corelm(t, "inspect", "--json", "--memory-budget", "1GiB", file)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rep inspectReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.ExpertStorage != storage {
		t.Errorf("experts stored as %q, want %q", rep.ExpertStorage, storage)
	}
	var experts, embd, rowsOfEmbd, all int64
	for _, tr := range rep.Tensors {
		all += tr.Bytes
		switch {
		case strings.HasSuffix(tr.Name, "_exps.weight"):
			experts += tr.Bytes
		case tr.Name == "token_embd.weight":
			embd, rowsOfEmbd = tr.Bytes, int64(tr.Shape[1])
		}
	}
	if all != rep.WeightBytes {
		t.Errorf("tensors of %d bytes in all, weights %d", all, rep.WeightBytes)
	}
	want := rep.WeightBytes - experts + experts*2/8 - embd + embd/rowsOfEmbd
	if rep.Experts != 8 || rep.ExpertsUsed != 2 || rep.ActiveBytes != want || experts == 0 {
		t.Errorf("%d of %d experts, %d active bytes per token; want 2 of 8, %d (experts' tensors %d bytes)", rep.ExpertsUsed, rep.Experts, rep.ActiveBytes, want, experts)
	}
	for _, m := range rep.Memory {
		if m.ActiveBytes != rep.ActiveBytes || m.WeightBytes != rep.WeightBytes || m.TotalBytes != m.WeightBytes+m.KVBytes+m.ComputeB {
			t.Errorf("memory row %+v: the budget must count the whole file (%d bytes), active %d", m, rep.WeightBytes, rep.ActiveBytes)
		}
	}
}

// TestGenerateMixtureOfExperts: `corelm generate --model` serves each
// mixture-of-experts architecture like any model, through its packed copy
// (the pack cache in a temporary directory) and the scheduler. The regex
// keeps the random-weight models from ending at once on an end-of-text
// token.
func TestGenerateMixtureOfExperts(t *testing.T) {
	for _, arch := range []string{"olmoe", "qwen2moe", "granitemoe"} {
		t.Run(arch, func(t *testing.T) {
			model := "../../pkg/runtime/testdata/golden/models/" + arch + "-Q4_K_M.gguf"
			out, errOut, code := corelmWith(t, "", []string{"CORELM_PACK_CACHE=" + t.TempDir()},
				"generate", "--model", model, "--temperature", "0", "--max-tokens", "6", "--regex", "[a-z]{6}", "-v", "--prompt", "hello")
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			if !strings.HasPrefix(out, "hello") || len(strings.TrimSpace(out)) != len("hello")+6 ||
				!strings.Contains(errOut, "packing") || !strings.Contains(errOut, "generated 6 tokens") {
				t.Errorf("stdout %q, stderr %q: want the prompt and 6 generated letters, the packing note and the timings", out, errOut)
			}
		})
	}
}
