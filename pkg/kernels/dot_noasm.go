//go:build purego || !amd64

package kernels

// hostKernels lists the assembly tiers the host runs: none without the
// assembly.
func hostKernels() []*kernelSet { return nil }
