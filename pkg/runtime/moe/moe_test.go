package moe_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/formats/pack"
	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime"
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

// TestPackedExpertsContiguous: bound from a packed file, each expert's
// gate, up and down matrices of every block lie one after the other (each
// at the next multiple of 64 bytes), the gate on a page of its own, the
// next expert's gate one page-rounded slot later, so that a token touches
// only its experts' pages; the matrices hold what the GGUF's stacks hold
// (ggml's layout) or the same experts repacked (LayoutR16), and shared
// experts stay ordinary tensors.
func TestPackedExpertsContiguous(t *testing.T) {
	env := model.Env{Pool: runtimetest.Pool(t, 1)}
	for _, arch := range []string{"olmoe", "qwen2moe", "granitemoe"} {
		for _, scheme := range []string{"Q4_K_M", "Q8_0"} {
			var buf bytes.Buffer
			if _, err := synth.Write(&buf, synth.Presets["golden-"+arch], arch, quantize.Schemes[scheme], 1); err != nil {
				t.Fatal(err)
			}
			g, err := gguf.Parse(buf.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			want := buildMoE(t, model.FromGGUF(g), env)
			for _, tier := range []pack.Tier{pack.TierGeneric, pack.TierAVX512VNNI} {
				t.Run(arch+"-"+scheme+"-"+tier.String(), func(t *testing.T) {
					b, err := pack.Bytes(context.Background(), g, pack.Options{Tier: tier})
					if err != nil {
						t.Fatal(err)
					}
					path := filepath.Join(t.TempDir(), "m"+pack.Ext)
					if err := os.WriteFile(path, b, 0o444); err != nil {
						t.Fatal(err)
					}
					pf, err := pack.Open(path) // a mapping: page-aligned, as served
					if err != nil {
						t.Fatal(err)
					}
					defer pf.Close()
					m := buildMoE(t, model.FromPack(pf), env)
					checkContiguous(t, m, want, tier == pack.TierGeneric)
					for l := range m.Config().Layers {
						for _, name := range []string{model.TFFNGateShexp, model.TFFNUpShexp, model.TFFNDownShexp} {
							if st, ok := pf.Tensor(model.Layer(name, l)); ok && st.Interleave != 0 {
								t.Errorf("%s interleaved with the routed experts", st.Name)
							}
						}
					}
				})
			}
		}
	}
}

func buildMoE(t *testing.T, src model.Source, env model.Env) *moe.Model {
	t.Helper()
	m, err := runtime.Build(src, env)
	if err != nil {
		t.Fatal(err)
	}
	mm, ok := m.(*moe.Model)
	if !ok {
		t.Fatalf("built a %T", m)
	}
	return mm
}

func checkContiguous(t *testing.T, m, want *moe.Model, sameBytes bool) {
	t.Helper()
	addr := func(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }
	up := func(n, a uintptr) uintptr { return (n + a - 1) / a * a }
	for l, blk := range m.Weights().Blocks {
		x, wx := &blk.MoE, &want.Weights().Blocks[l].MoE
		for e := range x.Gate {
			mats := []*model.Matrix{&x.Gate[e], &x.Up[e], &x.Down[e]}
			wmats := []*model.Matrix{&wx.Gate[e], &wx.Up[e], &wx.Down[e]}
			start := addr(mats[0].Data)
			if start%pack.PageAlign != 0 {
				t.Fatalf("block %d expert %d: gate at %#x, not on a page", l, e, start)
			}
			end := start
			for i, mat := range mats {
				if a := addr(mat.Data); a != up(end, pack.TensorAlign) {
					t.Fatalf("block %d expert %d: %s at %#x, want right after the previous matrix (%#x)", l, e, mat.Name, a, end)
				}
				end = addr(mat.Data) + uintptr(len(mat.Data))
				w := wmats[i]
				if mat.Type != w.Type || mat.Rows != w.Rows || mat.Cols != w.Cols || len(mat.Data) != layoutBytes(mat) {
					t.Fatalf("%s: %s %d×%d in %d bytes, the GGUF's %s %d×%d", mat.Name, mat.Type, mat.Rows, mat.Cols, len(mat.Data), w.Type, w.Rows, w.Cols)
				}
				if sameBytes && !bytes.Equal(mat.Data, w.Data) {
					t.Fatalf("%s differs from the GGUF's expert", mat.Name)
				}
			}
			if e+1 < len(x.Gate) {
				if next := addr(x.Gate[e+1].Data); next != up(end-start, pack.PageAlign)+start {
					t.Fatalf("block %d: expert %d at %#x, want one page-rounded slot after expert %d's (%#x)", l, e+1, next, e, up(end-start, pack.PageAlign)+start)
				}
			}
		}
	}
}

// layoutBytes is the size of mat in its layout.
func layoutBytes(mat *model.Matrix) int {
	n, _ := kernels.LayoutBytes(mat.Type, mat.Layout, mat.Rows, mat.Cols)
	return n
}
