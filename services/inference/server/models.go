package server

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/corelm/corelm/internal/smaps"
	"github.com/corelm/corelm/models"
	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/formats/pack"
	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/chat"
	"github.com/corelm/corelm/pkg/runtime/constrain"
	"github.com/corelm/corelm/pkg/runtime/kvcache"
	"github.com/corelm/corelm/pkg/runtime/model"
	"github.com/corelm/corelm/pkg/runtime/sched"
	"github.com/corelm/corelm/pkg/runtime/tokenizer"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
	"github.com/corelm/corelm/services/internal/telemetry"
)

// EmbeddedModel is the --model-file value that serves the model compiled
// into the binary, under that id unless told ("stories260K" is accepted as
// an alias, models.IsName).
const EmbeddedModel = models.Name

// entry is one generation of one model: its mapping, model, tokenizer and
// scheduler. Requests hold a reference while they run; a superseded entry
// stops admitting, drains its requests and is closed (unmapped) when the
// last reference goes.
type entry struct {
	id    string
	gen   uint64
	sched *sched.Scheduler
	tok   *tokenizer.Tokenizer
	vocab func() *constrain.Vocab // the token trie for constrained output, built on first use
	chat  *chat.Template          // the model's chat template, or the ChatML fallback
	info  *corelmv1.ModelInfo

	refs      int // guarded by registry.mu
	retired   bool
	reserved  int64 // bytes of the memory budget it holds (memory.go)
	closers   []io.Closer
	unobserve func() // unregisters the scheduler's gauges; idempotent
}

func (e *entry) close() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i].Close()
	}
}

// registry holds the current generation of every model and the superseded
// ones still draining.
type registry struct {
	mu       sync.Mutex
	current  map[string]*entry
	retiring map[*entry]bool
	drain    time.Duration // how long a superseded generation may finish its requests
	closing  bool
	wg       sync.WaitGroup // retirements in progress
	// required are the models the server must serve (ready.go): set
	// before serving, read-only after.
	required map[string]bool
	// opening serialises mapping published generations: the watch and
	// on-demand loads may both be handed the same one.
	opening sync.Mutex
}

func newRegistry(drain time.Duration) *registry {
	return &registry{current: map[string]*entry{}, retiring: map[*entry]bool{}, drain: drain}
}

// acquire returns the current entry of id with a reference taken.
func (r *registry) acquire(id string) (*entry, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		return nil, ErrStopping
	}
	e := r.current[id]
	if e == nil {
		if err := r.loadingErrorLocked(id); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %q (serving %v)", ErrModelNotFound, id, r.idsLocked())
	}
	e.refs++
	return e, nil
}

// release drops a reference; the last one of a retired entry closes it.
func (r *registry) release(e *entry) {
	r.mu.Lock()
	e.refs--
	last := e.retired && e.refs == 0
	r.mu.Unlock()
	if last {
		e.close()
	}
}

func (r *registry) idsLocked() []string {
	ids := make([]string, 0, len(r.current))
	for id := range r.current {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// generation returns the generation being served for id (0: none).
func (r *registry) generation(id string) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.current[id]; e != nil {
		return e.gen
	}
	return 0
}

// publish makes e the current generation of its id; the one it replaces is
// retired. It refuses to go back to an older generation.
func (r *registry) publish(e *entry) bool {
	r.mu.Lock()
	old := r.current[e.id]
	if r.closing || (old != nil && old.gen >= e.gen && e.gen != 0) {
		r.mu.Unlock()
		return false
	}
	r.current[e.id] = e
	e.refs++ // the registry's own reference
	r.mu.Unlock()
	if old != nil {
		r.retire(old)
	}
	return true
}

// remove retires the current generation of id.
func (r *registry) remove(id string) {
	r.mu.Lock()
	e := r.current[id]
	delete(r.current, id)
	r.mu.Unlock()
	if e != nil {
		r.retire(e)
	}
}

// retire drains e's scheduler (new requests already go elsewhere), then
// drops the registry's reference.
func (r *registry) retire(e *entry) {
	r.mu.Lock()
	if r.current[e.id] == e {
		delete(r.current, e.id)
	}
	r.retiring[e] = true
	e.retired = true
	r.mu.Unlock()
	if e.unobserve != nil {
		e.unobserve()
	}
	r.wg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), r.drain)
		defer cancel()
		e.sched.Shutdown(ctx)
		r.mu.Lock()
		delete(r.retiring, e)
		r.mu.Unlock()
		r.release(e)
	})
}

