package main

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/corelm/corelm/models"
	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/constrain"
	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/pkg/runtime/sample"
	"github.com/corelm/corelm/pkg/runtime/sched"
	"github.com/corelm/corelm/pkg/runtime/tokenizer"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// samplingFlags are the sampler's flags, shared by generate and chat.
type samplingFlags struct {
	temp, topP, minP, repeat float64
	topK                     int
	seed                     uint64
}

func (f *samplingFlags) bind(fs *flagSet) {
	def := sample.Defaults()
	fs.Float64Var(&f.temp, "temperature", decimal(def.Temperature), "sampling temperature; 0 = greedy")
	fs.IntVar(&f.topK, "top-k", def.TopK, "top-k (0 = off)")
	fs.Float64Var(&f.topP, "top-p", decimal(def.TopP), "top-p (1 = off)")
	fs.Float64Var(&f.minP, "min-p", decimal(def.MinP), "min-p (0 = off)")
	fs.Float64Var(&f.repeat, "repeat-penalty", decimal(def.RepeatPenalty), "repetition penalty (1 = off)")
	fs.Uint64Var(&f.seed, "seed", 0, "random seed (0 = random); the same seed and prompt give the same text")
}

// params are the sampler's parameters for a local generation; seed 0
// draws one.
func (f *samplingFlags) params() sample.Params {
	sp := sample.Defaults()
	sp.Temperature, sp.TopK, sp.TopP, sp.MinP = float32(f.temp), f.topK, float32(f.topP), float32(f.minP)
	sp.RepeatPenalty, sp.Seed = float32(f.repeat), f.seed
	if sp.Seed == 0 {
		sp.Seed = rand.Uint64()
	}
	return sp
}

// proto carries only the flags given on the command line, so that the
// server's defaults (the same sample.Defaults) apply to the rest.
func (f *samplingFlags) proto(fs *flagSet) *corelmv1.SamplingParams {
	set := setFlags(fs)
	sp := &corelmv1.SamplingParams{}
	ptr := func(x float64) *float32 { v := float32(x); return &v }
	if set["temperature"] {
		sp.Temperature = ptr(f.temp)
	}
	if set["top-k"] {
		k := int32(f.topK)
		sp.TopK = &k
	}
	if set["top-p"] {
		sp.TopP = ptr(f.topP)
	}
	if set["min-p"] {
		sp.MinP = ptr(f.minP)
	}
	if set["repeat-penalty"] {
		sp.RepetitionPenalty = ptr(f.repeat)
	}
	if f.seed != 0 {
		sp.Seed = &f.seed
	}
	return sp
}

// runFlags are how a model runs in this process; with --server they are
// the server's.
type runFlags struct {
	threads int
	ctx     int
	kvType  string
}

// runFlagNames are refused with --server.
var runFlagNames = []string{"threads", "ctx", "kv-type"}

func (f *runFlags) bind(fs *flagSet) {
	fs.IntVar(&f.threads, "threads", 0, "threads (default: the CPUs this process may use)")
	fs.IntVar(&f.ctx, "ctx", 4096, "context length")
	fs.StringVar(&f.kvType, "kv-type", "f16", "KV cache type: f16 or q8_0")
}

// modelFlags are the flags of a command that runs a model in this process
// or, with --server, on a server: generate and chat.
type modelFlags struct {
	path     string // --model: a file, or with --server a model id
	remote   remoteFlags
	sampling samplingFlags
	run      runFlags
}

func (f *modelFlags) bind(fs *flagSet) {
	fs.StringVar(&f.path, "model", "", "model file (default: the embedded "+models.Name+"); with --server, the model id (default: the one the server serves)")
	f.sampling.bind(fs)
	f.run.bind(fs)
	f.remote.bind(fs, 0)
}

// check refuses the run flags with --server.
func (f *modelFlags) check(fs *flagSet) error { return f.remote.check(fs, runFlagNames...) }

