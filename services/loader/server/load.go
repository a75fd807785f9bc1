package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/formats/pack"
	"github.com/corelm/corelm/pkg/kernels"
	"github.com/corelm/corelm/pkg/runtime"
	"github.com/corelm/corelm/pkg/runtime/model"
	corelmv1 "github.com/corelm/corelm/proto/corelm/v1"
)

// load is one model load in flight, shared by every request that asked for
// it. It stops when its last waiter leaves.
type load struct {
	id      string
	path    string
	options *corelmv1.LoadOptions
	gen     uint64
	cancel  context.CancelFunc
	meter   *meter            // rate, time left and the progress log (progress.go)
	trace   trace.SpanContext // the load's span: its stages are children

	mu        sync.Mutex
	waiters   int
	abandoned bool // its last waiter left: it is being cancelled
	// events holds one message per stage reached, the last one updated
	// in place (replaced) as bytes are written, so every waiter sees every
	// stage and the latest byte count. Messages are immutable once stored.
	events  []*corelmv1.LoadModelResponse
	changed chan struct{} // closed and replaced at every update

	done   chan struct{} // closed when result or err is set
	result *corelmv1.PublishedModel
	err    error
}

// sendNew sends the events a waiter has not seen; sent counts the events
// fully sent and last is the final one sent.
func (l *load) sendNew(send func(*corelmv1.LoadModelResponse) error, sent *int, last **corelmv1.LoadModelResponse) (<-chan struct{}, error) {
	l.mu.Lock()
	// Copy: report replaces the last element in place.
	first := *sent
	events := append([]*corelmv1.LoadModelResponse(nil), l.events[first:]...)
	changed := l.changed
	l.mu.Unlock()
	for _, ev := range events {
		if ev == *last {
			continue
		}
		if err := send(ev); err != nil {
			return nil, err
		}
		*last = ev
	}
	*sent = first + max(len(events)-1, 0)
	return changed, nil
}

