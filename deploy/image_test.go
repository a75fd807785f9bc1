package deploy

import (
	"bytes"
	"os"
	"os/exec"
	"path"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/corelm/corelm/internal/servicetest"
)

func TestMain(m *testing.M) { servicetest.Main(m) }

// The deployment files' view of the image is the Dockerfile's: which
// packages it builds and where it puts the binaries. The tests build the
// same packages and ask the binaries what they accept.

// image is the binaries of the Dockerfile's image, built here.
type image struct {
	bins  map[string]string // by path in the image (/usr/local/bin/loader): the local binary
	mu    sync.Mutex
	flags map[string]*flagList // by local binary and sub-command
}

var (
	dockerBuild = regexp.MustCompile(`for bin in ((?:\./\S+\s*)+); do`)
	dockerCopy  = regexp.MustCompile(`(?m)^COPY --from=build ((?:/out/\S+ )+)(/\S+/)$`)
)

var (
	imageOnce sync.Once
	theImage  *image
)

// loadImage reads the Dockerfile and builds its binaries (once per test
// binary).
func loadImage(t *testing.T) *image {
	t.Helper()
	imageOnce.Do(func() {
		df, err := os.ReadFile("../Dockerfile")
		if err != nil {
			t.Fatal(err)
		}
		build := dockerBuild.FindSubmatch(df)
		copied := dockerCopy.FindSubmatch(df)
		if build == nil || copied == nil {
			t.Fatalf("Dockerfile: no `for bin in ./PKG...; do` build loop or `COPY --from=build /out/... DIR/` line")
		}
		built := map[string]string{} // binary name → package
		for _, pkg := range strings.Fields(string(build[1])) {
			built[path.Base(pkg)] = pkg
		}
		img := &image{bins: map[string]string{}, flags: map[string]*flagList{}}
		for _, out := range strings.Fields(string(copied[1])) {
			name := path.Base(out)
			pkg, ok := built[name]
			if !ok {
				t.Fatalf("Dockerfile copies %s, which it does not build", out)
			}
			img.bins[string(copied[2])+name] = servicetest.Binary(t, "../"+pkg)
		}
		theImage = img
	})
	if theImage == nil {
		t.Fatal("the image's binaries could not be built")
	}
	return theImage
}

// binary is the local build of the image's file path, failing the test
// when the image has none.
func (img *image) binary(t *testing.T, imagePath string) string {
	t.Helper()
	bin, ok := img.bins[imagePath]
	if !ok {
		t.Fatalf("%s is not in the image (it has %v)", imagePath, keys(img.bins))
	}
	return bin
}

// flagList is what a binary's -h lists: its flags and the environment
// variables bound to them.
type flagList struct {
	flags map[string]bool // without dashes
	envs  map[string]bool
	raw   []byte // the binary itself, for the variables libraries read (OTEL_*)
}

var (
	helpFlag = regexp.MustCompile(`(?m)^  -([a-z0-9][a-z0-9-]*)`)
	helpEnv  = regexp.MustCompile(`\(((?:CORELM|OTEL)_[A-Z0-9_]+)\)`)
)

// flagsOf asks the image's binary (with sub-command sub, e.g. "health")
// for its flags: it runs it with -h.
func (img *image) flagsOf(t *testing.T, imagePath string, sub ...string) *flagList {
	t.Helper()
	bin := img.binary(t, imagePath)
	key := strings.Join(append([]string{bin}, sub...), " ")
	img.mu.Lock()
	defer img.mu.Unlock()
	if fl, ok := img.flags[key]; ok {
		return fl
	}
	var out bytes.Buffer
	cmd := exec.Command(bin, append(sub, "-h")...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = []string{} // defaults only
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s -h: %v\n%s", key, err, out.String())
	}
	fl := &flagList{flags: map[string]bool{}, envs: map[string]bool{}}
	for _, m := range helpFlag.FindAllStringSubmatch(out.String(), -1) {
		fl.flags[m[1]] = true
	}
	for _, m := range helpEnv.FindAllStringSubmatch(out.String(), -1) {
		fl.envs[m[1]] = true
	}
	if len(fl.flags) == 0 {
		t.Fatalf("%s -h lists no flags:\n%s", key, out.String())
	}
	raw, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	fl.raw = raw
	img.flags[key] = fl
	return fl
}

// checkEnv checks that the binary reads each variable: a CORELM_ one is
// bound to one of its flags (its -h says so); an OTEL_ one, read by the
// OpenTelemetry setup, is named in the binary.
func (fl *flagList) checkEnv(t *testing.T, where string, env map[string]string) {
	t.Helper()
	for name := range env {
		switch {
		case strings.HasPrefix(name, "CORELM_"):
			if !fl.envs[name] {
				t.Errorf("%s: %s is no flag's variable (the binary's -h has %v)", where, name, keys(fl.envs))
			}
		case strings.HasPrefix(name, "OTEL_"):
			if !bytes.Contains(fl.raw, []byte(name)) {
				t.Errorf("%s: the binary never reads %s", where, name)
			}
		default:
			t.Errorf("%s: %s is neither corelm's nor OpenTelemetry's", where, name)
		}
	}
}

// checkArgs checks that every --flag in args is one the binary has.
func (fl *flagList) checkArgs(t *testing.T, where string, args []string) {
	t.Helper()
	for _, a := range args {
		if !strings.HasPrefix(a, "-") {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !fl.flags[name] {
			t.Errorf("%s: the binary has no flag %s (it has %v)", where, a, keys(fl.flags))
		}
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
