package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestREADMEQuickstart runs the README's quickstart command verbatim in a
// clean clone of this repository (what a new user gets, without this
// checkout's build outputs or uncommitted files) and checks that it streams
// a story. The test command next to it must exist in the clone too.
func TestREADMEQuickstart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds corelm in a fresh clone")
	}
	root, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Skipf("not a git checkout (%v): nothing to clone", err)
	}
	clone := filepath.Join(t.TempDir(), "corelm")
	if out, err := exec.Command("git", "clone", "--quiet", "--no-hardlinks", strings.TrimSpace(string(root)), clone).CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	quickstart, tests := setUpCommands(t, filepath.Join(clone, "README.md"))
	if !strings.Contains(quickstart, "generate") {
		t.Fatalf("the README's first set-up command %q is not the quickstart", quickstart)
	}
	if st, err := os.Stat(filepath.Join(clone, strings.Fields(tests)[0])); err != nil || st.Mode()&0o111 == 0 {
		t.Errorf("the README's test command %q is not an executable in the clone (%v)", tests, err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", quickstart)
	cmd.Dir = clone
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", quickstart, err, stderr.String())
	}
	story := string(out)
	if !strings.HasPrefix(story, "Once upon a time") || len(strings.Fields(story)) < 20 {
		t.Errorf("%s printed %q; want a story that starts with the prompt", quickstart, story)
	}
}

// setUpCommands reads the two commands of the README's "Set up" section,
// without their comments.
func setUpCommands(t *testing.T, readme string) (quickstart, tests string) {
	t.Helper()
	f, err := os.Open(readme)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cmds []string
	section, block := false, false
	for sc := bufio.NewScanner(f); sc.Scan(); {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			section = line == "## Set up"
		case section && strings.HasPrefix(line, "```"):
			block = !block
		case section && block && strings.TrimSpace(line) != "":
			cmd, _, _ := strings.Cut(line, " #")
			cmds = append(cmds, strings.TrimSpace(cmd))
		}
	}
	if len(cmds) != 2 {
		t.Fatalf("the README's Set up section has %d commands %q; want two (quickstart, tests)", len(cmds), cmds)
	}
	return cmds[0], cmds[1]
}
