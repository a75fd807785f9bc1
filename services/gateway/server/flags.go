package server

import (
	"time"

	"github.com/corelm/corelm/internal/envflag"
)

// BindFlags binds the gateway's knobs, shared by the gateway binary and
// `corelm serve-all`: auth, limits and CORS. Where to listen and which
// inference to call are the caller's.
func BindFlags(fs *envflag.Set, cfg *Config) {
	fs.String(&cfg.AuthToken, "auth-token", "", `require "Authorization: Bearer <token>" on every request but /healthz and /readyz`)
	fs.Bool(&cfg.PassAuth, "pass-auth", false, "forward each client's Authorization header to inference, which checks it")
	fs.String(&cfg.InferenceToken, "inference-token", "", "bearer token the gateway sends to inference (unless --pass-auth forwards the client's)")
	fs.Bytes(&cfg.MaxBody, "max-body", "1MiB", "largest request body")
	fs.Duration(&cfg.Timeout, "request-timeout", 10*time.Minute, "longest a request may run, streaming included (0: no limit)")
	fs.List(&cfg.CORSOrigins, "cors-origins", "browser origins allowed to call, ORIGIN,... (*: any; default: none, no CORS headers)")
}
