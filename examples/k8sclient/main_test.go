package main

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/corelm/corelm/internal/servicetest"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
	inference "github.com/corelm/corelm/services/inference/server"
)

// headless is the name the Service's DNS gives to every ready pod.
const headless = "corelm-inference-headless.corelm.svc.cluster.local"

// TestRoundRobinOverDNS is the headless Service on loopback: two inference
// replicas serving "llama" (the embedded model) on the same port at
// 127.0.0.1 and 127.0.0.2, and a DNS server answering the Service's name
// with both addresses, as the cluster DNS does. The client resolves the
// name through it and its calls alternate between the replicas.
func TestRoundRobinOverDNS(t *testing.T) {
	port, calls := replicas(t, "127.0.0.1", "127.0.0.2")
	target := "dns://" + fakeDNS(t, headless, [4]byte{127, 0, 0, 1}, [4]byte{127, 0, 0, 2}) + "/" + headless + ":" + port
	cc, err := Dial(target)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := corelmv1.NewInferenceServiceClient(cc)

	// Round robin uses a replica once its connection is up; the two come
	// up a moment apart, so first call until both have answered.
	for i := 0; calls[0].Load() == 0 || calls[1].Load() == 0; i++ {
		if i == 1000 {
			t.Fatalf("after %d calls, one replica has none: %d, %d", i, calls[0].Load(), calls[1].Load())
		}
		if _, err := Generate(t.Context(), client, "llama", "Once", 1); err != nil {
			t.Fatal(err)
		}
	}
	calls[0].Store(0)
	calls[1].Store(0)
	const n = 10
	for range n {
		if _, err := Generate(t.Context(), client, "llama", "Once upon a time", 4); err != nil {
			t.Fatal(err)
		}
	}
	if a, b := calls[0].Load(), calls[1].Load(); a+b != n || a < n/2-1 || b < n/2-1 {
		t.Errorf("%d calls went %d and %d: want them spread evenly", n, a, b)
	}
}

// TestRun runs the example's command line against the replicas.
func TestRun(t *testing.T) {
	port, calls := replicas(t, "127.0.0.1", "127.0.0.2")
	target := "dns://" + fakeDNS(t, headless, [4]byte{127, 0, 0, 1}, [4]byte{127, 0, 0, 2}) + "/" + headless + ":" + port
	var out strings.Builder
	if err := run(t.Context(), []string{"--target", target, "--model", "llama", "--n", "4", "--max-tokens", "8"}, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[3], "4: Once upon a time") || len(lines[3]) <= len("4: Once upon a time") {
		t.Errorf("output:\n%s", out.String())
	}
	if calls[0].Load()+calls[1].Load() != 4 {
		t.Errorf("the replicas saw %d and %d calls, want 4 in all", calls[0].Load(), calls[1].Load())
	}
}

// replicas runs an inference server serving the embedded model as "llama"
// on each host, all on one port, and counts each one's generations.
func replicas(t *testing.T, hosts ...string) (port string, calls []*atomic.Int64) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		lis, err := listenAll(hosts)
		if err != nil {
			if attempt < 5 {
				continue // the port was free on one host only
			}
			t.Fatal(err)
		}
		port = strconv.Itoa(lis[0].Addr().(*net.TCPAddr).Port)
		for _, l := range lis {
			n := new(atomic.Int64)
			calls = append(calls, n)
			count := grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
				if info.FullMethod == corelmv1.InferenceService_GenerateStream_FullMethodName {
					n.Add(1)
				}
				return h(srv, ss)
			})
			serve(t, l, inference.Config{ModelFile: inference.EmbeddedModel, ModelID: "llama",
				Options: inference.Options{Threads: 1, MaxSeqs: 2}, ServerOptions: []grpc.ServerOption{count}})
		}
		return port, calls
	}
}

// listenAll listens on the same free port on every host.
func listenAll(hosts []string) ([]net.Listener, error) {
	first, err := net.Listen("tcp", hosts[0]+":0")
	if err != nil {
		return nil, err
	}
	out := []net.Listener{first}
	port := strconv.Itoa(first.Addr().(*net.TCPAddr).Port)
	for _, h := range hosts[1:] {
		l, err := net.Listen("tcp", net.JoinHostPort(h, port))
		if err != nil {
			for _, l := range out {
				l.Close()
			}
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

// serve runs one replica until the test ends, once it is ready.
func serve(t *testing.T, lis net.Listener, cfg inference.Config) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- inference.Serve(ctx, lis, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("replica %s: %v", lis.Addr(), err)
		}
	})
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	servicetest.WaitServing(t, conn, corelmv1.InferenceService_ServiceDesc.ServiceName)
}

// fakeDNS answers A queries for name with ips (and nothing else) on a UDP
// port of 127.0.0.1, which it returns: the cluster DNS of a headless
// Service, for a dns://ADDR/ target.
func fakeDNS(t *testing.T, name string, ips ...[4]byte) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp, err := answer(buf[:n], name+".", ips); err == nil {
				pc.WriteTo(resp, from)
			}
		}
	}()
	return pc.LocalAddr().String()
}

func answer(query []byte, name string, ips [][4]byte) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil {
		return nil, err
	}
	q, err := p.Question()
	if err != nil {
		return nil, err
	}
	rcode := dnsmessage.RCodeSuccess
	if !strings.EqualFold(q.Name.String(), name) {
		rcode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired, RCode: rcode})
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	if rcode == dnsmessage.RCodeSuccess && q.Type == dnsmessage.TypeA {
		for _, ip := range ips {
			if err := b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 5}, dnsmessage.AResource{A: ip}); err != nil {
				return nil, err
			}
		}
	}
	return b.Finish()
}
