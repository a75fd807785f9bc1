package servicetest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// NodeClient returns node and the absolute path of the npm project in dir
// (relative to the test's directory), after `npm ci` there when
// node_modules lacks module. The test is skipped when node or npm is not
// installed.
func NodeClient(t testing.TB, dir, module string) (node, abs string) {
	t.Helper()
	node, errNode := exec.LookPath("node")
	npm, errNpm := exec.LookPath("npm")
	if errNode != nil || errNpm != nil {
		t.Skip("node and npm are needed")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(abs, "node_modules", module)); err != nil {
		cmd := exec.Command(npm, "ci", "--no-audit", "--no-fund")
		cmd.Dir = abs
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci: %v\n%s", err, out)
		}
	}
	return node, abs
}

// ClientOutput runs a client program in dir until the test's end at the
// latest and returns its standard output; its standard error goes to the
// test's. A failed run fails the test.
func ClientOutput(t testing.TB, dir, prog string, args ...string) []byte {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), prog, args...)
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v", filepath.Base(prog), strings.Join(args, " "), err)
	}
	return out
}