// shutdown retires every model: requests still queued end at once
// (sched.ErrShed: Unavailable, retryable), the running ones get up to ctx.
func (r *registry) shutdown(ctx context.Context) {
	r.mu.Lock()
	r.closing = true
	all := make([]*entry, 0, len(r.current))
	for _, e := range r.current {
		all = append(all, e)
	}
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, e := range all {
		wg.Go(func() { e.sched.StopQueued(ctx) }) // queued requests: Unavailable at once
	}
	wg.Wait()
	for _, e := range all {
		r.retire(e)
	}
	r.wg.Wait()
}

// entries returns the current entries sorted by id, and the retiring ones.
func (r *registry) entries() (current, retiring []*entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.current {
		current = append(current, e)
	}
	for e := range r.retiring {
		retiring = append(retiring, e)
	}
	slices.SortFunc(current, func(a, b *entry) int { return strings.Compare(a.id, b.id) })
	return current, retiring
}

// modelConfig is what a model is run with, as Options give it. From here
// on the scheduler owns the knobs: it fills in their defaults and clamps the
// context to the model's (sched.New); describe reports what it chose.
type modelConfig struct {
	threads int
	sched   sched.Config
	tel     *telemetry.Telemetry // the scheduler's hooks and gauges
	// memory is what a model of an id may hold, and what the other
	// models hold of the budget (memory.go; 0: no limit).
	memory func(id string) (avail, held int64)
	log    *slog.Logger
	// cacheDir is Options.KVCacheDir; weights names the weights a model
	// entry is opened with (the SHA-256 of its source file, "" unknown),
	// which the persisted prefix cache is keyed by.
	cacheDir string
	weights  string
	// mapped is the inode of the file whose mapping holds the weights (0:
	// none, the embedded model), whose resident pages the gauges report.
	mapped uint64
	// packCache packs a --model-file GGUF for this host (nil: served as it is).
	packCache *runtime.PackCache
}

// applyLoadOptions sets what the loader chose for one model (its context
// and KV cache type; unset fields keep the server's) on sc: the typed form
// of LoadOptions on this side of the wire.
func applyLoadOptions(sc *sched.Config, o *corelmv1.LoadOptions) {
	if o.GetContext() > 0 {
		sc.Context = int(o.GetContext())
	}
	switch o.GetKvType() {
	case corelmv1.KVType_KV_TYPE_F16:
		sc.KVType = kvcache.F16
	case corelmv1.KVType_KV_TYPE_Q8_0:
		sc.KVType = kvcache.Q8_0
	}
}

