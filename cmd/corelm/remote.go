package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/corelm/corelm/internal/tlsconfig"
	"github.com/corelm/corelm/pkg/runtime/sched"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
	inference "github.com/corelm/corelm/services/inference/server"
)

// authTokenEnv is read when --auth-token is not given, so the token need
// not appear in the process list or the shell history.
const authTokenEnv = "CORELM_AUTH_TOKEN"

// remoteFlags are the flags of every command that can run on a server.
type remoteFlags struct {
	server string
	token  string
	// tokenEnv is the variable the token is read from when --auth-token
	// is not given [authTokenEnv; a loader's is loaderTokenEnv].
	tokenEnv string
	timeout  time.Duration
	tls      tlsconfig.Client
}

func (f *remoteFlags) bind(fs *flagSet, timeout time.Duration) {
	fs.StringVar(&f.server, "server", "", "run on the corelm server at this address (host:port) instead of in this process")
	if f.tokenEnv == "" {
		f.tokenEnv = authTokenEnv
	}
	fs.StringVar(&f.token, "auth-token", "", "bearer token for --server (default $"+f.tokenEnv+")")
	fs.DurationVar(&f.timeout, "timeout", timeout, "with --server: give up on a call after this long (0: no limit)")
	fs.BoolVar(&f.tls.Enable, "tls", false, "with --server: connect over TLS, verifying the server with the system's roots (or --tls-ca)")
	fs.StringVar(&f.tls.CA, "tls-ca", "", "with --server: connect over TLS, verifying the server with these PEM CA certificates")
	fs.StringVar(&f.tls.Cert, "tls-cert", "", "with --server: present this PEM client certificate (a server with --tls-client-ca asks for one)")
	fs.StringVar(&f.tls.Key, "tls-key", "", "the PEM private key of --tls-cert")
}

// check refuses the flags that do not apply: the remote flags without
// --server, and with it the flags named in local, which the server
// chooses itself.
func (f *remoteFlags) check(fs *flagSet, local ...string) error {
	set := setFlags(fs)
	if f.server == "" {
		for _, name := range []string{"auth-token", "timeout", "tls", "tls-ca", "tls-cert", "tls-key"} {
			if set[name] {
				return usagef("--%s needs --server", name)
			}
		}
		return nil
	}
	for _, name := range local {
		if set[name] {
			return usagef("--%s is the server's to choose: it cannot be given with --server", name)
		}
	}
	return nil
}

// setFlags is the set of flags given on the command line.
func setFlags(fs *flagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// remote is a connection to a corelm inference server.
type remote struct {
	addr     string
	timeout  time.Duration
	tokenEnv string
	conn     *grpc.ClientConn
	client   corelmv1.InferenceServiceClient
}

// connect opens a connection to the server of --server. The connection is
// made by the first call, whose error says whether the server is there.
func (f *remoteFlags) connect() (*remote, error) {
	if f.tokenEnv == "" {
		f.tokenEnv = authTokenEnv
	}
	token := f.token
	if token == "" {
		token = os.Getenv(f.tokenEnv)
	}
	tc, err := f.tls.Config()
	if err != nil {
		return nil, usagef("%v", err)
	}
	conn, err := dial(f.server, token, tc)
	if err != nil {
		return nil, usagef("--server %s: %v", f.server, err)
	}
	return &remote{addr: f.server, timeout: f.timeout, tokenEnv: f.tokenEnv, conn: conn, client: corelmv1.NewInferenceServiceClient(conn)}, nil
}

// dial is the one place the CLI chooses its transport to a server: TLS
// with tc (tlsconfig), plaintext when tc is nil. The token goes with every
// call (over plaintext too: a loopback or trusted-network server).
func dial(addr, token string, tc *tls.Config) (*grpc.ClientConn, error) {
	opts := []grpc.DialOption{tlsconfig.DialOption(tc)}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(tlsconfig.Bearer{Token: token, TLS: tc != nil}))
	}
	return grpc.NewClient(addr, opts...)
}

func (r *remote) Close() error { return r.conn.Close() }

// call returns the context of one call: ctx with --timeout.
func (r *remote) call(ctx context.Context) (context.Context, context.CancelFunc) {
	if r.timeout > 0 {
		return context.WithTimeout(ctx, r.timeout)
	}
	return context.WithCancel(ctx)
}

// modelID is id, or when it is empty the id of the one model the server
// serves.
func (r *remote) modelID(ctx context.Context, id string) (string, error) {
	if id != "" {
		return id, nil
	}
	info, err := r.model(ctx, "")
	return info.GetModelId(), err
}

