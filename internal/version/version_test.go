package version

import (
	"runtime"
	"strings"
	"testing"
)

func TestString(t *testing.T) {
	tests := []struct {
		info Info
		want string
	}{
		{Info{Module: "(devel)", Go: "go1.26.8"}, "(devel) go1.26.8"},
		{Info{Module: "v0.3.0", Revision: "8c01728a9f3e5b6c", Time: "2026-10-20T10:00:00Z", Modified: true, Go: "go1.26.8"},
			"v0.3.0 (rev 8c01728a9f3e, 2026-10-20T10:00:00Z, modified) go1.26.8"},
	}
	for _, tt := range tests {
		want := tt.want + " " + runtime.GOOS + "/" + runtime.GOARCH
		if got := tt.info.String(); got != want {
			t.Errorf("%+v: %q, want %q", tt.info, got, want)
		}
	}
	if got := String(); !strings.Contains(got, runtime.Version()) {
		t.Errorf("String() = %q, want the toolchain in it", got)
	}
}
