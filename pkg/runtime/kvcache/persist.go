package kvcache

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/fnv"
	"os"
	"path/filepath"
	"strings"
)

// Persisted prefixes: each full indexed block is a file named by its group
// and chain hash, in a directory named by a hash of the key (the model's digest and
// KV type: blocks never cross models), so a restarted server, or a second
// replica on the same host, starts with the prefixes warm. A file holds a
// header (magic, the key, the block geometry, parent and own hash, the
// tokens), the block's bytes and a CRC-32C of all that. Load checks every
// part and ignores, with a warning, a file that does not match.

const persistMagic = "CLMKVB04" // 02: blocks of a group of layers; 03: each head's positions together; 04: f16 keys in lanes

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// errStale marks a persisted block that is not for this pool.
var errStale = errors.New("kvcache: persisted block does not match")

// errOldFormat marks a block written by an earlier format of this package,
// which nothing reads any more: Load removes its file.
var errOldFormat = errors.New("kvcache: persisted block of an earlier format (removed)")

// persistDir is where key's blocks live under dir.
func persistDir(dir, key string) string {
	h := fnv.New64a()
	h.Write([]byte(key))
	return filepath.Join(dir, fmt.Sprintf("%016x", h.Sum64()))
}

// geometryWords describes the blocks of group grp for the header.
func (p *Pool) geometryWords(grp int) [8]uint32 {
	l := &p.layout
	pages := 0
	for _, g := range l.group {
		if g == grp {
			pages++
		}
	}
	return [8]uint32{uint32(l.typ), uint32(l.layers), uint32(pages), uint32(l.kvHeads), uint32(l.headDim),
		uint32(p.cfg.BlockTokens), uint32(grp), uint32(l.window)}
}

// Save writes the pool's indexed full blocks that dir does not hold yet
// under key, or holds in a file Load rejected, each through a temporary
// file renamed into place. It returns how many it wrote.
func (p *Pool) Save(dir, key string) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.bound {
		return 0, nil
	}
	d := persistDir(dir, key)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return 0, err
	}
	n := 0
	for grp := range groups {
		for _, id := range p.full[grp] {
			b := &p.blocks[id]
			path := filepath.Join(d, fmt.Sprintf("%d-%016x.kvb", grp, b.hash))
			if _, err := os.Stat(path); err == nil && !p.rejected[path] {
				continue
			}
			var buf bytes.Buffer
			buf.WriteString(persistMagic)
			binary.Write(&buf, binary.LittleEndian, uint32(len(key)))
			buf.WriteString(key)
			binary.Write(&buf, binary.LittleEndian, p.geometryWords(grp))
			binary.Write(&buf, binary.LittleEndian, [2]uint64{b.parent, b.hash})
			binary.Write(&buf, binary.LittleEndian, b.toks)
			buf.Write(b.data)
			binary.Write(&buf, binary.LittleEndian, crc32.Checksum(buf.Bytes(), crcTable))
			if err := writeFile(d, path, buf.Bytes()); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// writeFile writes data to path through a temporary file in d.
func writeFile(d, path string, data []byte) error {
	tmp, err := os.CreateTemp(d, ".tmp-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

// Load adds the blocks persisted under key in dir to the pool's index as
// cached blocks, as many as the cache budget holds, and returns how many.
// A file that is corrupt or made for other blocks is reported to warn and
// ignored. The pool's layout must be fixed (a cache made in it) first.
func (p *Pool) Load(dir, key string, warn func(path string, err error)) int {
	d := persistDir(dir, key)
	entries, err := os.ReadDir(d)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			warn(d, err)
		}
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.bound {
		return 0
	}
	n := 0
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".kvb") {
			continue
		}
		if p.cached+max(p.bb[global], p.bb[sliding]) > p.cfg.CacheBudget {
			break
		}
		path := filepath.Join(d, e.Name())
		raw, err := os.ReadFile(path)
		if err == nil {
			err = p.loadLocked(raw, key)
		}
		if err != nil {
			warn(path, err)
			p.rejected[path] = true // Save writes it anew if the block comes back
			if errors.Is(err, errOldFormat) {
				os.Remove(path) // named otherwise now: never rewritten
			}
			continue
		}
		n++
	}
	return n
}

// loadLocked checks one persisted block and, when it is new, adds it.
func (p *Pool) loadLocked(raw []byte, key string) error {
	if len(raw) < 4 {
		return fmt.Errorf("%w: %d bytes", errStale, len(raw))
	}
	body, sum := raw[:len(raw)-4], binary.LittleEndian.Uint32(raw[len(raw)-4:])
	if crc32.Checksum(body, crcTable) != sum {
		return errors.New("kvcache: persisted block fails its checksum")
	}
	r := bytes.NewReader(body)
	magic := make([]byte, len(persistMagic))
	r.Read(magic)
	var klen uint32
	binary.Read(r, binary.LittleEndian, &klen)
	if string(magic) != persistMagic && string(magic[:6]) == persistMagic[:6] && string(magic) < persistMagic {
		return errOldFormat
	}
	if string(magic) != persistMagic || int(klen) != len(key) {
		return fmt.Errorf("%w: magic or key differ", errStale)
	}
	k := make([]byte, klen)
	r.Read(k)
	var geo [8]uint32
	binary.Read(r, binary.LittleEndian, &geo)
	grp := int(geo[6])
	if string(k) != key || grp >= groups || geo != p.geometryWords(grp) {
		return fmt.Errorf("%w: key or geometry differ", errStale)
	}
	bt := p.cfg.BlockTokens
	if want := 2*8 + 4*bt + int(p.bb[grp]); r.Len() != want {
		return fmt.Errorf("%w: %d bytes of block, want %d", errStale, r.Len(), want)
	}
	var hashes [2]uint64
	binary.Read(r, binary.LittleEndian, &hashes)
	toks := make([]int32, bt)
	binary.Read(r, binary.LittleEndian, toks)
	if chainHash(hashes[0], toks) != hashes[1] {
		return fmt.Errorf("%w: its tokens do not hash to its name", errStale)
	}
	if _, dup := p.full[grp][hashes[1]]; dup || p.cfg.CacheBudget < p.bb[grp] {
		return nil
	}
	id, err := p.allocLocked(grp)
	if err != nil {
		return err
	}
	r.Read(p.blocks[id].data)
	p.indexLocked(id, hashes[0], hashes[1], toks)
	p.unrefLocked(id)
	return nil
}
