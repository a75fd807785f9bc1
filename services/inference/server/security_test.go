package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/corelm/corelm/internal/servicetest"
	"github.com/corelm/corelm/internal/tlsconfig"
	"github.com/corelm/corelm/internal/tlsconfig/tlstest"
	"github.com/corelm/corelm/models"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
	loader "github.com/corelm/corelm/services/loader/server"
)

// TestLoaderMutualTLS: a loader that requires a client certificate and a
// bearer token serves an inference service that has both, end to end (the
// model is published, mapped and generates); a client without the token,
// or without a certificate, is refused (health needs the certificate
// but no token).
func TestLoaderMutualTLS(t *testing.T) {
	ca := tlstest.NewCA(t, "corelm")
	srvPair, cliPair := ca.Server("loader"), ca.Client("inference")
	serverTLS, err := tlsconfig.Server{Cert: srvPair.CertFile, Key: srvPair.KeyFile, ClientCA: ca.CertFile}.Config()
	if err != nil {
		t.Fatal(err)
	}
	clientTLS, err := tlsconfig.Client{CA: ca.CertFile, Cert: cliPair.CertFile, Key: cliPair.KeyFile}.Config()
	if err != nil {
		t.Fatal(err)
	}
	const token = "loader-s3cret"
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	src, shm := t.TempDir(), t.TempDir()
	path := filepath.Join(src, "stories.gguf")
	if err := os.WriteFile(path, models.Stories, 0o644); err != nil {
		t.Fatal(err)
	}
	loaderAddr := servicetest.ServeAt(t, func(ctx context.Context, lis net.Listener) error {
		return loader.Serve(ctx, lis, loader.Config{
			Options:   loader.Options{SourceDir: src, ShmDir: shm, Models: []loader.Model{{ID: "stories", Path: path}}, Logger: quiet},
			Grace:     5 * time.Second,
			AuthToken: token, TLS: serverTLS,
		})
	})

	dial := func(tc *tlsconfig.Client, token string) *grpc.ClientConn {
		t.Helper()
		c, err := tc.Config()
		if err != nil {
			t.Fatal(err)
		}
		opts := []grpc.DialOption{tlsconfig.DialOption(c)}
		if token != "" {
			opts = append(opts, grpc.WithPerRPCCredentials(tlsconfig.Bearer{Token: token, TLS: true}))
		}
		cc, err := grpc.NewClient(loaderAddr, opts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	withCert := &tlsconfig.Client{CA: ca.CertFile, Cert: cliPair.CertFile, Key: cliPair.KeyFile}
	// Health: certificate, no token.
	servicetest.WaitServing(t, dial(withCert, ""), "")
	list := func(cc *grpc.ClientConn) error {
		_, err := corelmv1.NewLoaderServiceClient(cc).ListModels(t.Context(), &corelmv1.LoaderServiceListModelsRequest{})
		return err
	}
	if err := list(dial(withCert, "")); status.Code(err) != codes.Unauthenticated {
		t.Errorf("ListModels without the token: %v, want Unauthenticated", err)
	}
	if err := list(dial(withCert, "wrong")); status.Code(err) != codes.Unauthenticated {
		t.Errorf("ListModels with a wrong token: %v, want Unauthenticated", err)
	}
	if err := list(dial(&tlsconfig.Client{CA: ca.CertFile}, token)); status.Code(err) != codes.Unavailable {
		t.Errorf("ListModels without a client certificate: %v, want refused (Unavailable)", err)
	}
	if _, err := healthpb.NewHealthClient(dial(&tlsconfig.Client{CA: ca.CertFile}, "")).Check(t.Context(), &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("health without a client certificate: %v, want refused (Unavailable)", err)
	}

	conn, _ := servicetest.Serve(t, func(ctx context.Context, lis net.Listener) error {
		return Serve(ctx, lis, Config{Loader: loaderAddr, LoaderTLS: clientTLS, LoaderToken: token,
			Grace: 5 * time.Second, Options: Options{Threads: 1, Logger: quiet}})
	})
	gctx, gcancel := context.WithTimeout(t.Context(), time.Minute)
	defer gcancel()
	s, err := corelmv1.NewInferenceServiceClient(conn).GenerateStream(gctx, &corelmv1.GenerateStart{ModelId: "stories", MaxTokens: 3,
		Prompt: &corelmv1.GenerateStart_Text{Text: "Once upon a time"}})
	if err != nil {
		t.Fatal(err)
	}
	if f := lastFinal(s); f == nil || f.GetUsage().GetCompletionTokens() != 3 {
		t.Fatalf("generation over the mTLS loader link: final %v", f)
	}
}

// TestPromptLimitWithinMessageLimit: a --max-prompt-bytes that no message
// under --max-recv-msg-size could carry is a configuration error.
func TestPromptLimitWithinMessageLimit(t *testing.T) {
	c := Config{Options: Options{MaxPromptBytes: 8 << 20}}
	if err := c.LoadTLS(); err == nil {
		t.Error("8 MiB prompts under the 4 MiB default message limit: accepted")
	}
	c.Limits.MaxRecvMsgSize = 16 << 20
	if err := c.LoadTLS(); err != nil {
		t.Errorf("8 MiB prompts under a 16 MiB message limit: %v", err)
	}
}
