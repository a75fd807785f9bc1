package synth_test

import (
	"bytes"
	"testing"

	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/quantize"
	"github.com/corelm/corelm/pkg/runtime/synth"
)

func TestTinyModelRuns(t *testing.T) {
	for _, typ := range []string{"Q4_K_M", "Q8_0", "F16"} {
		t.Run(typ, func(t *testing.T) {
			scheme, _ := quantize.ParseScheme(typ)
			var buf bytes.Buffer
			if _, err := synth.Write(&buf, synth.Presets["tiny-llama"], "tiny", scheme, 1); err != nil {
				t.Fatal(err)
			}
			pool := kernels.NewPool(1)
			defer pool.Close()
			l, err := runtime.ParseGGUF(buf.Bytes(), model.Env{Pool: pool})
			if err != nil {
				t.Fatalf("synthetic model does not validate: %v", err)
			}
			st, err := l.Model.NewState(model.StateOptions{Context: 64})
			if err != nil {
				t.Fatal(err)
			}
			b := &model.Batch{Seqs: []model.SeqBatch{{State: st, Tokens: []int32{1, 300, 301}, Logits: 1}}}
			if err := l.Model.Forward(b); err != nil {
				t.Fatal(err)
			}
			for _, x := range b.Seqs[0].Out {
				if x != x {
					t.Fatal("NaN logit")
				}
			}
		})
	}
}

func TestPresetsAreConsistent(t *testing.T) {
	for name, s := range synth.Presets {
		hd := s.Dim / s.Heads
		if s.HeadDim > 0 {
			hd = s.HeadDim
		}
		if s.Heads%s.KVHeads != 0 || hd%32 != 0 || s.Dim%32 != 0 || s.FFN%32 != 0 {
			t.Errorf("%s: inconsistent shape %+v", name, s)
		}
	}
}
