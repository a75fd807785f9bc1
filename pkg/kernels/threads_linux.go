package kernels

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// affinityCPUs counts the CPUs in this thread's affinity mask (the whole
// process's unless someone pinned threads individually).
func affinityCPUs() int {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err == nil {
		if n := set.Count(); n > 0 {
			return n
		}
	}
	return runtime.NumCPU()
}
