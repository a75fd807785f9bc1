package main

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/pkg/runtime/sample"
	"github.com/corelm/corelm/pkg/runtime/tokenizer"
)

func runGenerate(ctx context.Context, args []string) error {
	fs := newFlags("generate")
	path := fs.String("model", "", "model file (default: the embedded stories260K)")
	prompt := fs.String("prompt", "", "prompt text")
	maxTokens := fs.Int("max-tokens", 128, "most tokens to generate")
	temp := fs.Float64("temperature", 0.8, "sampling temperature; 0 = greedy")
	topK := fs.Int("top-k", 40, "top-k (0 = off)")
	topP := fs.Float64("top-p", 0.95, "top-p (1 = off)")
	minP := fs.Float64("min-p", 0.05, "min-p (0 = off)")
	repeat := fs.Float64("repeat-penalty", 1.0, "repetition penalty (1 = off)")
	seed := fs.Uint64("seed", 0, "random seed (0 = random); the same seed and prompt give the same text")
	threads := fs.Int("threads", 0, "threads (default: the CPUs this process may use)")
	ctxLen := fs.Int("ctx", 4096, "context length")
	kvType := fs.String("kv-type", "f16", "KV cache type: f16 or q8_0")
	noBOS := fs.Bool("no-bos", false, "do not add the BOS token")
	special := fs.Bool("special", false, "parse control tokens written in the prompt (e.g. <|im_start|>)")
	verbose := fs.Bool("v", false, "print timings to stderr")
	if err := fs.Parse(args); err != nil {
		return usagef("%v", err)
	}
	kt, err := kvcache.ParseType(*kvType)
	if err != nil {
		return usagef("--kv-type: %v", err)
	}
	l, err := openModel(*path, *threads)
	if err != nil {
		return err
	}
	defer l.Close()
	tok, err := tokenizer.New(l.Source)
	if err != nil {
		return err
	}
	opts := tokenizer.EncodeOptions{ParseSpecial: *special}
	if *noBOS {
		opts.AddBOS = tokenizer.BOSNone
	}
	ids, err := tok.Encode(*prompt, opts)
	if err != nil {
		return err
	}
	if len(ids) == 0 {
		return usagef("the prompt is empty and the model adds no BOS token: give --prompt")
	}
	if *seed == 0 {
		*seed = rand.Uint64()
	}
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	fmt.Fprint(out, *prompt)
	out.Flush()
	dec := tok.NewDecoder()
	res, err := runtime.Generate(ctx, l.Model, runtime.GenerateRequest{
		Prompt:    ids,
		MaxTokens: *maxTokens,
		Sampling: sample.Params{
			Temperature: float32(*temp), TopK: *topK, TopP: float32(*topP), MinP: float32(*minP),
			RepeatPenalty: float32(*repeat), Seed: *seed,
		},
		IsEOG:   tok.IsEOG,
		Context: *ctxLen,
		KVType:  kt,
	}, func(id int32) error {
		text, _ := dec.Push(id)
		fmt.Fprint(out, text)
		return out.Flush()
	})
	fmt.Fprint(out, dec.Flush())
	fmt.Fprintln(out)
	out.Flush()
	if err != nil {
		return err
	}
	if *verbose {
		n := len(res.Tokens)
		fmt.Fprintf(os.Stderr, "prompt %d tokens in %v (%.1f tok/s); generated %d tokens in %v (%.1f tok/s); finish: %s; seed %d\n",
			len(ids), res.Prefill.Round(time.Microsecond), float64(len(ids))/res.Prefill.Seconds(),
			n, res.Decode.Round(time.Microsecond), float64(n)/res.Decode.Seconds(), res.Finish, *seed)
	}
	return nil
}