// model describes model id, or when id is empty the one model the server
// serves.
func (r *remote) model(ctx context.Context, id string) (*corelmv1.ModelInfo, error) {
	ctx, cancel := r.call(ctx)
	defer cancel()
	if id != "" {
		resp, err := r.client.GetModel(ctx, &corelmv1.GetModelRequest{ModelId: id})
		if err != nil {
			return nil, r.error(id, err)
		}
		return resp.GetModel(), nil
	}
	resp, err := r.client.ListModels(ctx, &corelmv1.ListModelsRequest{})
	if err != nil {
		return nil, r.error("", err)
	}
	ms := resp.GetModels()
	switch len(ms) {
	case 0:
		return nil, fmt.Errorf("server at %s serves no model yet", r.addr)
	case 1:
		return ms[0], nil
	}
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.GetModelId()
	}
	return nil, usagef("server at %s serves %d models %v: choose one with --model", r.addr, len(ms), ids)
}

// generate runs one generation on the server, handing the text of each
// token to text as it arrives, and returns the final frame. A generation
// the server ends with an error is an error; one cancelled through ctx
// returns ctx's error.
func (r *remote) generate(ctx context.Context, start *corelmv1.GenerateStart, text func(string) error) (*corelmv1.GenerateFinal, error) {
	callCtx, cancel := r.call(ctx)
	defer cancel()
	stream, err := r.client.GenerateStream(callCtx, start)
	if err != nil {
		return nil, r.callError(ctx, start.GetModelId(), err)
	}
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("server at %s ended the generation without a final frame", r.addr)
		}
		if err != nil {
			return nil, r.callError(ctx, start.GetModelId(), err)
		}
		switch f := resp.GetFrame().(type) {
		case *corelmv1.GenerateResponse_Token:
			if err := text(f.Token.GetText()); err != nil {
				return nil, err
			}
		case *corelmv1.GenerateResponse_Final:
			fin := f.Final
			// The output held back to the end (an unfinished stop-string
			// prefix or character) comes with the final frame.
			if fin.GetText() != "" {
				if err := text(fin.GetText()); err != nil {
					return nil, err
				}
			}
			if fin.GetFinishReason() == corelmv1.FinishReason_FINISH_REASON_ERROR {
				return fin, r.error(start.GetModelId(), status.Error(codes.Code(fin.GetErrorCode()), fin.GetErrorMessage()))
			}
			if fin.GetFinishReason() == corelmv1.FinishReason_FINISH_REASON_CANCELLED && ctx.Err() != nil {
				return fin, ctx.Err()
			}
			return fin, nil
		}
	}
}

// callError is error for a call made on a context derived from ctx: when
// ctx itself has ended (Ctrl-C), its error rather than the status.
func (r *remote) callError(ctx context.Context, model string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return r.error(model, err)
}

// error turns a call's status into what the user needs to read: what went
// wrong and where. It is the only place the CLI looks at status codes.
func (r *remote) error(model string, err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	msg := st.Message()
	switch st.Code() {
	case codes.NotFound:
		if model != "" {
			// The server lists what it serves as "(serving [a b])".
			serving := ""
			if i := strings.LastIndex(msg, "(serving "); i >= 0 {
				serving = " " + msg[i:]
			}
			return fmt.Errorf("model %q not found on %s%s", model, r.addr, serving)
		}
	case codes.Unavailable:
		if rest, ok := strings.CutPrefix(msg, inference.ErrModelUnavailable.Error()+": "); ok && model != "" {
			return fmt.Errorf("model %q is not available on %s: %s%s", model, r.addr, strings.TrimPrefix(rest, strconv.Quote(model)+": "), retryHint(st))
		}
		return fmt.Errorf("server at %s is not ready: %s%s", r.addr, msg, retryHint(st))
	case codes.ResourceExhausted:
		return fmt.Errorf("server at %s is busy: %s%s", r.addr, msg, retryHint(st))
	case codes.Unauthenticated:
		return fmt.Errorf("server at %s refused the call: %s (give the token with --auth-token or $%s)", r.addr, msg, r.tokenEnv)
	case codes.DeadlineExceeded:
		if r.timeout > 0 {
			return fmt.Errorf("no answer from %s within --timeout %v", r.addr, r.timeout)
		}
	case codes.Canceled:
		return context.Canceled
	case codes.InvalidArgument:
		// sched.ErrPromptTooLong on the server's side of the wire.
		if strings.Contains(msg, sched.ErrPromptTooLong.Error()) {
			return fmt.Errorf("%w: %s", errPromptTooLong, msg)
		}
		return fmt.Errorf("server at %s: %s", r.addr, msg)
	}
	return fmt.Errorf("server at %s: %s: %s", r.addr, st.Code(), msg)
}

// retryHint is the server's RetryInfo as " (retry in 2s)", or "".
func retryHint(st *status.Status) string {
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			return fmt.Sprintf(" (retry in %v)", ri.GetRetryDelay().AsDuration())
		}
	}
	return ""
}
