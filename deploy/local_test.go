package deploy

import (
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corelm/corelm/internal/servicetest"
)

// local maps a container world onto this machine, for running a compose
// service or a pod's containers as processes: each container port becomes a
// free port on 127.0.0.1, each container path a temporary directory, and
// each container host name (another service, 0.0.0.0, localhost) 127.0.0.1.
type local struct {
	t     *testing.T
	hosts map[string]bool   // names that mean a container of the stack
	ports map[string]string // container port → port on 127.0.0.1
	dirs  map[string]string // container path → directory here
}

func newLocal(t *testing.T, hosts ...string) *local {
	l := &local{t: t, hosts: map[string]bool{"0.0.0.0": true, "127.0.0.1": true, "localhost": true},
		ports: map[string]string{}, dirs: map[string]string{}}
	for _, h := range hosts {
		l.hosts[h] = true
	}
	return l
}

// port is the local port of a container port, picked free on first use.
func (l *local) port(p string) string {
	if lp, ok := l.ports[p]; ok {
		return lp
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		l.t.Fatal(err)
	}
	lp := strconv.Itoa(lis.Addr().(*net.TCPAddr).Port)
	lis.Close()
	l.ports[p] = lp
	return lp
}

// addr is the local address of a container port.
func (l *local) addr(p string) string { return "127.0.0.1:" + l.port(p) }

// mount gives the container path a directory here (a new temporary one
// unless dir is set) and returns it.
func (l *local) mount(containerPath, dir string) string {
	if d, ok := l.dirs[containerPath]; ok {
		return d
	}
	if dir == "" {
		dir = l.t.TempDir()
	}
	l.dirs[containerPath] = dir
	return dir
}

var hostPort = regexp.MustCompile(`\b([A-Za-z0-9][A-Za-z0-9.-]*):(\d{2,5})\b`)

// rewrite turns a value of the container world into this machine's.
func (l *local) rewrite(v string) string {
	v = hostPort.ReplaceAllStringFunc(v, func(m string) string {
		host, port, _ := strings.Cut(m, ":")
		if !l.hosts[host] {
			return m
		}
		return l.addr(port)
	})
	for cpath, dir := range l.dirs {
		re := regexp.MustCompile(`(^|[=,])` + regexp.QuoteMeta(cpath) + `(/|,|$)`)
		v = re.ReplaceAllString(v, "${1}"+dir+"${2}")
	}
	return v
}

// env rewrites a container's environment into a process's.
func (l *local) env(vars map[string]string) []string {
	var out []string
	for k, v := range vars {
		out = append(out, k+"="+l.rewrite(v))
	}
	return out
}

// start runs a container's binary with its arguments and environment
// (already rewritten) and returns it once it logs that it listens on addr.
func start(t *testing.T, bin string, args, env []string, addr string) *servicetest.Proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	return servicetest.Start(t, cmd, func(line string) (string, bool) {
		return addr, strings.Contains(line, `"addr":"`+addr+`"`)
	})
}

// waitCommand runs a health check command every interval until it exits 0,
// as the container engine does, failing the test after within.
func waitCommand(t *testing.T, within, interval time.Duration, bin string, args ...string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("health check %s %q still failing after %v: %v\n%s", bin, args, within, err, out)
		}
		time.Sleep(interval)
	}
}
