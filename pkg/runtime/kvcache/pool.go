package kvcache

import (
	"container/list"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// ErrPoolFull is returned by Prepare when the pool has no block left: every
// block is held by a sequence and none is cached for eviction. The
// scheduler answers it by preempting a sequence.
var ErrPoolFull = errors.New("kvcache: pool full")

// PoolConfig sizes a Pool.
type PoolConfig struct {
	Type        Type
	BlockTokens int   // positions per block [DefaultBlockTokens]
	Budget      int64 // bytes of blocks and rings the pool may hold [0: unlimited]
	// CacheBudget is the most bytes of blocks no sequence holds that the
	// pool keeps for prefix reuse (prefix.go); the least recently used go
	// first. 0 keeps none.
	CacheBudget int64
}

// Pool is the KV memory of one model generation: fixed-size blocks that
// sequences take as they grow and give back when they end, and the index
// of the blocks kept for prefix reuse. Its methods are safe for concurrent
// use; a block's memory is read without the lock by the caches holding it.
//
// A block belongs to one group (kvcache.go): the global layers' or the
// sliding-window layers', which may differ in size. The budget counts
// bytes, whatever the group.
type Pool struct {
	mu  sync.Mutex
	cfg PoolConfig

	bound  bool            // the layout below is fixed by the first cache
	layout layout          // what the first cache's blocks held
	bb     [groups]int64   // bytes of one block of each group
	blocks []blockInfo     //
	free   [groups][]int32 // unused blocks; the ones with memory at the end
	held   [groups]int     // blocks with memory
	used   [groups]int     // blocks some cache holds
	rings  int64           // bytes of the live caches' rings
	lru    list.List
	cached int64                      // bytes of the blocks in lru
	full   [groups]map[uint64]int32   // hash of a full block's chain → the block
	kids   [groups]map[uint64][]int32 // parent hash → indexed blocks that follow it (full or partial)
	stats  PoolStats
	// rejected names the persisted files Load found corrupt or stale.
	rejected map[string]bool
}

// layout is what a pool's blocks hold: the caches that share them must
// agree on it.
type layout struct {
	typ                      Type
	layers, kvHeads, headDim int
	group                    []int // per layer: its group, -1 for a ring
	window                   int   // the sliding group's widest window
}

// blockInfo is a block's memory and bookkeeping.
type blockInfo struct {
	data    []byte
	group   int
	ref     int
	parent  uint64  // hash of the chain before it (indexed blocks)
	hash    uint64  // hash of its chain (full indexed blocks)
	toks    []int32 // tokens its positions hold (indexed blocks)
	indexed bool    // in kids[parent], and in full[hash] when len(toks) = block
	elem    *list.Element
}

// PoolStats is a snapshot of a pool.
type PoolStats struct {
	BlockBytes  int64 // of one block of each group
	InUseBytes  int64 // blocks held by sequences, each counted once, and rings
	CacheBytes  int64 // blocks kept only for prefix reuse
	Budget      int64
	CacheBudget int64
	Hits        uint64 // Reuse calls that found a prefix
	Misses      uint64 // Reuse calls that found none
	HitTokens   uint64 // positions reused
	Evictions   uint64 // cached blocks given up (cache budget or allocation)
}

// NewPool returns an empty pool.
func NewPool(cfg PoolConfig) *Pool {
	if cfg.BlockTokens <= 0 {
		cfg.BlockTokens = DefaultBlockTokens
	}
	p := &Pool{cfg: cfg, rejected: map[string]bool{}}
	for g := range groups {
		p.full[g], p.kids[g] = map[uint64]int32{}, map[uint64][]int32{}
	}
	return p
}

// BlockTokens is the positions one block holds.
func (p *Pool) BlockTokens() int { return p.cfg.BlockTokens }

// bind fixes the pool's block layout from the first cache and checks the
// others against it, then charges the cache's rings.
func (p *Pool) bind(c *Cache) error {
	g := &c.g
	lay := layout{typ: g.Type, layers: g.Layers, kvHeads: g.KVHeads, headDim: g.HeadDim, window: c.window}
	for l := range c.layers {
		lay.group = append(lay.group, c.layers[l].group)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.bound {
		p.layout, p.bound = lay, true
		for grp := range groups {
			p.bb[grp] = 2 * int64(c.pages[grp]) * int64(c.bt) * int64(c.row)
		}
	} else if lay.typ != p.layout.typ || lay.layers != p.layout.layers || lay.kvHeads != p.layout.kvHeads ||
		lay.headDim != p.layout.headDim || lay.window != p.layout.window || !slices.Equal(lay.group, p.layout.group) {
		return fmt.Errorf("kvcache: a cache of geometry %+v does not fit this pool's blocks", *g)
	}
	if c.rings == 0 {
		return nil
	}
	if p.cfg.Budget > 0 && p.usedBytesLocked()+c.rings > p.cfg.Budget {
		p.evictLocked(p.usedBytesLocked() + c.rings - p.cfg.Budget)
		if p.usedBytesLocked()+c.rings > p.cfg.Budget {
			return fmt.Errorf("%w: no room for a sequence's rings of %d bytes", ErrPoolFull, c.rings)
		}
	}
	p.rings += c.rings
	return nil
}

// BlockBytes is the memory of one block of each group (0 before a cache
// has used the pool).
func (p *Pool) BlockBytes() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bb[global] + p.bb[sliding]
}

// Stats returns a snapshot of the pool's counters.
func (p *Pool) Stats() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.BlockBytes, s.Budget, s.CacheBudget = p.bb[global]+p.bb[sliding], p.cfg.Budget, p.cfg.CacheBudget
	s.InUseBytes = p.inUseLocked()
	s.CacheBytes = p.cached
	return s
}

