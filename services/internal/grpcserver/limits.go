package grpcserver

import (
	"fmt"
	"math"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/corelm/corelm/internal/envflag"
)

// Limits bound what one client may cost a server. Both services take
// them from the same flags (Bind); a zero field takes its default, so a
// server built without flags (tests, serve-all's loader) is bounded too.
type Limits struct {
	// MaxRecvMsgSize is the largest request message, in bytes [4 MiB]: a
	// larger one is refused with ResourceExhausted, the connection and the
	// stream's other requests carry on.
	MaxRecvMsgSize int64
	// MaxConcurrentStreams is the most calls open at once on one
	// connection [100]; more wait for one to end (HTTP/2 flow control).
	MaxConcurrentStreams int
	// KeepaliveMinTime is how often a client may ping [10s]: one pinging
	// more often is sent GOAWAY ("too_many_pings"). Pings are allowed
	// without a call open, as long-lived channels send them.
	KeepaliveMinTime time.Duration
	// MaxConnectionIdle closes a connection that has had no call for this
	// long [15m]; a gRPC client reconnects on its next call.
	MaxConnectionIdle time.Duration
	// KeepaliveTime is how long a connection may be silent before the
	// server pings it, and KeepaliveTimeout how long the answer may take
	// before the connection is closed [2m, 20s]: a vanished client's
	// streams end instead of holding their slots.
	KeepaliveTime, KeepaliveTimeout time.Duration
}

// DefaultLimits are the limits a zero Limits field takes.
var DefaultLimits = Limits{
	MaxRecvMsgSize:       4 << 20,
	MaxConcurrentStreams: 100,
	KeepaliveMinTime:     10 * time.Second,
	MaxConnectionIdle:    15 * time.Minute,
	KeepaliveTime:        2 * time.Minute,
	KeepaliveTimeout:     20 * time.Second,
}

// Bind binds the limits' flags with DefaultLimits as defaults.
func (l *Limits) Bind(fs *envflag.Set) {
	d := DefaultLimits
	fs.Bytes(&l.MaxRecvMsgSize, "max-recv-msg-size", fmt.Sprint(d.MaxRecvMsgSize), "largest request message in bytes, e.g. 4MiB (larger: ResourceExhausted)")
	fs.Int(&l.MaxConcurrentStreams, "max-concurrent-streams", d.MaxConcurrentStreams, "most calls open at once on one client connection")
	fs.Duration(&l.KeepaliveMinTime, "keepalive-min-time", d.KeepaliveMinTime, "a client pinging more often than this is disconnected")
	fs.Duration(&l.MaxConnectionIdle, "max-connection-idle", d.MaxConnectionIdle, "close client connections without a call for this long")
	fs.Duration(&l.KeepaliveTime, "keepalive-time", d.KeepaliveTime, "ping a client connection silent for this long")
	fs.Duration(&l.KeepaliveTimeout, "keepalive-timeout", d.KeepaliveTimeout, "close a connection whose ping is not answered within this")
}

// withDefaults is l with each zero field its default.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	set := func(p *time.Duration, def time.Duration) {
		if *p <= 0 {
			*p = def
		}
	}
	if l.MaxRecvMsgSize <= 0 {
		l.MaxRecvMsgSize = d.MaxRecvMsgSize
	}
	if l.MaxConcurrentStreams <= 0 {
		l.MaxConcurrentStreams = d.MaxConcurrentStreams
	}
	set(&l.KeepaliveMinTime, d.KeepaliveMinTime)
	set(&l.MaxConnectionIdle, d.MaxConnectionIdle)
	set(&l.KeepaliveTime, d.KeepaliveTime)
	set(&l.KeepaliveTimeout, d.KeepaliveTimeout)
	return l
}

// serverOptions are the gRPC options of l.
func (l Limits) serverOptions() []grpc.ServerOption {
	l = l.withDefaults()
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(int(min(l.MaxRecvMsgSize, math.MaxInt32))),
		grpc.MaxConcurrentStreams(uint32(min(l.MaxConcurrentStreams, math.MaxUint32))),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: l.KeepaliveMinTime, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: l.MaxConnectionIdle, Time: l.KeepaliveTime, Timeout: l.KeepaliveTimeout,
		}),
	}
}