// newEntry binds src with cfg.threads kernel threads and starts its
// scheduler with cfg.sched, observed by cfg.tel. closers are closed with
// the entry (or now, on failure).
func newEntry(id string, gen uint64, src model.Source, cfg modelConfig, closers ...io.Closer) (_ *entry, err error) {
	e := &entry{id: id, gen: gen, closers: closers}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	pool := kernels.NewPool(cfg.threads)
	e.closers = append(e.closers, closerFunc(func() error { pool.Close(); return nil }))
	m, err := runtime.Build(src, model.Env{Pool: pool})
	if err != nil {
		return nil, err
	}
	tok, err := tokenizer.New(src)
	if err != nil {
		return nil, err
	}
	if tok.VocabSize() != m.Config().Vocab {
		return nil, fmt.Errorf("%w: tokenizer has %d tokens, the model %d", model.ErrInvalidModel, tok.VocabSize(), m.Config().Vocab)
	}
	e.tok = tok
	e.vocab = sync.OnceValue(func() *constrain.Vocab { return constrain.TokenizerVocab(tok) })
	tmpl, _ := src.String("tokenizer.chat_template")
	var ownTemplate bool
	e.chat, ownTemplate = loadTemplate(tmpl)
	sc := cfg.sched
	var budget, held int64
	if cfg.memory != nil {
		budget, held = cfg.memory(id)
	}
	fit, reserved, err := planMemory(m, runtime.WeightBytes(src), &sc, budget)
	if err != nil {
		if held > 0 {
			return nil, fmt.Errorf("model %q: %w (the other models hold %s of the memory budget)", id, err, runtime.FormatBytes(held))
		}
		return nil, fmt.Errorf("model %q: %w", id, err)
	}
	e.reserved = reserved
	// The prefix cache may fill the KV pool when sequences leave room: its
	// blocks are evicted for theirs (without a budget, up to 1 GiB).
	if sc.CacheBudget == 0 {
		sc.CacheBudget = sc.KVBudget
	}
	if sc.CacheBudget == 0 {
		sc.CacheBudget = 1 << 30
	}
	if cfg.log != nil {
		cfg.log.Info("memory plan", "model_id", id, "generation", gen, "memory", fit, "kv_budget", runtime.FormatBytes(sc.KVBudget),
			"reserved", runtime.FormatBytes(reserved))
	}
	persistCache(id, cfg, &sc)
	sc.Hooks = cfg.tel.SchedulerHooks(id)
	e.sched = sched.New(m, sc)
	e.closers = append(e.closers, closerFunc(func() error {
		// Normally drained already; this only makes sure the loop is gone
		// before the weights are unmapped.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		e.sched.Shutdown(ctx)
		return nil
	}))
	// The gauges report the current generation: they stop reading this
	// one when it is retired, or first thing when it closes.
	e.unobserve = sync.OnceFunc(cfg.tel.RegisterModel(id, e.sched.Stats, residentPages(cfg.mapped)))
	e.closers = append(e.closers, closerFunc(func() error { e.unobserve(); return nil }))
	e.info = describe(id, gen, src, m, e.sched.Config(), ownTemplate)
	return e, nil
}

// residentPages reports the bytes of the file of inode ino that the
// process has resident, and of those in 2 MiB pages (nil for no file).
func residentPages(ino uint64) func() (resident, huge int64) {
	if ino == 0 {
		return nil
	}
	return func() (int64, int64) { return smaps.File(ino) }
}

