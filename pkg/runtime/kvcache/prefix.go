package kvcache

// Prefix reuse, as vLLM does it: a full block is named by the hash of its
// parent's name and its own tokens, so equal names mean equal token
// prefixes up to and including the block (the tokens are compared too, so
// a hash collision costs a miss, never a wrong answer). A block keeps its
// tokens and is listed under its parent's name, so a prefix that ends
// inside a block still finds the block and copies the positions it shares.
//
// Only paged layers can be shared: a cache with rings (sliding-window
// layers narrower than the context) takes no part (Reusable).

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

// Reusable reports whether the cache's positions can be shared: all its
// layers are paged.
func (c *Cache) Reusable() bool { return c.rings == 0 }

// parent is the name of the prefix before block b.
func (c *Cache) parent(b int) uint64 {
	if b == 0 {
		return rootHash
	}
	return c.hashes[b-1]
}

// indexLocked lists block id under parent, with its tokens (a copy), and,
// when full, under its own name hash unless another block has it.
func (p *Pool) indexLocked(id int32, parent, hash uint64, toks []int32) {
	b := &p.blocks[id]
	if b.indexed {
		return
	}
	b.indexed, b.parent, b.hash, b.toks = true, parent, hash, append([]int32(nil), toks...)
	p.kids[parent] = append(p.kids[parent], id)
	if len(toks) == p.cfg.BlockTokens {
		if _, dup := p.full[hash]; !dup {
			p.full[hash] = id
		}
	}
}

// Seal names the cache's blocks that toks (the tokens of its positions
// 0..len(toks)-1) fill completely and lists them in the pool's index.
func (c *Cache) Seal(toks []int32) {
	if !c.Reusable() {
		return
	}
	p := c.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	for b := len(c.hashes); (b+1)*c.bt <= len(toks) && b < len(c.ids); b++ {
		blk := toks[b*c.bt : (b+1)*c.bt]
		parent := c.parent(b)
		h := chainHash(parent, blk)
		p.indexLocked(c.ids[b], parent, h, blk)
		c.hashes = append(c.hashes, h)
	}
}

// Reuse gives an empty cache the longest prefix of toks, at most max
// positions, that the pool's index holds: whole blocks are shared (their
// reference counts go up), and the positions a listed block shares with
// the rest are copied into a block of the cache's own. It returns how many
// positions the cache now holds; 0 when nothing matched or the pool has no
// block for the copy.
func (c *Cache) Reuse(toks []int32, max int) int {
	if !c.Reusable() || len(c.ids) > 0 || c.closed {
		return 0
	}
	max = min(max, len(toks), c.g.Context)
	p := c.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	parent := rootHash
	n := 0
	for n+c.bt <= max {
		blk := toks[n : n+c.bt]
		h := chainHash(parent, blk)
		id, ok := p.full[h]
		if !ok || !equal(p.blocks[id].toks, blk) {
			break
		}
		p.refLocked(id)
		c.ids = append(c.ids, id)
		c.data = append(c.data, p.blocks[id].data)
		c.hashes = append(c.hashes, h)
		parent = h
		n += c.bt
	}
	// The rest of the block: copy the longest run of it another block holds.
	rest := toks[n:max]
	best, bestLen := int32(-1), 0
	for _, id := range p.kids[parent] {
		if k := common(p.blocks[id].toks, rest); k > bestLen {
			best, bestLen = id, k
		}
	}
	if bestLen > 0 {
		p.refLocked(best) // not evicted to make room for its own copy
		id, err := p.allocLocked()
		if err == nil {
			src, dst := p.blocks[best].data, p.blocks[id].data
			for page := 0; page < c.g.paged(); page++ {
				for _, off := range [2]int{2 * page * c.bt * c.row, (2*page + 1) * c.bt * c.row} {
					copy(dst[off:off+bestLen*c.row], src[off:off+bestLen*c.row])
				}
			}
			c.ids = append(c.ids, id)
			c.data = append(c.data, dst)
			n += bestLen
		}
		p.unrefLocked(best)
	}
	if n > 0 {
		p.stats.Hits++
		p.stats.HitTokens += uint64(n)
	} else {
		p.stats.Misses++
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
			b.elem = nil
		}
		p.used++
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
