package server

import (
	"strings"
	"testing"
)

const mountinfo = `22 1 0:21 / / rw,relatime - ext4 /dev/vda rw
25 22 0:23 / /dev rw,nosuid - devtmpfs udev rw,size=4096k
26 25 0:24 / /dev/shm rw,nosuid,nodev - tmpfs tmpfs rw,size=24683620k
40 22 0:40 / /mnt/hp rw,relatime - tmpfs tmpfs rw,size=8388608k,huge=within_size
41 40 0:41 / /mnt/hp/inner rw,relatime - tmpfs tmpfs rw,size=1024k,huge=advise
42 22 0:42 / /mnt/with\040space rw,relatime shared:7 - tmpfs tmpfs rw,huge=always
43 22 0:43 / /dev/shm rw,relatime - tmpfs tmpfs rw,huge=always
`

func TestFindMount(t *testing.T) {
	for _, c := range []struct {
		dir, point, fs, huge string
		hugePages            bool
	}{
		{"/var/lib/corelm", "/", "ext4", "never", false},
		{"/mnt/hp", "/mnt/hp", "tmpfs", "within_size", true},
		{"/mnt/hp/corelm", "/mnt/hp", "tmpfs", "within_size", true},
		{"/mnt/hpx/corelm", "/", "ext4", "never", false},
		{"/mnt/hp/inner/x", "/mnt/hp/inner", "tmpfs", "advise", false},
		{"/mnt/with space/m", "/mnt/with space", "tmpfs", "always", true},
		{"/dev/shm/corelm", "/dev/shm", "tmpfs", "always", true}, // the later mount over /dev/shm wins
		{"/dev/null", "/dev", "devtmpfs", "never", false},
	} {
		m, ok := findMount(strings.NewReader(mountinfo), c.dir)
		if !ok || m.point != c.point || m.fs != c.fs || m.huge != c.huge || m.hugePages() != c.hugePages {
			t.Errorf("%s: got %+v (found %v, huge pages %v), want %s %s huge=%s (%v)",
				c.dir, m, ok, m.hugePages(), c.point, c.fs, c.huge, c.hugePages)
		}
	}
	if _, ok := findMount(strings.NewReader("garbage\n\n1 2 3 - x\n"), "/x"); ok {
		t.Error("found a mount in a listing without one")
	}
}
