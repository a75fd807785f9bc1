// Command k8sclient is a Go client of corelm's inference service on
// Kubernetes (deploy/k8s): it resolves the headless Service's DNS name to
// the address of every ready pod and balances calls over them, one call at
// a time, with gRPC's round_robin — a ClusterIP Service would pin each
// HTTP/2 connection, and so every call on it, to one pod.
//
//	go run ./examples/k8sclient --target dns:///corelm-inference-headless.NAMESPACE.svc.cluster.local:7071 \
//	    --model llama --prompt "Once upon a time" --n 4
//
// Each generation's text is printed as it completes. A pod that is not
// ready (its model still loading) is not in DNS; a call that reaches one
// anyway gets UNAVAILABLE, which the retry policy below retries.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// serviceConfig balances calls round robin over every address the name
// resolves to, and retries a call refused as UNAVAILABLE (a pod stopping,
// or one whose model is loading) on another.
const serviceConfig = `{
  "loadBalancingConfig": [{"round_robin": {}}],
  "methodConfig": [{
    "name": [{"service": "corelm.v1.InferenceService"}],
    "retryPolicy": {
      "maxAttempts": 4, "initialBackoff": "0.5s", "maxBackoff": "5s", "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]
}`

// Dial connects to every address target resolves to. Target is a gRPC name:
// dns:///corelm-inference-headless.NAMESPACE.svc.cluster.local:7071 in a
// cluster.
func Dial(target string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	return grpc.NewClient(target, append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(serviceConfig),
	}, opts...)...)
}

// Generate streams one generation and returns its text.
func Generate(ctx context.Context, c corelmv1.InferenceServiceClient, model, prompt string, maxTokens int32) (string, error) {
	stream, err := c.GenerateStream(ctx, &corelmv1.GenerateStart{ModelId: model,
		Prompt: &corelmv1.GenerateStart_Text{Text: prompt}, MaxTokens: maxTokens})
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return b.String(), nil
		}
		if err != nil {
			return b.String(), err
		}
		b.WriteString(resp.GetToken().GetText())
		b.WriteString(resp.GetFinal().GetText()) // held back to the end
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("k8sclient", flag.ContinueOnError)
	target := fs.String("target", "dns:///corelm-inference-headless.default.svc.cluster.local:7071", "the headless Service's name, as a gRPC target")
	model := fs.String("model", "llama", "model id")
	prompt := fs.String("prompt", "Once upon a time", "prompt text")
	maxTokens := fs.Int("max-tokens", 32, "tokens to generate per call")
	n := fs.Int("n", 4, "generations, one after another (round robin sends them to the pods in turn)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cc, err := Dial(*target)
	if err != nil {
		return err
	}
	defer cc.Close()
	client := corelmv1.NewInferenceServiceClient(cc)
	for i := range *n {
		text, err := Generate(ctx, client, *model, *prompt, int32(*maxTokens))
		if err != nil {
			return fmt.Errorf("generation %d: %w", i+1, err)
		}
		fmt.Fprintf(out, "%d: %s%s\n", i+1, *prompt, text)
	}
	return nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "k8sclient:", err)
		os.Exit(1)
	}
}
