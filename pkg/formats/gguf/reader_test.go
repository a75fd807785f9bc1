package gguf

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestOpenIdentity: Open maps the file and knows its device and inode (the
// inference service reports that mapping's resident pages); a File from
// Parse has none.
func TestOpenIdentity(t *testing.T) {
	b := mustBytes(t, sampleWriter(t, 3, 0))
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := os.WriteFile(path, b, 0o444); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if dev, ino := f.Identity(); dev != uint64(st.Dev) || ino != st.Ino || ino == 0 {
		t.Errorf("identity (%d, %d), stat says (%d, %d)", dev, ino, st.Dev, st.Ino)
	}
	if dev, ino := mustParse(t, b).Identity(); dev != 0 || ino != 0 {
		t.Errorf("a parsed File's identity (%d, %d), want none", dev, ino)
	}
}
