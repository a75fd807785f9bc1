package kernels

import (
	"os"
	"path/filepath"
	"testing"
)

func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCgroupCPULimit(t *testing.T) {
	tests := []struct {
		name   string
		self   string
		files  map[string]string
		want   float64
		wantOK bool
	}{
		{"v2 quota", "0::/app\n", map[string]string{"app/cpu.max": "150000 100000\n"}, 1.5, true},
		{"v2 unlimited", "0::/app\n", map[string]string{"app/cpu.max": "max 100000\n", "cpu.max": "max 100000\n"}, 0, false},
		{"v2 tighter ancestor", "0::/a/b\n", map[string]string{"a/b/cpu.max": "400000 100000", "a/cpu.max": "200000 100000"}, 2, true},
		{"v2 namespaced: path missing, root counts", "0::/kubepods/pod1/c1\n", map[string]string{"cpu.max": "50000 100000"}, 0.5, true},
		{"v2 no files", "0::/\n", nil, 0, false},
		{"v1 quota", "12:memory:/x\n4:cpu,cpuacct:/docker/abc\n", map[string]string{
			"cpu,cpuacct/docker/abc/cpu.cfs_quota_us":  "300000\n",
			"cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
		}, 3, true},
		{"v1 no quota", "4:cpu:/\n", map[string]string{"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, 0, false},
		{"garbage", "not a cgroup line\n", map[string]string{"cpu.max": "abc def"}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeFiles(t, root, tt.files)
			got, ok := cgroupCPULimit([]byte(tt.self), root)
			if ok != tt.wantOK || (ok && got != tt.want) {
				t.Errorf("cgroupCPULimit = %v, %v; want %v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestDefaultThreads(t *testing.T) {
	n := DefaultThreads()
	if n < 1 || n > affinityCPUs() {
		t.Errorf("DefaultThreads() = %d, affinity %d", n, affinityCPUs())
	}
	t.Logf("DefaultThreads() = %d (affinity %d)", n, affinityCPUs())
}
