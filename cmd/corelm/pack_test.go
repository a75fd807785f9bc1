package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/corelm/corelm/pkg/formats/pack"
)

// TestPackTier: `corelm pack --tier` writes the layouts of the tier asked
// for, whatever this host runs: LayoutR16 needing avx2 for avx2 and
// avx512vnni (one file for both), ggml's layout throughout for generic.
func TestPackTier(t *testing.T) {
	src := filepath.Join("..", "..", "pkg", "runtime", "testdata", "golden", "models", "llama-Q4_K_M.gguf")
	for _, tt := range []struct {
		tier string
		want pack.Tier
		r16  bool
	}{
		{"avx2", pack.TierAVX2, true},
		{"avx512vnni", pack.TierAVX2, true},
		{"generic", pack.TierGeneric, false},
	} {
		t.Run(tt.tier, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "m"+pack.Ext)
			if _, errOut, code := corelm(t, "pack", "--tier", tt.tier, src, out); code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			f, err := pack.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			r16 := false
			for _, pt := range f.Tensors {
				r16 = r16 || pt.Layout == pack.LayoutR16
			}
			if f.Tier != tt.want || r16 != tt.r16 {
				t.Errorf("file tier %v, LayoutR16 tensors: %v; want %v, %v", f.Tier, r16, tt.want, tt.r16)
			}
		})
	}
	if _, errOut, code := corelm(t, "pack", "--tier", "sse2", src, filepath.Join(t.TempDir(), "x"+pack.Ext)); code != 2 || !strings.Contains(errOut, "avx2") {
		t.Errorf("--tier sse2: exit %d, stderr %q; want 2 and the valid tiers", code, errOut)
	}
}
