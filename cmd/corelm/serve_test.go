package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/corelm/corelm/models"
	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/tokenizer"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// TestServeAll runs `corelm serve-all` as a process with its defaults (the
// embedded model, temporary source and shared-memory directories), streams
// a greedy generation through the loader-published model, then stops it
// with SIGTERM: it must exit 0 and remove its temporary directories.
func TestServeAll(t *testing.T) {
	addr := freeAddr(t)
	cmd := cli(t.Context(), "serve-all", "--listen", addr, "--max-seqs", "2")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The banner names the shared-memory directory; the rest is logged on
	// failure.
	shmDir := make(chan string, 1)
	var logs strings.Builder
	logsDone := make(chan struct{})
	go func() {
		defer close(logsDone)
		banner := regexp.MustCompile(`packed files in (\S+)\)`)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
			if m := banner.FindStringSubmatch(sc.Text()); m != nil {
				shmDir <- m[1]
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	exited := false
	t.Cleanup(func() {
		if !exited {
			cmd.Process.Kill()
			<-logsDone
			cmd.Wait()
		}
		if t.Failed() {
			t.Logf("serve-all logs:\n%s", logs.String())
		}
	})

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, MaxDelay: time.Second}}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	waitHealthServing(ctx, t, conn)

	const text = "Once upon a time"
	prompt, want := greedyReference(t, text, 32)
	temp := float32(0)
	stream, err := corelmv1.NewInferenceServiceClient(conn).GenerateStream(ctx, &corelmv1.GenerateStart{
		ModelId: storiesID, Prompt: &corelmv1.GenerateStart_Text{Text: text}, MaxTokens: 32,
		Sampling: &corelmv1.SamplingParams{Temperature: &temp},
	})
	if err != nil {
		t.Fatal(err)
	}
	var ids []int32
	var final *corelmv1.GenerateFinal
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch f := resp.GetFrame().(type) {
		case *corelmv1.GenerateResponse_Token:
			if final != nil {
				t.Fatal("a token after the final frame")
			}
			ids = append(ids, f.Token.GetId())
		case *corelmv1.GenerateResponse_Final:
			final = f.Final
		}
	}
	if len(ids) == 0 || !slices.Equal(ids, want) {
		t.Errorf("streamed %v\nwant      %v", ids, want)
	}
	if u := final.GetUsage(); final == nil || u.GetPromptTokens() != int32(len(prompt)) || u.GetCompletionTokens() != int32(len(ids)) {
		t.Errorf("final frame %v; want usage prompt %d, completion %d", final, len(prompt), len(ids))
	}

	var shm string
	select {
	case shm = <-shmDir:
	case <-ctx.Done():
		t.Error("no banner naming the shared-memory directory")
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-logsDone
	err = cmd.Wait()
	exited = true
	if err != nil {
		t.Fatalf("serve-all after SIGTERM: %v", err)
	}
	if _, err := os.Stat(shm); shm != "" && !os.IsNotExist(err) {
		t.Errorf("temporary shared-memory directory %s left behind (%v)", shm, err)
	}
}

// freeAddr returns a loopback address with a port nobody listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().String()
}

// waitHealthServing blocks until the inference service's health says
// SERVING; the call waits for the server to listen.
func waitHealthServing(ctx context.Context, t *testing.T, conn *grpc.ClientConn) {
	t.Helper()
	hw, err := healthpb.NewHealthClient(conn).Watch(ctx,
		&healthpb.HealthCheckRequest{Service: corelmv1.InferenceService_ServiceDesc.ServiceName}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := hw.Recv()
		if err != nil {
			t.Fatalf("health watch: %v", err)
		}
		if resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
	}
}

// greedyReference is the prompt ids and the greedy continuation that
// runtime.Generate produces for text on the embedded model.
func greedyReference(t *testing.T, text string, maxTokens int) (prompt, toks []int32) {
	t.Helper()
	pool := kernels.NewPool(1)
	defer pool.Close()
	l, err := runtime.ParseGGUF(models.Stories260K, model.Env{Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.New(l.Source)
	if err != nil {
		t.Fatal(err)
	}
	if prompt, err = tok.Encode(text, tokenizer.EncodeOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = runtime.Generate(t.Context(), l.Model, runtime.GenerateRequest{Prompt: prompt, MaxTokens: maxTokens, IsEOG: tok.IsEOG},
		func(id int32) error { toks = append(toks, id); return nil })
	if err != nil {
		t.Fatal(err)
	}
	return prompt, toks
}
