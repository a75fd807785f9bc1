// Package smaps reads how a file's pages are mapped into this process:
// how much of a mapped model file is resident, and how much of that
// through 2 MiB pages, which decode's speed depends on.
package smaps

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// File sums, over this process's mappings of the file with inode ino, the
// resident bytes and the part of them mapped with 2 MiB pages (a tmpfs's
// huge pages, ShmemPmdMapped, or a file system's, FilePmdMapped). Both are
// 0 when /proc/self/smaps cannot be read.
func File(ino uint64) (rss, huge int64) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	return parse(f, ino)
}

// Pages maps the whole file at path read-only, with every page mapped in
// up front (MAP_POPULATE: page tables only, no page is read or copied when
// the file is already in memory, as on a tmpfs), and returns File of it:
// how every page of the file maps, as a reader such as inference would
// map it. Other mappings of the file in this process count too.
func Pages(path string) (rss, huge int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, 0, fmt.Errorf("smaps: %s: %w", path, err)
	}
	if st.Size <= 0 || int64(int(st.Size)) != st.Size {
		return 0, 0, nil
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size), unix.PROT_READ, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return 0, 0, fmt.Errorf("smaps: mapping %s: %w", path, err)
	}
	defer unix.Munmap(m)
	rss, huge = File(st.Ino)
	return rss, huge, nil
}

// PartlyHuge reports whether of rss resident bytes of a file, huge in 2
// MiB pages, less than 95% are. For a file on a tmpfs that gives huge
// pages, that means the tmpfs ran short of free 2 MiB blocks (fragmented
// memory) while the file was written and fell back to 4 KiB pages for
// the rest; decode reads those slower (an 8B file at 65% decoded at 83% of
// a plain read, written again at 100% it reached 106%).
func PartlyHuge(rss, huge int64) bool { return rss > 0 && huge < rss/20*19 }

// parse is File over an smaps listing.
func parse(r io.Reader, ino uint64) (rss, huge int64) {
	want := strconv.FormatUint(ino, 10)
	in := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 5 && strings.Contains(f[0], "-") && !strings.HasSuffix(f[0], ":") {
			in = f[4] == want // address range, perms, offset, device, inode, path
			continue
		}
		if !in || len(f) != 3 || f[2] != "kB" {
			continue
		}
		kb, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "Rss:":
			rss += kb << 10
		case "ShmemPmdMapped:", "FilePmdMapped:":
			huge += kb << 10
		}
	}
	return rss, huge
}
