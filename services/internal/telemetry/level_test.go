package telemetry

import (
	"flag"
	"io"
	"testing"

	"google.golang.org/grpc/metadata"
)

func TestParseLevel(t *testing.T) {
	tests := []struct {
		in   string
		want Level
		err  bool
	}{
		{"off", LevelOff, false},
		{"request", LevelRequest, false},
		{"step", LevelStep, false},
		{"layer", LevelLayer, false},
		{" Layer ", LevelLayer, false},
		{"STEP", LevelStep, false},
		{"", 0, true},
		{"layers", 0, true},
		{"3", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseLevel(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.err)
		}
		if err == nil && got.String() != tt.want.String() {
			t.Errorf("String() = %q", got.String())
		}
	}
	if s := Level(9).String(); s != "Level(9)" {
		t.Errorf("Level(9).String() = %q", s)
	}
}

func TestLevelFlag(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	l := LevelRequest
	fs.TextVar(&l, "trace-level", LevelRequest, "")
	if err := fs.Parse([]string{"--trace-level=layer"}); err != nil || l != LevelLayer {
		t.Fatalf("flag: %v, %v", l, err)
	}
	if err := fs.Parse([]string{"--trace-level=loud"}); err == nil {
		t.Fatal("a bad level parsed")
	}
}

func TestLevelFromIncoming(t *testing.T) {
	tests := []struct {
		name        string
		md          metadata.MD
		server, max Level
		want        Level
	}{
		{"no metadata: server default", nil, LevelRequest, LevelLayer, LevelRequest},
		{"lower", metadata.Pairs(MetadataKey, "off"), LevelRequest, LevelLayer, LevelOff},
		{"raise within max", metadata.Pairs(MetadataKey, "layer"), LevelRequest, LevelLayer, LevelLayer},
		{"raise above max", metadata.Pairs(MetadataKey, "layer"), LevelRequest, LevelStep, LevelStep},
		{"default above max", nil, LevelLayer, LevelRequest, LevelRequest},
		{"max off", metadata.Pairs(MetadataKey, "layer"), LevelRequest, LevelOff, LevelOff},
		{"unparsable ignored", metadata.Pairs(MetadataKey, "everything"), LevelStep, LevelLayer, LevelStep},
		{"case-insensitive", metadata.Pairs(MetadataKey, "Step"), LevelOff, LevelLayer, LevelStep},
		{"last value wins", metadata.Pairs(MetadataKey, "off", MetadataKey, "step"), LevelRequest, LevelLayer, LevelStep},
	}
	for _, tt := range tests {
		if got := LevelFromIncoming(tt.md, tt.server, tt.max); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}