func (l *load) report(stage corelmv1.LoadStage, done, total int64) {
	msg := &corelmv1.LoadModelResponse{Stage: stage, BytesDone: done, BytesTotal: total}
	l.meter.measure(msg)
	l.mu.Lock()
	if n := len(l.events); n > 0 && l.events[n-1].GetStage() == stage {
		l.events[n-1] = msg
	} else {
		l.events = append(l.events, msg)
	}
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

// startLoad is startLoadFrom outside any caller's trace (the models named
// at start): a new load's span is the root of a trace of its own.
func (s *Server) startLoad(req *corelmv1.LoadModelRequest) (*load, *corelmv1.PublishedModel, error) {
	return s.startLoadFrom(trace.SpanContext{}, req)
}

// startLoadFrom joins the load of req's model in flight, or starts one
// whose span ("load") is a child of caller, the span of the call that
// caused it. It returns the published model instead when it is already
// published from the same, unchanged source with the same options and no
// reload was asked. A request without a path is startLoadByID's.
func (s *Server) startLoadFrom(caller trace.SpanContext, req *corelmv1.LoadModelRequest) (*load, *corelmv1.PublishedModel, error) {
	if req.GetPath() == "" {
		return s.startLoadByID(caller, req)
	}
	id, rel := req.GetModelId(), filepath.Clean(req.GetPath())
	for _, part := range strings.Split(filepath.ToSlash(req.GetPath()), "/") {
		if part == ".." {
			return nil, nil, fmt.Errorf("%w: %q contains \"..\"", ErrEscape, req.GetPath())
		}
	}
	opts := req.GetOptions()
	if opts == nil {
		opts = &corelmv1.LoadOptions{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.base.Err() != nil {
		return nil, nil, ErrStopping
	}
	if l, ok := s.loads[id]; ok {
		if l.path != rel || !proto.Equal(l.options, opts) {
			return nil, nil, fmt.Errorf("%w: model %q is being loaded from %q", ErrBusy, id, l.path)
		}
		if l.join() {
			return l, nil, nil
		}
		// A cancelled load is winding down; start afresh beside it.
	}
	if p, ok := s.published[id]; ok && !req.GetReload() && p.pb.GetSourcePath() == rel && proto.Equal(p.pb.GetOptions(), opts) {
		if cur, err := s.statSource(rel); err == nil && cur == p.source {
			return nil, p.pb, nil
		}
	}
	s.gens[id]++
	ctx, cancel := context.WithCancel(s.base)
	ctx, span := s.tracer().Start(trace.ContextWithSpanContext(ctx, caller), "load", trace.WithAttributes(
		keyModel.String(id), keyPath.String(rel), keyGeneration.Int64(int64(s.gens[id]))))
	l := &load{id: id, path: rel, options: opts, gen: s.gens[id], cancel: cancel, waiters: 1, trace: span.SpanContext(),
		meter: newMeter(s.log, id, s.gens[id]), changed: make(chan struct{}), done: make(chan struct{})}
	s.loads[id] = l
	s.running.Add(1)
	go s.run(ctx, l)
	return l, nil, nil
}

// startLoadByID serves a LoadModel that names no path: the inference
// service loading a model a request asked for by id. It is the model's
// load in flight (whatever its path), else its published generation unless
// a reload is asked (which reads the file it came from again), else a load
// of the file a model named at start has, else of <id>.gguf in the source
// directory. Not there: ErrNotFound.
func (s *Server) startLoadByID(caller trace.SpanContext, req *corelmv1.LoadModelRequest) (*load, *corelmv1.PublishedModel, error) {
	id := req.GetModelId()
	s.mu.Lock()
	if s.base.Err() != nil {
		s.mu.Unlock()
		return nil, nil, ErrStopping
	}
	if l, ok := s.loads[id]; ok && l.join() {
		s.mu.Unlock()
		return l, nil, nil
	}
	path := id + ".gguf" // a model id names no directory: it stays inside
	for _, m := range s.opts.Models {
		if m.ID == id {
			path = m.Path
		}
	}
	if p, ok := s.published[id]; ok {
		if !req.GetReload() {
			s.mu.Unlock()
			return nil, p.pb, nil
		}
		path = p.pb.GetSourcePath() // a reload reads the file it came from
	}
	s.mu.Unlock()
	if _, err := s.statSource(path); err != nil {
		if errors.Is(err, ErrNotFound) || errors.Is(err, ErrEscape) && s.srcDir == "" {
			return nil, nil, fmt.Errorf("%w: model %q is not published and there is no %s to load it from", ErrNotFound, id, path)
		}
		return nil, nil, err
	}
	byPath := proto.CloneOf(req)
	byPath.Path = path
	return s.startLoadFrom(caller, byPath)
}

// join adds a waiter to l unless its last waiter has left.
func (l *load) join() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.abandoned {
		return false
	}
	l.waiters++
	return true
}

// leave drops one waiter; the last one to leave an unfinished load cancels it.
func (s *Server) leave(l *load) {
	l.mu.Lock()
	l.waiters--
	last := l.waiters == 0
	if last {
		l.abandoned = true
	}
	l.mu.Unlock()
	if last {
		l.cancel()
	}
}

// run loads and publishes l: its span (ctx's) gets one child per stage,
// and the load is recorded in the loader metrics.
func (s *Server) run(ctx context.Context, l *load) {
	defer s.running.Done()
	span := trace.SpanFromContext(ctx)
	st := &stages{ctx: ctx, tracer: s.tracer()}
	start := time.Now()
	pb, err := func() (pb *corelmv1.PublishedModel, err error) {
		// The load runs outside any handler, so the recovery interceptor
		// cannot catch a panic here; a bug must not take the loader down.
		defer func() {
			if p := recover(); p != nil {
				s.log.Error("panic while loading", "model", l.id, "panic", p, "stack", string(debug.Stack()))
				err = fmt.Errorf("internal error while loading %q: %v", l.id, p)
			}
		}()
		return s.loadAndPublish(ctx, l, st)
	}()
	// Recorded (span, metrics, log) before the waiters hear of it.
	st.end(err)
	s.telemetry().RecordLoad(ctx, l.id, time.Since(start), pb.GetSizeBytes(), err)
	if err != nil {
		span.SetStatus(otelcodes.Error, err.Error())
		s.log.WarnContext(ctx, "load failed", "model", l.id, "path", l.path, "generation", l.gen, "err", err)
	} else {
		span.SetAttributes(keyBytes.Int64(pb.GetSizeBytes()))
		took := time.Since(start)
		s.log.InfoContext(ctx, "published", "model", l.id, "generation", l.gen, "path", pb.GetPath(), "bytes", pb.GetSizeBytes(),
			"duration", took, "bytes_per_second", int64(float64(pb.GetSizeBytes())/took.Seconds()))
	}
	span.End()
	s.mu.Lock()
	if s.loads[l.id] == l {
		delete(s.loads, l.id)
	}
	s.mu.Unlock()
	l.result, l.err = pb, err
	close(l.done)
	l.cancel()
}

// statSource returns the identity of a source file (following symlinks
// that stay inside the source directory).
func (s *Server) statSource(rel string) (sourceID, error) {
	f, err := s.openSource(rel)
	if err != nil {
		return sourceID{}, err
	}
	defer f.Close()
	return fileID(f)
}

func fileID(f *os.File) (sourceID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return sourceID{}, err
	}
	return sourceID{dev: uint64(st.Dev), ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano()}, nil
}

// loadAndPublish is the whole load: validate, pack into a temporary file,
// verify its checksums, publish; st times each stage as a span.
func (s *Server) loadAndPublish(ctx context.Context, l *load, st *stages) (*corelmv1.PublishedModel, error) {
	st.next("validate")
	l.report(corelmv1.LoadStage_LOAD_STAGE_VALIDATING, 0, 0)
	f, err := s.openSource(l.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	id, err := fileID(f)
	if err != nil {
		return nil, err
	}
	src, err := mapSource(f, l.path)
	if err != nil {
		return nil, err
	}
	unmapSource := sync.OnceFunc(func() { syscall.Munmap(src) })
	defer unmapSource()

	// The complete validation `corelm inspect` runs: the GGUF container, then
	// architecture, hyper-parameters and every tensor's type and shape.
	var g *gguf.File
	var arch string
	err = pack.CatchFaults(func() error {
		if g, err = gguf.Parse(src); err != nil {
			return err
		}
		if _, err := runtime.Build(model.FromGGUF(g), model.Env{Pool: kernels.NewPool(1)}); err != nil {
			return err
		}
		arch, _ = g.String(model.KeyArchitecture)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadFile, l.path, err)
	}
	if s.opts.afterValidate != nil {
		s.opts.afterValidate(l.id)
	}
	annotations := map[string]string{
		"model_id":     l.id,
		"source_path":  l.path,
		"source_size":  strconv.FormatInt(id.size, 10),
		"source_mtime": strconv.FormatInt(id.mtime, 10),
		"source_dev":   strconv.FormatUint(id.dev, 10),
		"source_ino":   strconv.FormatUint(id.ino, 10),
	}
	recordOptions(annotations, l.options)
	st.next("pack")
	var source io.ReaderAt = f
	align := 0
	if direct := openDirect(f, src, id); direct != nil {
		defer direct.Close()
		source, align = fallbackReader{direct, f}, directAlign
		st.span.SetAttributes(keyDirect.Bool(true))
	}
	plan, err := pack.NewPlan(g, pack.Options{Generation: l.gen, Tier: runtime.HostTier(), Annotations: annotations,
		Source: source, SourceAlign: align,
		Progress: func(done, total int64) { l.report(corelmv1.LoadStage_LOAD_STAGE_PACKING, done, total) }})
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadFile, l.path, err)
	}
	size := plan.Size()
	st.span.SetAttributes(keyBytes.Int64(size))
	if err := s.reserve(ctx, l.id, size); err != nil {
		return nil, err
	}
	defer s.release(size)

	l.report(corelmv1.LoadStage_LOAD_STAGE_PACKING, 0, plan.DataBytes())
	tmp, err := os.CreateTemp(s.shmDir, tmpPrefix+l.id+"-*")
	if err != nil {
		return nil, fmt.Errorf("creating the packed file: %w", err)
	}
	renamed := false
	defer func() {
		if !renamed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	// Size the file without allocating it: its pages come as the data is
	// written, and a full tmpfs fails the write with ENOSPC (reserve
	// checked the free space first). Nothing maps the file before it is
	// whole, so there is no SIGBUS to guard against. fallocate would
	// allocate every page up front, but on a tmpfs with huge pages it made
	// every later write ~20× slower (the 8B file: 10.6 s of pwrite instead
	// of 0.45 s), and on small pages it costs as much as it saves.
	if err := tmp.Truncate(size); err != nil {
		return nil, fmt.Errorf("%w: sizing the packed file in %s: %w", ErrNoSpace, s.shmDir, err)
	}
	var w io.WriterAt = tmp
	if s.opts.writer != nil {
		w = s.opts.writer(tmp)
	}
	if err := plan.Write(ctx, w); err != nil {
		if errors.Is(err, pack.ErrSourceFault) {
			return nil, fmt.Errorf("%w: %s: %w", ErrBadFile, l.path, err)
		}
		return nil, fmt.Errorf("writing the packed file: %w", err)
	}
	if after, err := fileID(f); err != nil || after != id {
		return nil, fmt.Errorf("%w: %s: the source file changed while it was loaded", ErrBadFile, l.path)
	}
	// The source is read no more (g and plan point into it: not used
	// past here). Its pages go, and its page cache, before the packed copy
	// is mapped to be verified: a load then holds one copy of the weights
	// at a time, not two (an 8B model's peak RSS in serve-all halves, to
	// ~4.7 GiB).
	unmapSource()
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)

	l.report(corelmv1.LoadStage_LOAD_STAGE_PUBLISHING, plan.DataBytes(), plan.DataBytes())
	if err := tmp.Sync(); err != nil {
		return nil, err
	}
	if err := tmp.Chmod(0o444); err != nil {
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	// Read back what was written with the reader inference uses.
	st.next("checksum")
	header, err := verifyPacked(tmp.Name())
	if err != nil {
		return nil, fmt.Errorf("verifying the packed file: %w", err)
	}
	s.checkFilePages(ctx, st.span, l.id, tmp.Name())
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	st.next("publish")
	final := filepath.Join(s.shmDir, fileName(l.id, l.gen))
	if err := os.Rename(tmp.Name(), final); err != nil {
		return nil, err
	}
	renamed = true
	syncDir(s.shmDir)
	pb, err := describe(final, l.id, l.gen)
	if err != nil {
		return nil, err
	}
	pb.SourceSha256 = header.SourceDigest[:]
	pb.Architecture = arch
	pb.SourcePath = l.path
	pb.Options = l.options
	s.publish(pb, id)
	return pb, nil
}

// stages are a load's stage spans, children of its "load" span, one at a
// time: each ends when the next begins, the last when the load ends.
type stages struct {
	ctx    context.Context
	tracer trace.Tracer
	span   trace.Span // the current stage's (a no-op one before the first)
}

func (st *stages) next(name string) {
	st.end(nil)
	_, st.span = st.tracer.Start(st.ctx, name)
}

// end ends the current stage, with err as its status.
func (st *stages) end(err error) {
	if st.span == nil {
		return
	}
	if err != nil {
		st.span.SetStatus(otelcodes.Error, err.Error())
	}
	st.span.End()
	st.span = nil
}

// verifyPacked opens a packed file with the strict reader (header,
// manifest, directory) and builds the model from it. The tensors' bytes are
// not read back: their CRCs were computed on the bytes as they were
// written, and the inference side checks every one when it maps the file.
func verifyPacked(path string) (pack.Header, error) {
	pf, err := pack.Open(path)
	if err != nil {
		return pack.Header{}, err
	}
	defer pf.Close()
	_, err = runtime.Build(model.FromPack(pf), model.Env{Pool: kernels.NewPool(1)})
	return pf.Header, err
}

// publish makes pb the model's current generation, retires the one it
// supersedes (budget.go) and tells the watchers.
func (s *Server) publish(pb *corelmv1.PublishedModel, src sourceID) {
	s.mu.Lock()
	old := s.published[pb.GetModelId()]
	if old != nil && old.pb.GetGeneration() > pb.GetGeneration() {
		// A newer generation won the race (a cancelled load finishing
		// late): this one is superseded at birth.
		s.mu.Unlock()
		os.Remove(pb.GetPath())
		return
	}
	s.published[pb.GetModelId()] = &published{pb: pb, source: src}
	s.broadcastLocked(&corelmv1.WatchModelsResponse{Kind: corelmv1.ModelEventKind_MODEL_EVENT_KIND_PUBLISHED, Model: pb})
	if old != nil {
		// Readers that mapped it keep their pages; the name goes away.
		s.retireLocked(old.pb)
	}
	s.mu.Unlock()
}

// describe builds the announcement of a published file.
func describe(path, id string, gen uint64) (*corelmv1.PublishedModel, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, err
	}
	return &corelmv1.PublishedModel{ModelId: id, Generation: gen, Path: path, SizeBytes: st.Size,
		Device: uint64(st.Dev), Inode: st.Ino, PublishedUnixNano: st.Mtim.Nano()}, nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// mapSource maps an opened source file read-only, for validation: only
// the pages of its header and metadata are touched. The digest and the
// copy read the file with pread (pack.Options.Source), which is several
// times faster than faulting a cold file in through a mapping.
func mapSource(f *os.File, rel string) ([]byte, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() == 0 {
		return nil, fmt.Errorf("%w: %s: empty file", ErrBadFile, rel)
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(st.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mapping %s: %w", rel, err)
	}
	return data, nil
}

// directAlign is the alignment of reads with O_DIRECT: the page size,
// a multiple of the logical block size of the usual devices.
const directAlign = 4096

// openDirect reopens the source f (mapped at mapped, identity id) with
// O_DIRECT when less than half of it is in the page cache, else returns
// nil. A cold file read through the page cache costs the kernel a page
// allocation and a copy per 4 KiB (on a 2-core VM with a full page cache,
// 5.9 s of CPU for the 8B-shaped file, most of it reclaim), and fills the
// cache with pages the load drops at its end; O_DIRECT reads it from the
// device into the loader's buffers (0.3 s of CPU). A warm file is read
// from the cache, faster than from the device.
func openDirect(f *os.File, mapped []byte, id sourceID) *os.File {
	page := os.Getpagesize()
	vec := make([]byte, (len(mapped)+page-1)/page)
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(mapped))), uintptr(len(mapped)),
		uintptr(unsafe.Pointer(unsafe.SliceData(vec)))); errno != 0 {
		return nil
	}
	resident := 0
	for _, v := range vec {
		resident += int(v & 1)
	}
	if 2*resident >= len(vec) {
		return nil
	}
	// The same open file, whatever its path has become since.
	d, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return nil // e.g. a file system without O_DIRECT
	}
	if did, err := fileID(d); err != nil || did != id {
		d.Close()
		return nil
	}
	return d
}

