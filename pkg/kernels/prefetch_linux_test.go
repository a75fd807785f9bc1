package kernels

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestPrefetch: the prefetch kernel takes any length and alignment, up to
// the last byte of a mapping followed by an inaccessible page, and changes
// nothing (a hint: the bytes read back as written).
func TestPrefetch(t *testing.T) {
	page := os.Getpagesize()
	m, err := unix.Mmap(-1, 0, 2*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Skip(err)
	}
	defer unix.Munmap(m)
	if err := unix.Mprotect(m[page:], unix.PROT_NONE); err != nil {
		t.Fatal(err)
	}
	b := m[:page]
	for i := range b {
		b[i] = byte(i * 7)
	}
	for _, k := range hostKernels() {
		for _, n := range []int{1, 2, 63, 64, 65, 127, 1000, page} {
			for _, off := range []int{0, 1, 33, 63} {
				if off+n > page {
					continue
				}
				k.prefetch(b[off : off+n])           // from the start
				k.prefetch(b[page-n-off : page-off]) // to the last byte before the guard
			}
		}
	}
	for i := range b {
		if b[i] != byte(i*7) {
			t.Fatalf("byte %d changed", i)
		}
	}
}
