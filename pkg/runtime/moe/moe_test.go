package moe_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/runtime/internal/runtimetest"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/moe"
	"github.com/corelm/corelm/pkg/runtime/quantize"
	"github.com/corelm/corelm/pkg/runtime/synth"
)

// patched overrides some unsigned metadata of a source.
type patched struct {
	model.Source
	uints map[string]uint64
}

func (p patched) Uint(key string) (uint64, bool) {
	if v, ok := p.uints[key]; ok {
		return v, true
	}
	return p.Source.Uint(key)
}

// TestBuildRejects: expert counts that contradict each other or the
// tensors are invalid models, with a message naming what is wrong.
func TestBuildRejects(t *testing.T) {
	var buf bytes.Buffer
	if _, err := synth.Write(&buf, synth.Presets["golden-olmoe"], "olmoe", quantize.Schemes["Q8_0"], 1); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Parse(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	src := model.FromGGUF(f)
	env := model.Env{Pool: runtimetest.Pool(t, 1)}
	opts := moe.Options{NeoX: true, QKNorm: true}
	if _, err := moe.Build(src, "olmoe", opts, env); err != nil {
		t.Fatalf("the unpatched model: %v", err)
	}
	tests := []struct {
		name  string
		uints map[string]uint64
		want  string
	}{
		{"no experts", map[string]uint64{"olmoe.expert_count": 0}, "expert_count 0"},
		{"more used than there are", map[string]uint64{"olmoe.expert_used_count": 9}, "expert_used_count 9"},
		{"too many for llama.cpp", map[string]uint64{"olmoe.expert_count": 513}, "≤ 512"},
		{"count disagrees with the tensors", map[string]uint64{"olmoe.expert_count": 4}, "shape"},
		{"width disagrees with the tensors", map[string]uint64{"olmoe.feed_forward_length": 512}, "ffn_gate_exps"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := moe.Build(patched{src, tt.uints}, "olmoe", opts, env)
			if !errors.Is(err, model.ErrInvalidModel) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an invalid model mentioning %q", err, tt.want)
			}
		})
	}
}
