package telemetry

import (
	"fmt"
	"strings"

	"google.golang.org/grpc/metadata"
)

// Level is how much of a generation is traced. Each level includes the ones
// below it.
type Level uint8

const (
	LevelOff     Level = iota // no spans for the generation (RPC spans still follow the sampler)
	LevelRequest              // one span per generation
	LevelStep                 // and one per scheduler step the generation took part in
	LevelLayer                // and per transformer layer of each step, attention and feed-forward apart
)

// MetadataKey is the gRPC metadata key with which a request asks for a trace
// level ("off", "request", "step" or "layer").
const MetadataKey = "corelm-trace-level"

var levelNames = [...]string{LevelOff: "off", LevelRequest: "request", LevelStep: "step", LevelLayer: "layer"}

func (l Level) String() string {
	if int(l) < len(levelNames) {
		return levelNames[l]
	}
	return fmt.Sprintf("Level(%d)", uint8(l))
}

// ParseLevel reads a level name, case-insensitively.
func ParseLevel(s string) (Level, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	for l, name := range levelNames {
		if s == name {
			return Level(l), nil
		}
	}
	return 0, fmt.Errorf("trace level %q: want off, request, step or layer", s)
}

// MarshalText and UnmarshalText let a Level be a flag (flag.TextVar) or a
// config field.
func (l Level) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

func (l *Level) UnmarshalText(b []byte) error {
	v, err := ParseLevel(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}

// LevelFromIncoming returns the level of one request: the level its metadata
// asks for under MetadataKey, else the server's default; never above max (the
// server's --trace-level-max). A value that does not parse is ignored, so a
// client's typo cannot fail its request.
func LevelFromIncoming(md metadata.MD, server, max Level) Level {
	l := server
	if vs := md.Get(MetadataKey); len(vs) > 0 {
		if v, err := ParseLevel(vs[len(vs)-1]); err == nil {
			l = v
		}
	}
	return min(l, max)
}
