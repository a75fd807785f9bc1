package server

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

const mountinfo = `22 1 0:21 / / rw,relatime - ext4 /dev/vda rw
25 22 0:23 / /dev rw,nosuid - devtmpfs udev rw,size=4096k
26 25 0:24 / /dev/shm rw,nosuid,nodev - tmpfs tmpfs rw,size=24683620k
40 22 0:40 / /mnt/hp rw,relatime - tmpfs tmpfs rw,size=8388608k,huge=within_size
41 40 0:41 / /mnt/hp/inner rw,relatime - tmpfs tmpfs rw,size=1024k,huge=advise
42 22 0:42 / /mnt/with\040space rw,relatime shared:7 - tmpfs tmpfs rw,huge=always
43 22 0:43 / /dev/shm rw,relatime - tmpfs tmpfs rw,huge=always
`

func TestFindMount(t *testing.T) {
	for _, c := range []struct {
		dir, point, fs, huge string
		hugePages            bool
	}{
		{"/var/lib/corelm", "/", "ext4", "never", false},
		{"/mnt/hp", "/mnt/hp", "tmpfs", "within_size", true},
		{"/mnt/hp/corelm", "/mnt/hp", "tmpfs", "within_size", true},
		{"/mnt/hpx/corelm", "/", "ext4", "never", false},
		{"/mnt/hp/inner/x", "/mnt/hp/inner", "tmpfs", "advise", false},
		{"/mnt/with space/m", "/mnt/with space", "tmpfs", "always", true},
		{"/dev/shm/corelm", "/dev/shm", "tmpfs", "always", true}, // the later mount over /dev/shm wins
		{"/dev/null", "/dev", "devtmpfs", "never", false},
	} {
		m, ok := findMount(strings.NewReader(mountinfo), c.dir)
		if !ok || m.point != c.point || m.fs != c.fs || m.huge != c.huge || m.hugePages() != c.hugePages {
			t.Errorf("%s: got %+v (found %v, huge pages %v), want %s %s huge=%s (%v)",
				c.dir, m, ok, m.hugePages(), c.point, c.fs, c.huge, c.hugePages)
		}
	}
	if _, ok := findMount(strings.NewReader("garbage\n\n1 2 3 - x\n"), "/x"); ok {
		t.Error("found a mount in a listing without one")
	}
}

// TestWarnFilePages checks the warning about a packed file that got too
// few huge pages: only under 95% of it.
func TestWarnFilePages(t *testing.T) {
	for _, c := range []struct {
		rss, huge int64
		warn      bool
	}{
		{100 << 20, 65 << 20, true},
		{100 << 20, 94 << 20, true},
		{100 << 20, 96 << 20, false},
		{100 << 20, 100 << 20, false},
	} {
		var buf bytes.Buffer
		s := &Server{log: slog.New(slog.NewTextHandler(&buf, nil)), hugeMount: true}
		ctx := context.Background()
		s.warnFilePages(ctx, trace.SpanFromContext(ctx), "m", c.rss, c.huge)
		got := strings.Contains(buf.String(), "level=WARN")
		if got != c.warn {
			t.Errorf("rss %d, huge %d: warned %v, want %v (%q)", c.rss, c.huge, got, c.warn, buf.String())
		}
		if c.warn && !strings.Contains(buf.String(), "compact_memory") {
			t.Errorf("the warning does not say what to do: %q", buf.String())
		}
	}
}

// TestCheckFilePages maps a real file: no warning where the directory's
// mount gives no huge pages (checkPages said so at start-up), and on a
// "huge" mount a file of 4 KiB pages (a temporary directory's) is warned
// about.
func TestCheckFilePages(t *testing.T) {
	path := t.TempDir() + "/m-1.clm"
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o444); err != nil {
		t.Fatal(err)
	}
	for _, huge := range []bool{false, true} {
		var buf bytes.Buffer
		s := &Server{log: slog.New(slog.NewTextHandler(&buf, nil)), hugeMount: huge}
		ctx := context.Background()
		s.checkFilePages(ctx, trace.SpanFromContext(ctx), "m", path)
		if got := strings.Contains(buf.String(), "sits only 0% in 2 MiB pages"); got != huge {
			t.Errorf("huge mount %v: warned %v (%q)", huge, got, buf.String())
		}
	}
}
