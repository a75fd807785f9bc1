//go:build !linux

package kernels

import "runtime"

// affinityCPUs falls back to the runtime's count where there is no
// sched_getaffinity; the cgroup files do not exist there either.
func affinityCPUs() int { return runtime.NumCPU() }
