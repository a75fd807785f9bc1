package server

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/corelm/corelm/services/loader/internal/loadertest"
)

// dropCache takes path's pages out of the page cache, skipping the test
// where the file system keeps them (a tmpfs: its pages are the file).
func dropCache(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Skipf("cannot drop the page cache: %v", err)
	}
	m, err := mapSource(f, path)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(m)
	id, err := fileID(f)
	if err != nil {
		t.Fatal(err)
	}
	d := openDirect(f, m, id)
	if d == nil {
		t.Skipf("%s stays in the page cache or its file system has no O_DIRECT", path)
	}
	d.Close()
}

// TestColdSourceReadDirect: a source not in the page cache is read with
// O_DIRECT (aligned reads around every piece) and packs to the same bytes
// as the same source read through the page cache; a warm source is not
// read directly.
func TestColdSourceReadDirect(t *testing.T) {
	src, shm := loadertest.SourceDir(t), t.TempDir()
	path := filepath.Join(src, "stories.gguf")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := mapSource(f, path)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(m)
	for i := range m { // warm it
		_ = m[i]
	}
	id, err := fileID(f)
	if err != nil {
		t.Fatal(err)
	}
	if d := openDirect(f, m, id); d != nil {
		d.Close()
		t.Fatal("a source in the page cache was opened for direct reads")
	}

	c := inProcess(t, Options{SourceDir: src, ShmDir: shm})
	warm := loadertest.MustLoad(t, c, "warm", "stories.gguf", false)
	dropCache(t, path)
	cold := loadertest.MustLoad(t, c, "cold", "stories.gguf", false)
	a, err := os.ReadFile(warm.GetPath())
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(cold.GetPath())
	if err != nil {
		t.Fatal(err)
	}
	// The files differ in their annotations (model id) only: compare the
	// digests and the data sections (the same tensors, layouts and CRCs).
	if !bytes.Equal(warm.GetSourceSha256(), cold.GetSourceSha256()) || len(a) != len(b) {
		t.Fatalf("cold load: digest %x, %d bytes; warm: %x, %d bytes", cold.GetSourceSha256(), len(b), warm.GetSourceSha256(), len(a))
	}
	dataOff := int(binary.LittleEndian.Uint64(a[80:])) // the header's data offset
	if !bytes.Equal(a[dataOff:], b[dataOff:]) {
		t.Fatal("the data sections of the cold and warm loads differ")
	}
}
