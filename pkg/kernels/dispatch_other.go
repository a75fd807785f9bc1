//go:build purego || !amd64

package kernels

func hostKernels() []*kernelSet { return nil }

func sumU64(b []byte) uint64 { return sumU64Generic(b) }
