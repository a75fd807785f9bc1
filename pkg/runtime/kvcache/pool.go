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
type Pool struct {
	mu  sync.Mutex
	cfg PoolConfig

	bound  bool     // the layout below is fixed by the first cache
	layout Geometry // Layers, KVHeads, HeadDim and which layers are paged
	bb     int64    // bytes of one block

	blocks []blockInfo
	free   []int32 // unused blocks; the ones with memory at the end
	held   int     // blocks with memory
	used   int     // blocks some cache holds
	rings  int64   // bytes of the live caches' rings
	lru    list.List
	full   map[uint64]int32   // hash of a full block's chain → the block
	kids   map[uint64][]int32 // parent hash → indexed blocks that follow it (full or partial)
	stats  PoolStats
}

// blockInfo is a block's memory and bookkeeping.
type blockInfo struct {
	data    []byte
	ref     int
	parent  uint64  // hash of the chain before it (indexed blocks)
	hash    uint64  // hash of its chain (full indexed blocks)
	toks    []int32 // tokens its positions hold (indexed blocks)
	indexed bool    // in kids[parent], and in full[hash] when len(toks) = block
	elem    *list.Element
}

// PoolStats is a snapshot of a pool.
type PoolStats struct {
	BlockBytes  int64
	InUseBytes  int64 // blocks held by sequences, and rings
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
	return &Pool{cfg: cfg, full: map[uint64]int32{}, kids: map[uint64][]int32{}}
}

// BlockTokens is the positions one block holds.
func (p *Pool) BlockTokens() int { return p.cfg.BlockTokens }

// bind fixes the pool's block layout from the first cache's geometry and
// checks the others against it, then charges the cache's rings.
func (p *Pool) bind(g *Geometry, rings int64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.bound {
		p.layout = Geometry{Type: g.Type, Layers: g.Layers, KVHeads: g.KVHeads, HeadDim: g.HeadDim, Block: g.Block}
		p.layout.Window = make([]int, g.Layers)
		for l := range g.Layers {
			if g.ring(l) {
				p.layout.Window[l] = 1 // marks a ring: its layer has no room in the blocks
			}
		}
		p.layout.Context, p.layout.Chunk = 1<<30, 0
		p.bb = g.BlockBytes()
		p.bound = true
	} else {
		if g.Layers != p.layout.Layers || g.KVHeads != p.layout.KVHeads || g.HeadDim != p.layout.HeadDim || g.BlockBytes() != p.bb {
			return fmt.Errorf("kvcache: a cache of geometry %+v does not fit this pool's blocks", *g)
		}
		for l := range g.Layers {
			if g.ring(l) != (p.layout.Window[l] != 0) {
				return fmt.Errorf("kvcache: layer %d is a ring in one cache of this pool and paged in another", l)
			}
		}
	}
	if p.cfg.Budget > 0 && p.usedBytesLocked()+rings > p.cfg.Budget && rings > 0 {
		p.evictLocked(int((p.usedBytesLocked() + rings - p.cfg.Budget + p.bb - 1) / max(p.bb, 1)))
		if p.usedBytesLocked()+rings > p.cfg.Budget {
			return fmt.Errorf("%w: no room for a sequence's rings of %d bytes", ErrPoolFull, rings)
		}
	}
	p.rings += rings
	return nil
}

// BlockBytes is the memory of one block (0 before a cache has used the pool).
func (p *Pool) BlockBytes() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bb
}

// Stats returns a snapshot of the pool's counters.
func (p *Pool) Stats() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.BlockBytes, s.Budget, s.CacheBudget = p.bb, p.cfg.Budget, p.cfg.CacheBudget
	s.InUseBytes = int64(p.used)*p.bb + p.rings
	s.CacheBytes = int64(p.lru.Len()) * p.bb
	return s
}

// usedBytesLocked is what counts against the budget: held and cached
// blocks, and rings.
func (p *Pool) usedBytesLocked() int64 {
	return int64(p.used+p.lru.Len())*p.bb + p.rings
}

