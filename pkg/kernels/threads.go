package kernels

import (
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// DefaultThreads returns the number of CPUs this process may really use: the
// size of its CPU affinity mask, lowered to its cgroup CPU quota (v2 cpu.max or
// v1 cfs_quota_us/cfs_period_us, the tightest along the cgroup's ancestry)
// rounded up, and at least 1. On a 2-vCPU container of a 64-core host this is
// 2, not 64: more workers than that only queue behind the quota and stretch
// every barrier. GOMAXPROCS is deliberately not consulted.
func DefaultThreads() int {
	n := affinityCPUs()
	if self, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		if q, ok := cgroupCPULimit(self, "/sys/fs/cgroup"); ok {
			n = min(n, int(math.Ceil(q)))
		}
	}
	return max(1, n)
}

// cgroupCPULimit returns the CPU quota, in CPUs, of the cgroups listed in
// self (the contents of /proc/self/cgroup) with the cgroup filesystem mounted
// at root. It checks the process's own cgroup and each ancestor and keeps the
// smallest limit. When the listed path does not exist under root (a container
// without a cgroup namespace sees its own cgroup at the mount root) the
// missing levels are skipped and the root itself still counts.
func cgroupCPULimit(self []byte, root string) (cpus float64, ok bool) {
	best := math.Inf(1)
	for _, line := range strings.Split(string(self), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		ctrls, path := parts[1], parts[2]
		switch {
		case parts[0] == "0" && ctrls == "": // cgroup v2 unified hierarchy
			eachAncestor(root, path, func(dir string) {
				if q, ok := readCPUMax(dir); ok {
					best = min(best, q)
				}
			})
		case hasController(ctrls, "cpu"): // cgroup v1
			for _, mnt := range []string{ctrls, "cpu", "cpu,cpuacct", "cpuacct,cpu"} {
				base := filepath.Join(root, mnt)
				if _, err := os.Stat(base); err != nil {
					continue
				}
				eachAncestor(base, path, func(dir string) {
					if q, ok := readCFSQuota(dir); ok {
						best = min(best, q)
					}
				})
				break
			}
		}
	}
	return best, !math.IsInf(best, 1)
}

func hasController(list, name string) bool {
	for _, c := range strings.Split(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

// eachAncestor calls f with base/path, base/parent(path), ..., base.
func eachAncestor(base, path string, f func(dir string)) {
	p := filepath.Clean("/" + path)
	for {
		f(filepath.Join(base, p))
		if p == "/" {
			return
		}
		p = filepath.Dir(p)
	}
}

// readCPUMax parses a cgroup v2 cpu.max ("max 100000" or "150000 100000").
func readCPUMax(dir string) (float64, bool) {
	b, err := os.ReadFile(filepath.Join(dir, "cpu.max"))
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) != 2 || f[0] == "max" {
		return 0, false
	}
	return quota(f[0], f[1])
}

// readCFSQuota parses cgroup v1 cpu.cfs_quota_us (-1 means none) and
// cpu.cfs_period_us.
func readCFSQuota(dir string) (float64, bool) {
	q, err := os.ReadFile(filepath.Join(dir, "cpu.cfs_quota_us"))
	if err != nil {
		return 0, false
	}
	p, err := os.ReadFile(filepath.Join(dir, "cpu.cfs_period_us"))
	if err != nil {
		return 0, false
	}
	return quota(strings.TrimSpace(string(q)), strings.TrimSpace(string(p)))
}

func quota(q, p string) (float64, bool) {
	qv, err1 := strconv.ParseFloat(q, 64)
	pv, err2 := strconv.ParseFloat(p, 64)
	if err1 != nil || err2 != nil || qv <= 0 || pv <= 0 {
		return 0, false
	}
	return qv / pv, true
}
