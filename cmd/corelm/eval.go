package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/pkg/runtime/model"
)

func runEval(ctx context.Context, args []string) error {
	fs := newFlags("eval")
	path := fs.String("model", "", "model file (default: the embedded stories)")
	tokensS := fs.String("tokens", "", `token ids, space-separated ("1 2 3")`)
	out := fs.String("logits-out", "", "write logits here: little-endian float32 [n_tokens × n_vocab]")
	threads := fs.Int("threads", 0, "threads (default: the CPUs this process may use)")
	kvType := fs.String("kv-type", "f16", "KV cache type: f16, q8_0 (half the memory), or f32 (reference runs)")
	ctxLen := fs.Int("ctx", 0, "context length (default: the prompt length rounded up, at most the model's)")
	budgetS := fs.String("budget", "", "refuse to run when weights + KV cache + compute exceed this, e.g. 6GiB (default: no limit)")
	if err := fs.Parse(args); err != nil {
		return usagef("%v", err)
	}
	if *out == "" || *tokensS == "" {
		return usagef("usage: corelm eval --model MODEL --tokens \"ID ID ...\" --logits-out FILE")
	}
	ids, err := parseIDs(*tokensS)
	if err != nil {
		return usagef("--tokens: %v", err)
	}
	kt, err := kvcache.ParseType(*kvType)
	if err != nil {
		return usagef("--kv-type: %v", err)
	}
	var budget int64
	if *budgetS != "" {
		if budget, err = runtime.ParseBytes(*budgetS); err != nil {
			return usagef("--budget: %v", err)
		}
	}
	l, err := openModel(*path, *threads)
	if err != nil {
		return err
	}
	defer l.Close()
	if *ctxLen <= 0 {
		*ctxLen = max(256, len(ids))
	}
	opts := model.StateOptions{Context: *ctxLen, KVType: kt, Chunk: len(ids)}
	if err := runtime.CheckBudget(l.Model, runtime.WeightBytes(l.Source), opts, budget); err != nil {
		return err
	}
	logits, err := evalAll(l.Model, ids, opts)
	if err != nil {
		return err
	}
	return writeF32(*out, logits)
}

// evalAll runs ids as one batch and returns the logits of every position.
func evalAll(m model.Model, ids []int32, opts model.StateOptions) ([]float32, error) {
	st, err := m.NewState(opts)
	if err != nil {
		return nil, err
	}
	b := &model.Batch{Seqs: []model.SeqBatch{{State: st, Tokens: ids, Logits: len(ids)}}}
	if err := m.Forward(b); err != nil {
		return nil, err
	}
	return b.Seqs[0].Out, nil
}

func parseIDs(s string) ([]int32, error) {
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == ',' || r == '\n' || r == '\t' })
	if len(fields) == 0 {
		return nil, fmt.Errorf("no token ids")
	}
	ids := make([]int32, len(fields))
	for i, f := range fields {
		v, err := strconv.ParseInt(f, 10, 32)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("bad token id %q", f)
		}
		ids[i] = int32(v)
	}
	return ids, nil
}

func writeF32(path string, xs []float32) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	var b [4]byte
	for _, x := range xs {
		binary.LittleEndian.PutUint32(b[:], math.Float32bits(x))
		w.Write(b[:])
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
