package main

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"time"

	"github.com/corelm/corelm/models"
	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/pkg/runtime/sample"
	"github.com/corelm/corelm/pkg/runtime/tokenizer"
)

func runGenerate(ctx context.Context, args []string) error {
	fs := newFlags("generate")
	def := sample.Defaults()
	path := fs.String("model", "", "model file (default: the embedded "+models.Name+")")
	prompt := fs.String("prompt", "", "prompt text")
	maxTokens := fs.Int("max-tokens", 128, "most tokens to generate")
	temp := fs.Float64("temperature", decimal(def.Temperature), "sampling temperature; 0 = greedy")
	topK := fs.Int("top-k", def.TopK, "top-k (0 = off)")
	topP := fs.Float64("top-p", decimal(def.TopP), "top-p (1 = off)")
	minP := fs.Float64("min-p", decimal(def.MinP), "min-p (0 = off)")
	repeat := fs.Float64("repeat-penalty", decimal(def.RepeatPenalty), "repetition penalty (1 = off)")
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
	sp := def
	sp.Temperature, sp.TopK, sp.TopP, sp.MinP = float32(*temp), *topK, float32(*topP), float32(*minP)
	sp.RepeatPenalty, sp.Seed = float32(*repeat), *seed
	res, err := runtime.Generate(ctx, l.Model, runtime.GenerateRequest{
		Prompt:    ids,
		MaxTokens: *maxTokens,
		Sampling:  sp,
		IsEOG:     tok.IsEOG,
		Context:   *ctxLen,
		KVType:    kt,
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

// decimal is x as the float64 of its shortest decimal form (0.8, not
// 0.800000011920929), so a flag shows the float32 default as written and
// gives it back exactly.
func decimal(x float32) float64 {
	f, _ := strconv.ParseFloat(strconv.FormatFloat(float64(x), 'g', -1, 32), 64)
	return f
}