func runGenerate(ctx context.Context, args []string) error {
	fs := newFlags("generate")
	var mf modelFlags
	mf.bind(fs)
	prompt := fs.String("prompt", "", "prompt text")
	maxTokens := fs.Int("max-tokens", 128, "most tokens to generate")
	noBOS := fs.Bool("no-bos", false, "do not add the BOS token")
	special := fs.Bool("special", false, "parse control tokens written in the prompt (e.g. <|im_start|>)")
	verbose := fs.Bool("v", false, "print timings to stderr")
	var cf constraintFlags
	cf.bind(fs)
	if err := fs.Parse(args); err != nil {
		return usagef("%v", err)
	}
	if err := mf.check(fs); err != nil {
		return err
	}
	spec, err := cf.spec()
	if err != nil {
		return err
	}
	if mf.remote.server != "" {
		start := &corelmv1.GenerateStart{
			ModelId: mf.path, Prompt: &corelmv1.GenerateStart_Text{Text: *prompt},
			Sampling: mf.sampling.proto(fs), MaxTokens: int32(*maxTokens), ParseSpecial: *special,
			Constraint: constraintProto(spec),
		}
		if *noBOS {
			start.AddBos = new(bool)
		}
		return generateRemote(ctx, &mf.remote, start, *verbose)
	}
	kt, err := kvcache.ParseType(mf.run.kvType)
	if err != nil {
		return usagef("--kv-type: %v", err)
	}
	l, err := openModel(mf.path, mf.run.threads)
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
	var constraint sched.Constraint
	if spec != nil {
		g, err := constrain.Compile(*spec)
		if err != nil {
			return usagef("--%s: %v", strings.ReplaceAll(spec.Kind.String(), "_", "-"), err)
		}
		constraint = constrain.NewMatcher(g, constrain.TokenizerVocab(tok), nil)
	}
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	fmt.Fprint(out, *prompt)
	out.Flush()
	dec := tok.NewDecoder()
	sp := mf.sampling.params()
	res, err := runtime.Generate(ctx, l.Model, runtime.GenerateRequest{
		Prompt:     ids,
		MaxTokens:  *maxTokens,
		Sampling:   sp,
		IsEOG:      tok.IsEOG,
		Context:    mf.run.ctx,
		KVType:     kt,
		Constraint: constraint,
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
		fmt.Fprintf(os.Stderr, "%s; seed %d\n", timings(len(ids), len(res.Tokens), res.Prefill, res.Decode, res.Finish.String()), sp.Seed)
	}
	return nil
}

// generateRemote runs start on the server of rf: the prompt, then the text
// as it arrives, as the local command prints them.
func generateRemote(ctx context.Context, rf *remoteFlags, start *corelmv1.GenerateStart, verbose bool) error {
	r, err := rf.connect()
	if err != nil {
		return err
	}
	defer r.Close()
	if start.ModelId, err = r.modelID(ctx, start.ModelId); err != nil {
		return err
	}
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	// The prompt is echoed once the server has taken the request, so that
	// a refusal prints only the error.
	echoed := false
	echo := func() {
		if !echoed {
			out.WriteString(start.GetText())
			echoed = true
		}
	}
	fin, err := r.generate(ctx, start, func(text string) error {
		echo()
		out.WriteString(text)
		return out.Flush()
	})
	if err == nil {
		echo()
	}
	if echoed {
		fmt.Fprintln(out)
	}
	out.Flush()
	if err != nil {
		return err
	}
	if verbose {
		remoteTimings(fin)
	}
	return nil
}

// timings is -v's report: prompt and generated tokens with their time and
// rate.
func timings(prompt, generated int, prefill, decode time.Duration, finish string) string {
	return fmt.Sprintf("prompt %d tokens in %v (%.1f tok/s); generated %d tokens in %v (%.1f tok/s); finish: %s",
		prompt, prefill.Round(time.Microsecond), float64(prompt)/prefill.Seconds(),
		generated, decode.Round(time.Microsecond), float64(generated)/decode.Seconds(), finish)
}

// remoteTimings prints -v's line for a generation on a server, from its final
// frame, with the time it queued and the time to the first token.
func remoteTimings(fin *corelmv1.GenerateFinal) {
	u, t := fin.GetUsage(), fin.GetTimings()
	finish := strings.ToLower(strings.TrimPrefix(fin.GetFinishReason().String(), "FINISH_REASON_"))
	if s := fin.GetStopSequence(); s != "" {
		finish += " " + strconv.Quote(s)
	}
	fmt.Fprintf(os.Stderr, "%s; queued %v; first token after %v; %d prompt tokens cached\n",
		timings(int(u.GetPromptTokens()), int(u.GetCompletionTokens()), time.Duration(t.GetPrefillNs()), time.Duration(t.GetDecodeNs()), finish),
		time.Duration(t.GetQueueNs()).Round(time.Microsecond), time.Duration(t.GetTimeToFirstTokenNs()).Round(time.Microsecond), u.GetCachedTokens())
}

// decimal is x as the float64 of its shortest decimal form (0.8, not
// 0.800000011920929), so a flag shows the float32 default as written and
// gives it back exactly.
func decimal(x float32) float64 {
	f, _ := strconv.ParseFloat(strconv.FormatFloat(float64(x), 'g', -1, 32), 64)
	return f
}

// constraintFlags choose an output constraint: one of a JSON Schema, any
// JSON object, a GBNF grammar or a regex. Schema and grammar take their
// text, or @file to read it from a file.
type constraintFlags struct {
	schema, grammar, regex string
	object                 bool
}

func (c *constraintFlags) bind(fs *flagSet) {
	fs.StringVar(&c.schema, "json-schema", "", "constrain the output to JSON valid under this JSON Schema (text or @file)")
	fs.BoolVar(&c.object, "json-object", false, "constrain the output to a JSON object")
	fs.StringVar(&c.grammar, "grammar", "", "constrain the output to this GBNF grammar, start rule root (text or @file)")
	fs.StringVar(&c.regex, "regex", "", "constrain the output to match this regular expression")
}

// spec is the constraint asked for, nil for none.
func (c *constraintFlags) spec() (*constrain.Spec, error) {
	var specs []constrain.Spec
	read := func(flag, v string) (string, error) {
		if !strings.HasPrefix(v, "@") {
			return v, nil
		}
		b, err := os.ReadFile(v[1:])
		if err != nil {
			return "", usagef("--%s: %v", flag, err)
		}
		return string(b), nil
	}
	if c.schema != "" {
		text, err := read("json-schema", c.schema)
		if err != nil {
			return nil, err
		}
		specs = append(specs, constrain.Spec{Kind: constrain.JSONSchema, Text: text})
	}
	if c.object {
		specs = append(specs, constrain.Spec{Kind: constrain.JSONObject})
	}
	if c.grammar != "" {
		text, err := read("grammar", c.grammar)
		if err != nil {
			return nil, err
		}
		specs = append(specs, constrain.Spec{Kind: constrain.GBNF, Text: text})
	}
	if c.regex != "" {
		specs = append(specs, constrain.Spec{Kind: constrain.Regex, Text: c.regex})
	}
	switch len(specs) {
	case 0:
		return nil, nil
	case 1:
		return &specs[0], nil
	}
	return nil, usagef("give at most one of --json-schema, --json-object, --grammar and --regex")
}

// constraintProto is spec on the wire (nil for none).
func constraintProto(spec *constrain.Spec) *corelmv1.OutputConstraint {
	if spec == nil {
		return nil
	}
	switch spec.Kind {
	case constrain.JSONSchema:
		return &corelmv1.OutputConstraint{Kind: &corelmv1.OutputConstraint_JsonSchema{JsonSchema: spec.Text}}
	case constrain.JSONObject:
		return &corelmv1.OutputConstraint{Kind: &corelmv1.OutputConstraint_JsonObject{JsonObject: true}}
	case constrain.GBNF:
		return &corelmv1.OutputConstraint{Kind: &corelmv1.OutputConstraint_Grammar{Grammar: spec.Text}}
	}
	return &corelmv1.OutputConstraint{Kind: &corelmv1.OutputConstraint_Regex{Regex: spec.Text}}
}
