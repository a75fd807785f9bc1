package smaps

import (
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const listing = `7f0000000000-7f0040000000 r--s 00000000 00:28 4242 /mnt/hp/m-1.clm
Size:            1048576 kB
Rss:              655360 kB
ShmemPmdMapped:   524288 kB
FilePmdMapped:         0 kB
VmFlags: rd sh mr mw me ms sd
7f0040000000-7f0040200000 r--s 40000000 00:28 4242 /mnt/hp/m-1.clm
Rss:                2048 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:      2048 kB
7f0050000000-7f0050100000 rw-p 00000000 00:00 0 
Rss:                1024 kB
ShmemPmdMapped:     1024 kB
7f0060000000-7f0060100000 r--s 00000000 00:28 42424 /mnt/hp/other.clm
Rss:                 512 kB
ShmemPmdMapped:      512 kB
`

func TestParse(t *testing.T) {
	rss, huge := parse(strings.NewReader(listing), 4242)
	if rss != (655360+2048)<<10 || huge != (524288+2048)<<10 {
		t.Errorf("inode 4242: rss %d, huge %d", rss, huge)
	}
	if rss, huge := parse(strings.NewReader(listing), 42424); rss != 512<<10 || huge != 512<<10 {
		t.Errorf("inode 42424: rss %d, huge %d", rss, huge)
	}
	if rss, huge := parse(strings.NewReader(listing), 1); rss != 0 || huge != 0 {
		t.Errorf("an inode not mapped: rss %d, huge %d", rss, huge)
	}
}

// TestFile maps a file of this test and finds its resident pages.
func TestFile(t *testing.T) {
	path := t.TempDir() + "/f"
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, len(data), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	sum := 0
	for i := 0; i < len(m); i += 4096 {
		sum += int(m[i])
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	rss, huge := File(st.Ino)
	if rss != int64(len(data)) || huge > rss {
		t.Errorf("a 1 MiB mapping read through: rss %d, huge %d (sum %d)", rss, huge, sum)
	}
}

// TestPages maps a whole file in at once.
func TestPages(t *testing.T) {
	path := t.TempDir() + "/f"
	if err := os.WriteFile(path, make([]byte, 3<<20+5), 0o644); err != nil {
		t.Fatal(err)
	}
	rss, huge, err := Pages(path)
	if err != nil || rss != 3<<20+4096 || huge > rss {
		t.Errorf("a file of 3 MiB + 5 bytes: rss %d, huge %d, err %v", rss, huge, err)
	}
	if _, _, err := Pages(path + ".missing"); err == nil {
		t.Error("no error for a missing file")
	}
	empty := t.TempDir() + "/empty"
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if rss, huge, err := Pages(empty); rss != 0 || huge != 0 || err != nil {
		t.Errorf("an empty file: rss %d, huge %d, err %v", rss, huge, err)
	}
}

func TestPartlyHuge(t *testing.T) {
	for _, c := range []struct {
		rss, huge int64
		want      bool
	}{{0, 0, false}, {100, 0, true}, {100, 94, true}, {100, 95, false}, {100, 100, false}} {
		if got := PartlyHuge(c.rss, c.huge); got != c.want {
			t.Errorf("PartlyHuge(%d, %d) = %v", c.rss, c.huge, got)
		}
	}
}
