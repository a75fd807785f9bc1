package pack

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"

	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/kernels"
)

// TestExpertStacks: a 3-D stack of experts' matrices whose each matrix has
// a LayoutR16 form is packed in it for AVX-512 VNNI, expert by expert, so
// that expert e's bytes are its own matrix repacked and start at e times
// one expert's size; a stack whose experts are not whole 16-row groups
// keeps ggml's layout.
func TestExpertStacks(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	tensor := func(dt kernels.DType, cols, rows, n int) []byte {
		rb, _ := dt.RowBytes(cols)
		out := make([]byte, 0, rb*rows*n)
		f := make([]float32, cols)
		row := make([]byte, rb)
		for range rows * n {
			for i := range f {
				f[i] = float32(rng.NormFloat64())
			}
			kernels.Quantize(dt, f, row)
			out = append(out, row...)
		}
		return out
	}
	w := gguf.NewWriter(3)
	w.AddKV("general.architecture", gguf.Str("olmoe"))
	tests := []struct {
		name          string
		dt            kernels.DType
		cols, rows, n int
		want          Layout
	}{
		{"blk.0.ffn_up_exps.weight", kernels.Q4_K, 256, 32, 3, LayoutR16},
		{"blk.0.ffn_down_exps.weight", kernels.Q8_0, 64, 48, 5, LayoutR16},
		{"blk.0.ffn_gate_exps.weight", kernels.Q8_0, 64, 8, 4, LayoutGGML}, // 8 rows per expert
	}
	src := map[string][]byte{}
	for _, tt := range tests {
		src[tt.name] = tensor(tt.dt, tt.cols, tt.rows, tt.n)
		w.AddTensor(tt.name, tt.dt, []uint64{uint64(tt.cols), uint64(tt.rows), uint64(tt.n)}, src[tt.name])
	}
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	g, err := gguf.Parse(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	packed, err := Bytes(context.Background(), g, Options{Tier: TierAVX512VNNI})
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse(packed)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Verify(); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		pt, ok := f.Tensor(tt.name)
		if !ok {
			t.Fatalf("%s missing", tt.name)
		}
		if pt.Layout != tt.want {
			t.Errorf("%s in layout %s, want %s", tt.name, pt.Layout, tt.want)
			continue
		}
		data := f.TensorData(pt)
		if tt.want == LayoutGGML {
			if !bytes.Equal(data, src[tt.name]) {
				t.Errorf("%s: ggml layout changed the bytes", tt.name)
			}
			continue
		}
		one, _ := kernels.LayoutBytes(tt.dt, kernels.LayoutR16, tt.rows, tt.cols)
		rb, _ := tt.dt.RowBytes(tt.cols)
		if len(data) != one*tt.n {
			t.Fatalf("%s: %d bytes, want %d experts of %d", tt.name, len(data), tt.n, one)
		}
		for e := 0; e < tt.n; e++ {
			want := make([]byte, one)
			kernels.RepackR16(tt.dt, want, src[tt.name][e*tt.rows*rb:(e+1)*tt.rows*rb], tt.cols)
			if !bytes.Equal(data[e*one:(e+1)*one], want) {
				t.Errorf("%s: expert %d is not its own matrix in LayoutR16", tt.name, e)
			}
		}
	}
}