// InUse is the memory the pool's caches hold, a block shared by several
// counted once: what admission adds its promises to.
func (p *Pool) InUse() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.inUseLocked()
}

func (p *Pool) inUseLocked() int64 {
	return int64(p.used[global])*p.bb[global] + int64(p.used[sliding])*p.bb[sliding] + p.rings
}

// usedBytesLocked is what counts against the budget: held and cached
// blocks, and rings.
func (p *Pool) usedBytesLocked() int64 { return p.inUseLocked() + p.cached }

// allocLocked takes a block of group grp for a cache: a free one, a new
// one within the budget, else room made by evicting the least recently
// used cached ones.
func (p *Pool) allocLocked(grp int) (int32, error) {
	bb := p.bb[grp]
	if over := p.usedBytesLocked() + bb - p.cfg.Budget; p.cfg.Budget > 0 && over > 0 {
		if !p.evictLocked(over) {
			return 0, ErrPoolFull
		}
	}
	var id int32
	if n := len(p.free[grp]); n > 0 {
		id = p.free[grp][n-1]
		p.free[grp] = p.free[grp][:n-1]
	} else {
		id = int32(len(p.blocks))
		p.blocks = append(p.blocks, blockInfo{group: grp})
	}
	b := &p.blocks[id]
	if b.data == nil {
		b.data = make([]byte, bb)
		p.held[grp]++
	}
	b.ref = 1
	p.used[grp]++
	return id, nil
}

// evictLocked frees cached blocks, least recently used first, until bytes
// are freed, and reports whether they were.
func (p *Pool) evictLocked(bytes int64) bool {
	for bytes > 0 {
		e := p.lru.Front()
		if e == nil {
			return false
		}
		id := e.Value.(int32)
		bytes -= p.bb[p.blocks[id].group]
		p.forgetLocked(id)
		p.freeLocked(id)
		p.stats.Evictions++
	}
	return true
}

// forgetLocked takes a block out of the index and the LRU list.
func (p *Pool) forgetLocked(id int32) {
	b := &p.blocks[id]
	if b.elem != nil {
		p.lru.Remove(b.elem)
		p.cached -= p.bb[b.group]
		b.elem = nil
	}
	if !b.indexed {
		return
	}
	full, kids := p.full[b.group], p.kids[b.group]
	if len(b.toks) == p.cfg.BlockTokens && full[b.hash] == id {
		delete(full, b.hash)
	}
	siblings := slices.DeleteFunc(kids[b.parent], func(k int32) bool { return k == id })
	if len(siblings) == 0 {
		delete(kids, b.parent)
	} else {
		kids[b.parent] = siblings
	}
	b.indexed, b.toks = false, nil
}