// allocLocked takes a block for a cache: a free one, a new one within the
// budget, else the least recently used cached one.
func (p *Pool) allocLocked() (int32, error) {
	if p.cfg.Budget > 0 && p.usedBytesLocked()+p.bb > p.cfg.Budget {
		if !p.evictLocked(1) {
			return 0, ErrPoolFull
		}
	}
	var id int32
	if n := len(p.free); n > 0 {
		id = p.free[n-1]
		p.free = p.free[:n-1]
	} else {
		id = int32(len(p.blocks))
		p.blocks = append(p.blocks, blockInfo{})
	}
	b := &p.blocks[id]
	if b.data == nil {
		b.data = make([]byte, p.bb)
		p.held++
	}
	b.ref = 1
	p.used++
	return id, nil
}

// evictLocked frees up to n cached blocks, least recently used first, and
// reports whether it freed n.
func (p *Pool) evictLocked(n int) bool {
	for ; n > 0; n-- {
		e := p.lru.Front()
		if e == nil {
			return false
		}
		id := e.Value.(int32)
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
		b.elem = nil
	}
	if !b.indexed {
		return
	}
	if len(b.toks) == p.cfg.BlockTokens && p.full[b.hash] == id {
		delete(p.full, b.hash)
	}
	kids := slices.DeleteFunc(p.kids[b.parent], func(k int32) bool { return k == id })
	if len(kids) == 0 {
		delete(p.kids, b.parent)
	} else {
		p.kids[b.parent] = kids
	}
	b.indexed, b.toks = false, nil
}

// freeLocked puts an unreferenced, unindexed block on the free list,
// dropping its memory when the pool holds more than its budget allows (rings
// may have taken the room since).
func (p *Pool) freeLocked(id int32) {
	b := &p.blocks[id]
	if p.cfg.Budget > 0 && int64(p.held)*p.bb+p.rings > p.cfg.Budget {
		b.data = nil
		p.held--
		p.free = slices.Insert(p.free, 0, id) // memoryless blocks are taken last
		return
	}
	p.free = append(p.free, id)
}

// unrefLocked drops a cache's hold on a block: the block is cached when it
// is indexed and the cache budget has room, else freed.
func (p *Pool) unrefLocked(id int32) {
	b := &p.blocks[id]
	b.ref--
	if b.ref > 0 {
		return
	}
	p.used--
	if !b.indexed || p.cfg.CacheBudget < p.bb {
		p.forgetLocked(id)
		p.freeLocked(id)
		return
	}
	b.elem = p.lru.PushBack(id)
	for int64(p.lru.Len())*p.bb > p.cfg.CacheBudget {
		p.evictLocked(1)
	}
}

// Prepare makes positions [from, from+n) writable: it takes the blocks
// they need and copies a block another cache shares, or one the index
// serves, before it is written (copy-on-write). On ErrPoolFull the cache
// keeps what it had.
func (c *Cache) Prepare(from, n int) error {
	if c.g.paged() == 0 || n <= 0 {
		return nil
	}
	p := c.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	first, last := from/c.bt, (from+n-1)/c.bt
	for b := first; b <= last && b < len(c.ids); b++ {
		info := &p.blocks[c.ids[b]]
		if info.ref == 1 && !info.indexed {
			continue
		}
		id, err := p.allocLocked()
		if err != nil {
			return err
		}
		copy(p.blocks[id].data, c.data[b])
		p.unrefLocked(c.ids[b])
		c.ids[b], c.data[b] = id, p.blocks[id].data
		c.hashes = c.hashes[:min(len(c.hashes), b)]
	}
	for len(c.ids) <= last {
		id, err := p.allocLocked()
		if err != nil {
			return err
		}
		c.ids = append(c.ids, id)
		c.data = append(c.data, p.blocks[id].data)
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
	if keep {
		c.Seal(toks)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if keep {
		full := len(c.hashes)
		if n := len(toks) - full*c.bt; full < len(c.ids) && n > 0 && n < c.bt {
			p.indexLocked(c.ids[full], c.parent(full), 0, toks[full*c.bt:])
		}
	}
	for _, id := range c.ids {
		p.unrefLocked(id)
	}
	p.rings -= c.rings
	c.ids, c.data, c.hashes = nil, nil, nil
}
