package server

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/corelm/corelm/internal/jaegertest"
	"github.com/corelm/corelm/internal/servicetest"
	"github.com/corelm/corelm/models"
	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/formats/pack"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/tokenizer"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
	"github.com/corelm/corelm/services/internal/telemetry"
)

// BenchmarkTraceLevels is the cost of tracing where it matters: decode
// tok/s of a served generation at each trace level, side by side in one
// run. Every generation is sampled (a sampled client traceparent, the
// always_on sampler) and its spans are exported over OTLP to a live
// collector: a real Jaeger (jaegertest), or CORELM_BENCH_OTLP. Each round
// runs one generation per level, the order rotating from round to round,
// so that drift in the machine's speed falls on every level alike; b.N is
// the number of rounds. Reported: each level's median decode tok/s, and
// its ratio to off (the median of the rounds' ratios to the same round's
// off).
//
//	CORELM_BENCH_MODEL=/mnt/hp/l8b.clm go test -run - -bench TraceLevels -benchtime 7x -timeout 1h ./services/inference/server
//
// CORELM_BENCH_MODEL is a packed or GGUF file (default: the embedded
// stories model), CORELM_BENCH_TOKENS the tokens per generation (32),
// CORELM_BENCH_PROMPT the prompt tokens (16).
func BenchmarkTraceLevels(b *testing.B) {
	file := cmp.Or(os.Getenv("CORELM_BENCH_MODEL"), EmbeddedModel)
	tokens := envInt(b, "CORELM_BENCH_TOKENS", 32)
	promptLen := envInt(b, "CORELM_BENCH_PROMPT", 16)
	endpoint := os.Getenv("CORELM_BENCH_OTLP")
	if endpoint == "" {
		endpoint = jaegertest.Start(b).OTLPEndpoint()
	}
	env := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_TRACES_SAMPLER": "always_on", "OTEL_METRICS_EXPORTER": "none"}
	tel, err := telemetry.Setup(context.Background(), telemetry.Options{ServiceName: "corelm-bench", Getenv: func(k string) string { return env[k] }})
	if err != nil {
		b.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	conn, _ := servicetest.Serve(b, func(ctx context.Context, lis net.Listener) error {
		return Serve(ctx, lis, Config{ModelFile: file, ModelID: "bench", Grace: time.Minute,
			Options: Options{MaxSeqs: 1, Tracing: Tracing{Telemetry: tel, Level: telemetry.LevelOff, Max: telemetry.LevelLayer}}})
	})
	client := corelmv1.NewInferenceServiceClient(conn)

	// A fixed prompt of token ids, and the end-of-generation tokens
	// banned, so that every generation decodes exactly tokens tokens.
	eog, vocab := endTokens(b, file)
	prompt := make([]int32, promptLen)
	for i := range prompt {
		prompt[i] = int32(1 + (i*7919)%(vocab-1))
	}
	bias := map[int32]float32{}
	for _, id := range eog {
		bias[id] = -1e9
	}
	temp := float32(0)
	req := &corelmv1.GenerateStart{ModelId: "bench", MaxTokens: int32(tokens),
		Prompt:   &corelmv1.GenerateStart_TokenIds{TokenIds: &corelmv1.TokenIds{Ids: prompt}},
		Sampling: &corelmv1.SamplingParams{Temperature: &temp, LogitBias: bias}}
	n := 0
	decode := func(level telemetry.Level) float64 {
		n++
		tp := fmt.Sprintf("00-%032x-%016x-01", n, n)
		ctx := metadata.AppendToOutgoingContext(context.Background(), "traceparent", tp, telemetry.MetadataKey, level.String())
		stream, err := client.GenerateStream(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		final := lastFinal(stream)
		if final == nil || final.GetErrorCode() != 0 || final.GetUsage().GetCompletionTokens() != int32(tokens) {
			b.Fatalf("generation at %s ended with %v", level, final)
		}
		return float64(tokens-1) / time.Duration(final.GetTimings().GetDecodeNs()).Seconds()
	}

	levels := []telemetry.Level{telemetry.LevelOff, telemetry.LevelRequest, telemetry.LevelStep, telemetry.LevelLayer}
	decode(telemetry.LevelOff) // faults the weights in
	rates := make([][]float64, len(levels))
	b.ResetTimer()
	for round := range b.N {
		got := make([]float64, len(levels))
		for k := range levels {
			i := (round + k) % len(levels)
			got[i] = decode(levels[i])
		}
		for i := range levels {
			rates[i] = append(rates[i], got[i])
		}
	}
	b.StopTimer()
	if err := tel.ForceFlush(context.Background()); err != nil {
		b.Error(err)
	}
	if d := tel.DroppedSpans(); d != 0 {
		b.Errorf("%d spans dropped", d)
	}
	var table strings.Builder
	fmt.Fprintf(&table, "decode tok/s of %s, %d tokens after a %d-token prompt, %d rounds:\n", file, tokens, promptLen, b.N)
	fmt.Fprintf(&table, "%-8s %10s %8s  %s\n", "level", "median", "vs off", "rounds")
	for i, l := range levels {
		ratios := make([]float64, b.N)
		for r := range ratios {
			ratios[r] = rates[i][r] / rates[0][r]
		}
		med, ratio := median(rates[i]), median(ratios)
		b.ReportMetric(med, l.String()+"-tok/s")
		if i > 0 {
			b.ReportMetric(ratio, l.String()+"/off")
		}
		rounds := make([]string, len(rates[i]))
		for r, v := range rates[i] {
			rounds[r] = strconv.FormatFloat(v, 'f', 2, 64)
		}
		fmt.Fprintf(&table, "%-8s %10.3f %8.4f  %s\n", l, med, ratio, strings.Join(rounds, " "))
	}
	if b.N > 1 { // the framework's first, one-round run is not worth a table
		fmt.Println(table.String()) // b.Log truncates a benchmark's output
	}
}

// endTokens are the end-of-generation token ids of a model file, and its
// vocabulary size.
func endTokens(b *testing.B, file string) ([]int32, int) {
	var src model.Source
	if file == EmbeddedModel {
		f, err := gguf.Parse(models.Stories)
		if err != nil {
			b.Fatal(err)
		}
		src = model.FromGGUF(f)
	} else if pf, err := pack.Open(file); err == nil {
		defer pf.Close()
		src = model.FromPack(pf)
	} else {
		f, err := gguf.Open(file)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		src = model.FromGGUF(f)
	}
	tok, err := tokenizer.New(src)
	if err != nil {
		b.Fatal(err)
	}
	var ids []int32
	for id := range int32(tok.VocabSize()) {
		if tok.IsEOG(id) {
			ids = append(ids, id)
		}
	}
	return ids, tok.VocabSize()
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return math.NaN()
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func envInt(b *testing.B, key string, def int) int {
	v := os.Getenv(key)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive integer", key, v)
	}
	return n
}
