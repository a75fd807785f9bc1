package runtime

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Memory is how much memory this process may use and where that number
// comes from: the tightest cgroup memory limit along the process's cgroup
// ancestry (v2 memory.max, v1 memory.limit_in_bytes), or physical memory
// (MemTotal) when there is no limit or the limit is larger.
type Memory struct {
	Limit  int64  // bytes
	Source string // e.g. "cgroup v2 memory.max", "physical memory"
}

// DetectMemory reads the process's memory limit from /proc and
// /sys/fs/cgroup.
func DetectMemory() (Memory, error) { return detectMemory("/") }

// detectMemory is DetectMemory with the file system rooted at root (tests
// give it a fake /proc and /sys/fs/cgroup).
func detectMemory(root string) (Memory, error) {
	phys, err := memTotal(filepath.Join(root, "proc", "meminfo"))
	if err != nil {
		return Memory{}, err
	}
	mem := Memory{Limit: phys, Source: "physical memory"}
	self, err := os.ReadFile(filepath.Join(root, "proc", "self", "cgroup"))
	if err != nil {
		return mem, nil // no cgroups: physical memory it is
	}
	if limit, source, ok := cgroupMemoryLimit(self, filepath.Join(root, "sys", "fs", "cgroup")); ok && limit < phys {
		mem = Memory{Limit: limit, Source: source}
	}
	return mem, nil
}

// memTotal reads MemTotal from a /proc/meminfo file.
func memTotal(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("physical memory: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil || kb <= 0 {
				break
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("physical memory: no MemTotal in %s", path)
}

// cgroupMemoryLimit returns the smallest memory limit of the cgroups listed
// in self (the contents of /proc/self/cgroup) and their ancestors, with the
// cgroup file system mounted at root. Levels that do not exist under root
// are skipped: a container with a cgroup namespace sees its own cgroup as
// "/", at the mount root. "max" (v2) and v1's page-rounded "unlimited"
// (about 2^63) are no limit.
func cgroupMemoryLimit(self []byte, root string) (limit int64, source string, ok bool) {
	for _, line := range strings.Split(string(self), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		ctrls, path := parts[1], parts[2]
		var base, file, name string
		switch {
		case parts[0] == "0" && ctrls == "": // v2 unified hierarchy
			base, file, name = root, "memory.max", "cgroup v2 memory.max"
			if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err != nil {
				// A hybrid host mounts the unified hierarchy at
				// <root>/unified, with the memory controller in v1.
				base = filepath.Join(root, "unified")
			}
		case hasCgroupController(ctrls, "memory"): // v1
			base, file, name = filepath.Join(root, "memory"), "memory.limit_in_bytes", "cgroup v1 memory.limit_in_bytes"
		default:
			continue
		}
		for p := filepath.Clean("/" + path); ; p = filepath.Dir(p) {
			if n, found := readLimit(filepath.Join(base, p, file)); found && (!ok || n < limit) {
				limit, source, ok = n, name, true
			}
			if p == "/" {
				break
			}
		}
	}
	return limit, source, ok
}

// readLimit parses a cgroup memory limit file; found is false for a
// missing file or no limit.
func readLimit(path string) (n int64, found bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, false
	}
	n, err = strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n >= 1<<62 {
		return 0, false
	}
	return n, true
}

func hasCgroupController(list, name string) bool {
	for _, c := range strings.Split(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

// MemoryMargin is what the default memory budget leaves out of a limit of
// limit bytes, for what the budget does not count: 256 MiB for the
// process's own heap and stacks (tokenizer tables, chat template, logits
// and sampler buffers of every sequence, gRPC buffers, with the garbage
// collector's headroom; an 8B model served idle holds ~32 MiB of anonymous
// memory) and 1/32 of the limit for the rest of the machine (page tables,
// the kernel and other processes on a host without a cgroup; the page cache
// a cgroup is charged for files it reads). Past a cgroup's limit the process
// is killed, not told: better a slightly shorter context than an OOM kill.
// 448 MiB of 6 GiB.
func MemoryMargin(limit int64) int64 {
	return 256<<20 + limit/32
}

// DefaultMemoryBudget is the memory budget of a process that was given
// none: its memory limit (DetectMemory) minus MemoryMargin. The string says
// how it was derived, for the start-up log.
func DefaultMemoryBudget() (int64, string, error) {
	mem, err := DetectMemory()
	if err != nil {
		return 0, "", err
	}
	return BudgetFrom(mem)
}

// BudgetFrom is DefaultMemoryBudget for a given limit.
func BudgetFrom(mem Memory) (int64, string, error) {
	margin := MemoryMargin(mem.Limit)
	if mem.Limit <= margin {
		return 0, "", fmt.Errorf("%w: %s is %d bytes, less than the %d-byte margin the default budget keeps free", ErrOverBudget, mem.Source, mem.Limit, margin)
	}
	return mem.Limit - margin, fmt.Sprintf("%s %s − margin %s", mem.Source, FormatBytes(mem.Limit), FormatBytes(margin)), nil
}
