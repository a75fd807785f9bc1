package kvcache

// Prefix reuse, as vLLM does it: a full block is named by the hash of its
// parent's name and its own tokens, so equal names mean equal token
// prefixes up to and including the block (the tokens are compared too, so
// a hash collision costs a miss, never a wrong answer). A block keeps its
// tokens and is listed under its parent's name, so a prefix that ends
// inside a block still finds the block and copies the positions it shares.
//
// Each group of layers has its own blocks and index under the same names:
// a prefix needs the global layers' blocks from its start, but the
// sliding-window layers' only from a window before its end, so a prefix
// longer than the window hits even when the sliding layers' first blocks
// are gone. A cache with rings (New's) takes no part (Reusable).

// rootHash names the empty prefix.
const rootHash uint64 = 14695981039346656037 // FNV-1a offset basis

// chainHash names the block holding toks after the prefix named parent
// (FNV-1a over the parent's name and the tokens' little-endian bytes).
func chainHash(parent uint64, toks []int32) uint64 {
	const prime = 1099511628211
	h := rootHash
	for i := 0; i < 8; i++ {
		h = (h ^ (parent >> (8 * i) & 0xff)) * prime
	}
	for _, t := range toks {
		u := uint32(t)
		for i := 0; i < 4; i++ {
			h = (h ^ uint64(u>>(8*i)&0xff)) * prime
		}
	}
	return h
}

// Reusable reports whether the cache's positions can be shared: it keeps
// no ring (a cache made by New does for its sliding-window layers).
func (c *Cache) Reusable() bool { return c.rings == 0 }

// parent is the name of the prefix before block b.
func (c *Cache) parent(b int) uint64 {
	if b == 0 {
		return rootHash
	}
	return c.hashes[b-1]
}

// indexLocked lists block id under parent in its group's index, with its
// tokens (a copy), and, when full, under its own name hash unless another
// block of the group has it.
func (p *Pool) indexLocked(id int32, parent, hash uint64, toks []int32) {
	b := &p.blocks[id]
	if b.indexed {
		return
	}
	b.indexed, b.parent, b.hash, b.toks = true, parent, hash, append([]int32(nil), toks...)
	p.kids[b.group][parent] = append(p.kids[b.group][parent], id)
	if len(toks) == p.cfg.BlockTokens {
		if _, dup := p.full[b.group][hash]; !dup {
			p.full[b.group][hash] = id
		}
	}
}

// Seal names the cache's blocks that toks (the tokens of its positions
// 0..len(toks)-1) fill completely and lists them in the pool's index, each
// group's in its own: a sliding layer's block is sealed before the window
// passes it, so it too stays cached for later requests.
func (c *Cache) Seal(toks []int32) {
	if !c.Reusable() {
		return
	}
	p := c.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	for b := len(c.hashes); (b+1)*c.bt <= len(toks) && b < c.blocks(); b++ {
		blk := toks[b*c.bt : (b+1)*c.bt]
		parent := c.parent(b)
		h := chainHash(parent, blk)
		for grp := range groups {
			if t := &c.tabs[grp]; b < len(t.ids) && t.ids[b] >= 0 {
				p.indexLocked(t.ids[b], parent, h, blk)
			}
		}
		c.hashes = append(c.hashes, h)
	}
}

// fullLocked returns group grp's full block named h if it holds blk.
func (p *Pool) fullLocked(grp int, h uint64, blk []int32) (int32, bool) {
	id, ok := p.full[grp][h]
	if !ok || !equal(p.blocks[id].toks, blk) {
		return 0, false
	}
	return id, true
}

// match is a prefix the index can serve: its full blocks' names, and the
// positions of the next block to copy from each group's listed block.
type match struct {
	hashes []uint64
	copied int
	from   [groups]int32
}

// matchLocked finds the longest prefix of toks the cache can be given: the
// global layers need all its blocks, the sliding ones only those the next
// position still sees (its window back); with partial, the block the
// prefix ends in may be copied as far as each group has its tokens.
func (c *Cache) matchLocked(toks []int32, partial bool) (m match) {
	p := c.pool
	parent := rootHash
	for k := 0; (k+1)*c.bt <= len(toks); k++ {
		blk := toks[k*c.bt : (k+1)*c.bt]
		h := chainHash(parent, blk)
		if _, ok := p.fullLocked(global, h, blk); c.pages[global] > 0 && !ok {
			break
		}
		m.hashes = append(m.hashes, h)
		parent = h
	}
	if partial {
		rest := toks[len(m.hashes)*c.bt:]
		m.copied = len(rest)
		for grp := range groups {
			if c.pages[grp] == 0 {
				continue
			}
			m.from[grp] = -1
			best := 0
			for _, id := range p.kids[grp][parent] {
				if k := common(p.blocks[id].toks, rest); k > best {
					m.from[grp], best = id, k
				}
			}
			m.copied = min(m.copied, best)
		}
	}
	// Shorten the prefix until the sliding group has every block in view
	// of its end: first without the copy, then a block at a time.
	for {
		n := len(m.hashes)*c.bt + m.copied
		if n == 0 || c.slidingServes(toks, m.hashes, n) {
			return m
		}
		if m.copied > 0 {
			m.copied = 0
		} else {
			m.hashes = m.hashes[:len(m.hashes)-1]
		}
	}
}