// freeLocked puts an unreferenced, unindexed block on the free list,
// dropping its memory when the pool holds more than its budget allows (rings
// or the other group may have taken the room since).
func (p *Pool) freeLocked(id int32) {
	b := &p.blocks[id]
	grp := b.group
	heldBytes := int64(p.held[global])*p.bb[global] + int64(p.held[sliding])*p.bb[sliding] + p.rings
	if p.cfg.Budget > 0 && heldBytes > p.cfg.Budget {
		b.data = nil
		p.held[grp]--
		p.free[grp] = slices.Insert(p.free[grp], 0, id) // memoryless blocks are taken last
		return
	}
	p.free[grp] = append(p.free[grp], id)
}

// unrefLocked drops a cache's hold on a block: the block is cached when it
// is indexed and the cache budget has room, else freed.
func (p *Pool) unrefLocked(id int32) {
	b := &p.blocks[id]
	b.ref--
	if b.ref > 0 {
		return
	}
	bb := p.bb[b.group]
	p.used[b.group]--
	if !b.indexed || p.cfg.CacheBudget < bb {
		p.forgetLocked(id)
		p.freeLocked(id)
		return
	}
	b.elem = p.lru.PushBack(id)
	p.cached += bb
	if over := p.cached - p.cfg.CacheBudget; over > 0 {
		p.evictLocked(over)
	}
}

// Prepare makes positions [from, from+n) writable: it takes the blocks
// they need and copies a block another cache shares, or one the index
// serves, before it is written (copy-on-write). The sliding group first
// gives up the blocks the step's first position no longer sees. On
// ErrPoolFull the cache keeps what it had (less those).
func (c *Cache) Prepare(from, n int) error {
	if c.pages[global]+c.pages[sliding] == 0 || n <= 0 {
		return nil
	}
	p := c.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	if c.pages[sliding] > 0 {
		t := &c.tabs[sliding]
		for b := 0; b < len(t.ids) && (b+1)*c.bt <= from-c.window+1; b++ {
			if t.ids[b] >= 0 {
				p.unrefLocked(t.ids[b])
				t.ids[b], t.data[b] = -1, nil
			}
		}
	}
	first, last := from/c.bt, (from+n-1)/c.bt
	for grp := range groups {
		if c.pages[grp] == 0 {
			continue
		}
		t := &c.tabs[grp]
		for b := first; b <= last && b < len(t.ids); b++ {
			if t.ids[b] < 0 {
				continue // a sliding block given up: nothing writes it again
			}
			info := &p.blocks[t.ids[b]]
			if info.ref == 1 && !info.indexed {
				continue
			}
			id, err := p.allocLocked(grp)
			if err != nil {
				return err
			}
			copy(p.blocks[id].data, t.data[b])
			p.unrefLocked(t.ids[b])
			t.ids[b], t.data[b] = id, p.blocks[id].data
			c.hashes = c.hashes[:min(len(c.hashes), b)]
		}
		for len(t.ids) <= last {
			id, err := p.allocLocked(grp)
			if err != nil {
				return err
			}
			t.ids = append(t.ids, id)
			t.data = append(t.data, p.blocks[id].data)
		}
	}
	return nil
}

// Release gives the cache's blocks and rings back to its pool. With keep,
// the blocks of the positions toks holds stay indexed (prefix.go) for
// later requests, the last partial one included; without, they are freed.
// The cache cannot be used afterwards.
func (c *Cache) Release(toks []int32, keep bool) {
	if c.closed {
		return
	}
	c.closed = true
	p := c.pool
	keep = keep && c.Reusable()
	if keep {
		c.Seal(toks)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	full := len(c.hashes)
	partial := keep && len(toks) > full*c.bt && len(toks) < (full+1)*c.bt
	for grp := range groups {
		t := &c.tabs[grp]
		if partial && full < len(t.ids) && t.ids[full] >= 0 {
			p.indexLocked(t.ids[full], c.parent(full), 0, toks[full*c.bt:])
		}
		for _, id := range t.ids {
			if id >= 0 {
				p.unrefLocked(id)
			}
		}
		t.ids, t.data = nil, nil
	}
	p.rings -= c.rings
	c.hashes = nil
}
