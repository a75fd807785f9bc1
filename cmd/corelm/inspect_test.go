package main

import (
	"encoding/json"
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
