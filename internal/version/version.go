// Package version says which build of corelm a binary is, from the build
// information the Go toolchain stamps into it (runtime/debug): the module
// version, the VCS revision and whether the tree had uncommitted changes.
// `--version` on every corelm binary prints it.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// revision is the VCS revision of a build that has no VCS information of
// its own (a container build, whose context leaves .git out):
//
//	go build -ldflags "-X github.com/corelm/corelm/internal/version.revision=$(git rev-parse HEAD)"
var revision string

// Info is what a binary knows about its build.
type Info struct {
	Module   string // module version: a tag, a pseudo-version, or "(devel)"
	Revision string // VCS revision ("" when not stamped: go run, -buildvcs=false)
	Time     string // commit time, RFC 3339
	Modified bool   // the tree had uncommitted changes
	Go       string // toolchain, e.g. go1.26.8
}

// Read returns the running binary's build information.
func Read() Info {
	info := Info{Module: "(unknown)", Revision: revision, Go: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return info
	}
	if bi.Main.Version != "" {
		info.Module = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.time":
			info.Time = s.Value
		case "vcs.modified":
			info.Modified = s.Value == "true"
		}
	}
	return info
}

// String is the one-line form: "v0.3.0 (rev 8c01728a9f3e, 2026-10-20T10:00:00Z, modified) go1.26.8 linux/amd64".
func (i Info) String() string {
	var b strings.Builder
	b.WriteString(i.Module)
	var vcs []string
	if i.Revision != "" {
		vcs = append(vcs, "rev "+short(i.Revision))
	}
	if i.Time != "" {
		vcs = append(vcs, i.Time)
	}
	if i.Modified {
		vcs = append(vcs, "modified")
	}
	if len(vcs) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(vcs, ", "))
	}
	fmt.Fprintf(&b, " %s %s/%s", i.Go, runtime.GOOS, runtime.GOARCH)
	return b.String()
}

func short(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}

// String is the running binary's version line.
func String() string { return Read().String() }
