package runtime

import (
	"os"
	"path/filepath"
	"testing"
)

// TestDetectMemory reads limits from a fake /proc and /sys/fs/cgroup.
func TestDetectMemory(t *testing.T) {
	const meminfo = "MemTotal:       24683772 kB\nMemFree:        1000 kB\n" // 23.5 GiB
	const phys = 24683772 << 10
	tests := []struct {
		name       string
		files      map[string]string
		wantLimit  int64
		wantSource string
	}{
		{"no cgroup file: physical memory", map[string]string{}, phys, "physical memory"},
		{"v2 limit", map[string]string{
			"proc/self/cgroup":                 "0::/app\n",
			"sys/fs/cgroup/cgroup.controllers": "cpu memory\n",
			"sys/fs/cgroup/app/memory.max":     "6442450944\n",
		}, 6 << 30, "cgroup v2 memory.max"},
		{"v2 max everywhere", map[string]string{
			"proc/self/cgroup":                 "0::/app\n",
			"sys/fs/cgroup/cgroup.controllers": "memory\n",
			"sys/fs/cgroup/app/memory.max":     "max\n",
		}, phys, "physical memory"},
		{"v2 tighter ancestor", map[string]string{
			"proc/self/cgroup":                          "0::/kubepods/pod1/c1\n",
			"sys/fs/cgroup/cgroup.controllers":          "memory\n",
			"sys/fs/cgroup/kubepods/pod1/c1/memory.max": "max\n",
			"sys/fs/cgroup/kubepods/pod1/memory.max":    "4294967296\n",
			"sys/fs/cgroup/kubepods/memory.max":         "17179869184\n",
		}, 4 << 30, "cgroup v2 memory.max"},
		{"v2 namespaced: the container's limit at the mount root", map[string]string{
			"proc/self/cgroup":                 "0::/\n",
			"sys/fs/cgroup/cgroup.controllers": "memory\n",
			"sys/fs/cgroup/memory.max":         "3221225472\n",
		}, 3 << 30, "cgroup v2 memory.max"},
		{"v1 limit", map[string]string{
			"proc/self/cgroup": "12:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n",
			"sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": "6442450944\n",
			"sys/fs/cgroup/memory/memory.limit_in_bytes":            "9223372036854771712\n",
		}, 6 << 30, "cgroup v1 memory.limit_in_bytes"},
		{"v1 unlimited (this host's shape)", map[string]string{
			"proc/self/cgroup": "4:memory:/process_api/39304a8c\n0::/\n",
			"sys/fs/cgroup/memory/process_api/39304a8c/memory.limit_in_bytes": "9223372036854771712\n",
			"sys/fs/cgroup/memory/process_api/memory.limit_in_bytes":          "9223372036854771712\n",
			"sys/fs/cgroup/unified/cgroup.procs":                              "",
		}, phys, "physical memory"},
		{"a limit above physical memory is no limit", map[string]string{
			"proc/self/cgroup":                 "0::/app\n",
			"sys/fs/cgroup/cgroup.controllers": "memory\n",
			"sys/fs/cgroup/app/memory.max":     "68719476736\n",
		}, phys, "physical memory"},
		{"garbage", map[string]string{
			"proc/self/cgroup":                 "not a cgroup line\n0::/app\n",
			"sys/fs/cgroup/cgroup.controllers": "memory\n",
			"sys/fs/cgroup/app/memory.max":     "lots\n",
		}, phys, "physical memory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			tt.files["proc/meminfo"] = meminfo
			for name, body := range tt.files {
				p := filepath.Join(root, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := detectMemory(root)
			if err != nil {
				t.Fatal(err)
			}
			if got.Limit != tt.wantLimit || got.Source != tt.wantSource {
				t.Errorf("detectMemory = %+v, want %d from %q", got, tt.wantLimit, tt.wantSource)
			}
		})
	}
}

func TestDetectMemoryNoMeminfo(t *testing.T) {
	if _, err := detectMemory(t.TempDir()); err == nil {
		t.Error("no /proc/meminfo: no error")
	}
}

// TestDefaultMemoryBudget: the margin, and this machine's numbers.
func TestDefaultMemoryBudget(t *testing.T) {
	b, how, err := BudgetFrom(Memory{Limit: 6 << 30, Source: "cgroup v2 memory.max"})
	if err != nil || b != 6<<30-448<<20 {
		t.Errorf("6 GiB: budget %d (%s), %v; want 6 GiB − 448 MiB", b, how, err)
	}
	if _, _, err := BudgetFrom(Memory{Limit: 200 << 20, Source: "cgroup v2 memory.max"}); err == nil {
		t.Error("200 MiB: no error, but the margin alone is larger")
	}
	b, how, err = DefaultMemoryBudget()
	if err != nil || b <= 0 {
		t.Fatalf("DefaultMemoryBudget = %d, %q, %v", b, how, err)
	}
	t.Logf("this machine: %s (%s)", FormatBytes(b), how)
}