// fallbackReader reads with O_DIRECT, and through the page cache where a
// file system refuses a direct read (EINVAL: an alignment it needs larger
// than directAlign).
type fallbackReader struct{ direct, buffered *os.File }

func (r fallbackReader) ReadAt(b []byte, off int64) (int, error) {
	n, err := r.direct.ReadAt(b, off)
	if errors.Is(err, syscall.EINVAL) {
		return r.buffered.ReadAt(b, off)
	}
	return n, err
}

// A packed file records the LoadOptions it was loaded with (the context and
// KV cache type the inference side serves it with) as annotations, so that
// a restarted loader announces it with the same options. recordOptions and
// recordedOptions are the one codec between the message and those strings.
const (
	annotationKVType  = "kv_type" // the KVType's enum name
	annotationContext = "context" // decimal; 0: the server's
)

// recordOptions adds o to a packed file's annotations.
func recordOptions(annotations map[string]string, o *corelmv1.LoadOptions) {
	annotations[annotationKVType] = o.GetKvType().String()
	annotations[annotationContext] = strconv.Itoa(int(o.GetContext()))
}

// recordedOptions reads back the options recordOptions wrote.
func recordedOptions(pf *pack.File) *corelmv1.LoadOptions {
	o := &corelmv1.LoadOptions{}
	if kv, ok := pf.Annotation(annotationKVType); ok {
		o.KvType = corelmv1.KVType(corelmv1.KVType_value[kv])
	}
	if c, ok := pf.Annotation(annotationContext); ok {
		n, _ := strconv.Atoi(c)
		o.Context = int32(n)
	}
	return o
}