// slidingServes reports whether the sliding group's index holds the full
// blocks, named by hashes, that a prefix of n positions needs: those the
// position after it sees (its window back).
func (c *Cache) slidingServes(toks []int32, hashes []uint64, n int) bool {
	if c.pages[sliding] == 0 {
		return true
	}
	for b := max(0, n-c.window+1) / c.bt; b < len(hashes); b++ {
		if _, ok := c.pool.fullLocked(sliding, hashes[b], toks[b*c.bt:(b+1)*c.bt]); !ok {
			return false
		}
	}
	return true
}

// Reuse gives an empty cache the longest prefix of toks, at most max
// positions, that the pool's index holds: whole blocks are shared (their
// reference counts go up), and the positions a listed block shares with
// the rest are copied into a block of the cache's own. A sliding-window
// layer gets only the blocks in view of the prefix's end. It returns how
// many positions the cache now holds; 0 when nothing matched.
func (c *Cache) Reuse(toks []int32, max int) int {
	if !c.Reusable() || c.blocks() > 0 || c.closed {
		return 0
	}
	max = min(max, len(toks), c.g.Context)
	p := c.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	m := c.matchLocked(toks[:max], true)
	if !c.takeLocked(m) {
		// No block for the copy: the whole blocks alone.
		m = c.matchLocked(toks[:max], false)
		c.takeLocked(m)
	}
	n := len(m.hashes)*c.bt + m.copied
	if n > 0 {
		p.stats.Hits++
		p.stats.HitTokens += uint64(n)
	} else {
		p.stats.Misses++
	}
	return n
}

// takeLocked gives the cache the blocks of m, or nothing and false when
// the pool has no block for a copy.
func (c *Cache) takeLocked(m match) bool {
	p := c.pool
	n := len(m.hashes)*c.bt + m.copied
	lo := 0 // the first block the sliding group needs
	if c.pages[sliding] > 0 {
		lo = max(0, n-c.window+1) / c.bt
	}
	// Every block is held before the copies are allocated, which may
	// evict cached blocks to make room.
	for grp := range groups {
		if c.pages[grp] == 0 {
			continue
		}
		t := &c.tabs[grp]
		for b, h := range m.hashes {
			if grp == sliding && b < lo {
				t.ids, t.data = append(t.ids, -1), append(t.data, nil)
				continue
			}
			id := p.full[grp][h]
			p.refLocked(id)
			t.ids, t.data = append(t.ids, id), append(t.data, p.blocks[id].data)
		}
		if m.copied > 0 {
			p.refLocked(m.from[grp])
		}
	}
	if m.copied == 0 {
		c.hashes = append(c.hashes[:0], m.hashes...)
		return true
	}
	ok := true
	for grp := range groups {
		if c.pages[grp] == 0 || !ok {
			continue
		}
		id, err := p.allocLocked(grp)
		if err != nil {
			ok = false
			continue
		}
		t := &c.tabs[grp]
		sd, dd := p.blocks[m.from[grp]].data, p.blocks[id].data
		for page := range c.pages[grp] {
			ko, vo := c.offsets(page)
			for _, base := range [2]int{ko, vo} {
				for h := range c.g.KVHeads {
					// Whole groups of keys in lanes: the positions past
					// m.copied in the last one are written before they are
					// read.
					off, n := base+h*c.bt*c.head, min((m.copied+keyGroup-1)&^(keyGroup-1), c.bt)
					copy(dd[off:off+n*c.head], sd[off:off+n*c.head])
				}
			}
		}
		t.ids, t.data = append(t.ids, id), append(t.data, dd)
	}
	for grp := range groups {
		if c.pages[grp] > 0 {
			p.unrefLocked(m.from[grp])
		}
	}
	if !ok {
		c.dropLocked()
		return false
	}
	c.hashes = append(c.hashes[:0], m.hashes...)
	return true
}

// dropLocked gives back every block the cache holds.
func (c *Cache) dropLocked() {
	for grp := range groups {
		t := &c.tabs[grp]
		for _, id := range t.ids {
			if id >= 0 {
				c.pool.unrefLocked(id)
			}
		}
		t.ids, t.data = nil, nil
	}
	c.hashes = nil
}

// Shared is the memory of the blocks of toks's prefix that caches of the
// pool hold now: a request that will reuse them takes nothing more for
// them, so admission counts them once.
func (p *Pool) Shared(toks []int32) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	bt := p.cfg.BlockTokens
	lo := 0 // the first block in view of the prompt's end
	if p.layout.window > 0 {
		lo = max(0, len(toks)-p.layout.window) / bt
	}
	var n int64
	parent := rootHash
	for k := 0; (k+1)*bt <= len(toks); k++ {
		blk := toks[k*bt : (k+1)*bt]
		h := chainHash(parent, blk)
		found := false
		for grp := range groups {
			if id, ok := p.fullLocked(grp, h, blk); ok && (grp == global || k >= lo) {
				found = true
				if p.blocks[id].ref > 0 {
					n += p.bb[grp]
				}
			}
		}
		if !found {
			break
		}
		parent = h
	}
	return n
}

// refLocked takes a hold on an indexed block, out of the LRU list if it was
// only cached.
func (p *Pool) refLocked(id int32) {
	b := &p.blocks[id]
	if b.ref == 0 {
		if b.elem != nil {
			p.lru.Remove(b.elem)
			p.cached -= p.bb[b.group]
			b.elem = nil
		}
		p.used[b.group]++
	}
	b.ref++
}

func equal(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// common is the length of the common prefix of a and b.
func common(a, b []int32) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}