// persistCache points sc's prefix cache at its directory under
// --kv-cache-dir, keyed by the weights and the KV type so that a block is
// only ever read back into the model and cache type that wrote it. A plain
// GGUF file has no digest to key by (hashing gigabytes at every start would
// cost more than the cache saves): its cache stays in memory.
func persistCache(id string, cfg modelConfig, sc *sched.Config) {
	if cfg.cacheDir == "" || sc.CacheBudget == 0 {
		return
	}
	if cfg.weights == "" {
		if cfg.log != nil {
			cfg.log.Info("prefix cache not persisted: a GGUF file has no digest to key it by (serve the packed file)", "model_id", id)
		}
		return
	}
	sc.CacheDir = filepath.Join(cfg.cacheDir, id)
	sc.CacheKey = cfg.weights + "/" + sc.KVType.String()
	sc.CacheFileError = func(path string, err error) {
		if cfg.log != nil {
			cfg.log.Warn("ignoring a persisted KV cache block", "model_id", id, "path", path, "err", err)
		}
	}
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

func describe(id string, gen uint64, src model.Source, m model.Model, sc sched.Config, chat bool) *corelmv1.ModelInfo {
	cfg := m.Config()
	info := &corelmv1.ModelInfo{
		ModelId: id, Architecture: cfg.Arch, Generation: gen,
		ContextLength: int32(cfg.Context), MaxContext: int32(sc.Context), VocabSize: int32(cfg.Vocab),
		KvType: kvTypeProto(sc.KVType), HasChatTemplate: chat, State: corelmv1.ModelState_MODEL_STATE_READY,
		EmbeddingLength: int32(cfg.Dim), Pooling: poolingProto(cfg.Pooling.Embedding()),
	}
	formats := map[string]bool{}
	for _, name := range src.TensorNames() {
		t, ok := src.LookupTensor(name)
		if !ok {
			continue
		}
		info.WeightBytes += t.Bytes()
		if len(t.Shape) == 2 {
			formats[t.Type.String()] = true
		}
	}
	for f := range formats {
		info.WeightFormats = append(info.WeightFormats, f)
	}
	sort.Strings(info.WeightFormats)
	return info
}

func kvTypeProto(t kvcache.Type) corelmv1.KVType {
	if t == kvcache.Q8_0 {
		return corelmv1.KVType_KV_TYPE_Q8_0
	}
	return corelmv1.KVType_KV_TYPE_F16
}

// openFile opens a model for direct serving: the embedded model, a packed
// file (checked in full) or a GGUF file.
func openFile(path, id string, cfg modelConfig) (*entry, error) {
	if models.IsName(path) {
		f, err := gguf.Parse(models.Stories)
		if err != nil {
			return nil, err
		}
		cfg.weights = fmt.Sprintf("%x", sha256.Sum256(models.Stories))
		return newEntry(id, 0, model.FromGGUF(f), cfg)
	}
	if packed, ok := packedCopy(path, cfg); ok {
		path = packed
	}
	if pf, err := pack.Open(path); err == nil {
		if err := pf.Verify(); err != nil {
			pf.Close()
			return nil, err
		}
		cfg.weights = fmt.Sprintf("%x", pf.Header.SourceDigest)
		_, cfg.mapped = pf.Identity()
		return newEntry(id, pf.Header.Generation, model.FromPack(pf), cfg, pf)
	} else if !errors.Is(err, pack.ErrBadMagic) {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f, err := gguf.Open(path)
	if err != nil {
		return nil, err
	}
	_, cfg.mapped = f.Identity()
	return newEntry(id, 0, model.FromGGUF(f), cfg, f)
}

// packedCopy is the pack cache's copy of a GGUF file (packed for this
// host's kernels now if it has none), when there is a cache and packing
// helps; else the file is served as it is, and the log says why.
func packedCopy(path string, cfg modelConfig) (string, bool) {
	if cfg.packCache == nil {
		return "", false
	}
	start := time.Now()
	packed, note, err := cfg.packCache.Packed(context.Background(), path)
	switch {
	case err != nil:
		cfg.log.Warn("serving the GGUF file unpacked", "file", path, "err", err)
		return "", false
	case packed == "":
		if note != "" {
			cfg.log.Warn("serving the GGUF file unpacked", "file", path, "why", note)
		}
		return "", false
	}
	cfg.log.Info("serving the packed copy of the GGUF file", "file", path, "packed", packed, "took_ms", time.Since(start).Milliseconds())
	return packed, true
}

// DefaultModelID is the id a --model-file is served under without --model-id.
func DefaultModelID(path string) string {
	if models.IsName(path) {
		return EmbeddedModel
	}
	base := filepath.Base(path)
	for _, ext := range []string{".gguf", ".clm"} {
		base = strings.TrimSuffix(base, ext)
	}
	return base
}

// openPublished maps a generation the loader published and checks that it
// is the file announced: same generation in the header, same (dev, inode),
// every tensor's checksum.
func openPublished(pm *corelmv1.PublishedModel, cfg modelConfig) (*entry, error) {
	pf, lease, err := openLeased(pm)
	if err != nil {
		return nil, err
	}
	handed := false // to newEntry, which closes it
	defer func() {
		if !handed {
			lease.Close()
		}
	}()
	if pf.Header.Generation != pm.GetGeneration() {
		pf.Close()
		return nil, fmt.Errorf("%s: header says generation %d, the loader announced %d", pm.GetPath(), pf.Header.Generation, pm.GetGeneration())
	}
	if dev, ino := pf.Identity(); (pm.GetDevice() != 0 || pm.GetInode() != 0) && (dev != pm.GetDevice() || ino != pm.GetInode()) {
		pf.Close()
		return nil, fmt.Errorf("%s: file (dev %d, inode %d) is not the one announced (dev %d, inode %d)", pm.GetPath(), dev, ino, pm.GetDevice(), pm.GetInode())
	}
	if err := pf.Verify(); err != nil {
		pf.Close()
		return nil, err
	}
	applyLoadOptions(&cfg.sched, pm.GetOptions())
	cfg.weights = fmt.Sprintf("%x", pf.Header.SourceDigest)
	_, cfg.mapped = pf.Identity()
	// Closed last: the lease goes once the mapping has.
	handed = true
	return newEntry(pm.GetModelId(), pm.GetGeneration(), model.FromPack(pf), cfg, lease, pf)
}
