package grpcserver

import (
	"log/slog"
	"strings"
	"testing"

	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/corelm/corelm/internal/syncbuf"
)

// TestProbesLogAtDebug: health checks and reflection calls log their
// "finished call" line at debug, other calls at info.
func TestProbesLogAtDebug(t *testing.T) {
	var logs syncbuf.Buffer
	s, cc, _ := start(t, Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	s.SetServing()
	healthOf(t, cc, "")
	stream, err := grpc_reflection_v1.NewServerReflectionClient(cc).ServerReflectionInfo(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&grpc_reflection_v1.ServerReflectionRequest{
		MessageRequest: &grpc_reflection_v1.ServerReflectionRequest_ListServices{},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	stream.CloseSend()
	if _, err := stream.Recv(); err == nil {
		t.Fatal("reflection stream did not end")
	}
	testpb.NewTestServiceClient(cc).EmptyCall(t.Context(), &testpb.Empty{}) // panics: logged at error
	s.Stop()

	var health, refl int
	for line := range strings.SplitSeq(logs.String(), "\n") {
		if !strings.Contains(line, "finished call") {
			continue
		}
		switch {
		case strings.Contains(line, "grpc.health.v1.Health"):
			health++
			if !strings.Contains(line, "level=DEBUG") {
				t.Errorf("health check not at debug: %s", line)
			}
		case strings.Contains(line, "grpc.reflection."):
			refl++
			if !strings.Contains(line, "level=DEBUG") {
				t.Errorf("reflection call not at debug: %s", line)
			}
		case strings.Contains(line, "level=DEBUG"):
			t.Errorf("a call other than a probe at debug: %s", line)
		}
	}
	if health != 1 || refl != 1 {
		t.Errorf("%d health and %d reflection lines, want 1 each:\n%s", health, refl, logs.String())
	}
}
