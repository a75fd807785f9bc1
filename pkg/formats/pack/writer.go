package pack

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"regexp"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"
	"unsafe"

	"github.com/corelm/corelm/pkg/formats/gguf"
	"github.com/corelm/corelm/pkg/kernels"
)

// ErrSourceFault means the source file's mapping faulted while it was read:
// it was truncated (or its storage failed) during packing.
var ErrSourceFault = errors.New("source file changed while it was read (truncated?)")

// chunk is how much tensor data is written between progress reports and
// cancellation checks.
const chunk = 4 << 20

// Options control packing.
type Options struct {
	// Generation is recorded in the header.
	Generation uint64
	// Annotations are recorded as string metadata under AnnotationPrefix
	// (the loader records the source path and load options). Keys must be
	// non-empty.
	Annotations map[string]string
	// Progress, when set, is called after each piece of tensor data is
	// written with the bytes written so far and the total.
	Progress func(done, total int64)
	// Tier is the CPU feature tier of the machines that will run the file
	// (runtime.HostTier for this one): matrices get the layout that tier's
	// kernels read fastest, and the file records the tier it needs. The
	// zero value, TierGeneric, keeps every tensor in ggml's layout.
	Tier Tier
	// Source, when set, is the file src was parsed from: tensor data and
	// the digest are then read from it in large reads rather than through
	// src's mapping. On a file not in the page cache a mapping faults a
	// few pages at a time: copying the 8B-shaped file through it took 15 s,
	// with reads 4 s.
	Source io.ReaderAt
	// SourceAlign, when set, is the alignment reads from Source need (of
	// offset, length and buffer): 4096 for a file opened with O_DIRECT,
	// which reads a cold file straight from the device into the buffer,
	// without the page cache (on a 2-core VM, a buffered cold read of the
	// 8B-shaped file took 5.9 s of CPU in the kernel, O_DIRECT 0.3 s).
	SourceAlign int
}

// Plan is a packed file laid out but not yet written: its size is known
// before a byte is written, so the caller can reserve space first.
type Plan struct {
	src        *gguf.File
	opts       Options
	meta       []byte
	tier       Tier
	tensors    []Tensor
	srcData    [][]byte
	srcOff     []int64    // where each tensor's data starts in the source file
	gaps       [][]uint64 // where the zeros before each part of each tensor start
	dirSize    uint64
	dataOffset uint64
	dataLength uint64
	dataBytes  int64
}

// NewPlan lays out the packed form of src: matrices that opts.Tier's kernels
// read faster rearranged (see chooseLayout), everything else as in the
// source.
func NewPlan(src *gguf.File, opts Options) (*Plan, error) {
	kvs := make([]gguf.KV, 0, len(src.KVs)+len(opts.Annotations))
	for _, kv := range src.KVs {
		if !strings.HasPrefix(kv.Key, AnnotationPrefix) {
			kvs = append(kvs, kv)
		}
	}
	keys := make([]string, 0, len(opts.Annotations))
	for k := range opts.Annotations {
		if k == "" || !utf8.ValidString(k) {
			return nil, fmt.Errorf("pack: invalid annotation key %q", k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		kvs = append(kvs, gguf.KV{Key: AnnotationPrefix + k, Value: gguf.Str(opts.Annotations[k])})
	}
	p := &Plan{src: src, opts: opts, meta: encodeMetadata(kvs)}

	order := make([]*gguf.Tensor, len(src.Tensors))
	for i := range src.Tensors {
		order[i] = &src.Tensors[i]
	}
	// Source data order, so the source is read front to back, but for each
	// block's expert stacks, which go together where the first of them was.
	sort.SliceStable(order, func(a, b int) bool { return order[a].Offset < order[b].Offset })
	order, interleave := expertRuns(order)
	p.dirSize = 8
	for i, st := range order {
		t := Tensor{Name: st.Name, Type: st.Type, Layout: LayoutGGML, Tier: TierGeneric, Shape: st.Shape, Size: st.Size, Interleave: interleave[i]}
		if size, ok := ggmlSize(t.Type, t.Shape); !ok || size != t.Size {
			return nil, fmt.Errorf("pack: tensor %q: %s %v does not take %d bytes", t.Name, t.Type, t.Shape, t.Size)
		}
		if t.Layout, t.Tier = chooseLayout(opts.Tier, t.Type, t.Shape); t.Layout != LayoutGGML {
			t.Size, _ = layouts[t.Layout].size(t.Type, t.Shape)
		}
		p.tier = max(p.tier, t.Tier)
		p.tensors = append(p.tensors, t)
		p.srcData = append(p.srcData, src.TensorData(st))
		p.srcOff = append(p.srcOff, src.DataOffset+int64(st.Offset))
		p.dirSize += entryBytes(&t, Version)
		p.dataBytes += int64(t.Size)
	}
	end, _, err := place(p.tensors, math.MaxInt64)
	if err != nil {
		return nil, err
	}
	p.gaps = make([][]uint64, len(p.tensors))
	var prev uint64
	pieces(p.tensors, func(i, _ int, off, size uint64) {
		p.gaps[i] = append(p.gaps[i], prev)
		prev = off + size
	})
	p.dataOffset = alignUp(HeaderSize+uint64(len(p.meta))+p.dirSize, PageAlign)
	p.dataLength = end
	return p, nil
}

// expertStack names the 3-D stacks of a block's experts' matrices that the
// packer interleaves expert by expert; their order within an expert's slot
// is the order the feed-forward multiplies them in.
var (
	expertStack = regexp.MustCompile(`^blk\.(\d+)\.ffn_(gate|up|down)_exps\.weight$`)
	expertOrder = map[string]int{"gate": 0, "up": 1, "down": 2}
)

// expertRuns reorders tensors (in source data order) for the directory:
// each block's expert stacks together, gate, up, down, where the first of
// them was, numbered 1, 2, … in the returned interleave (0: stored whole).
// A block whose stacks disagree on the expert count keeps them whole.
func expertRuns(tensors []*gguf.Tensor) ([]*gguf.Tensor, []uint32) {
	blocks := map[string][]*gguf.Tensor{}
	for _, t := range tensors {
		if m := expertStack.FindStringSubmatch(t.Name); m != nil && len(t.Shape) == 3 {
			blocks[m[1]] = append(blocks[m[1]], t)
		}
	}
	inRun := map[*gguf.Tensor][]*gguf.Tensor{}
	for _, run := range blocks {
		sort.Slice(run, func(a, b int) bool {
			return expertOrder[expertStack.FindStringSubmatch(run[a].Name)[2]] < expertOrder[expertStack.FindStringSubmatch(run[b].Name)[2]]
		})
		same := true
		for _, t := range run {
			same = same && t.Shape[2] == run[0].Shape[2]
		}
		if same {
			for _, t := range run {
				inRun[t] = run
			}
		}
	}
	out := make([]*gguf.Tensor, 0, len(tensors))
	interleave := make([]uint32, 0, len(tensors))
	for _, t := range tensors {
		run, ok := inRun[t]
		if !ok {
			out, interleave = append(out, t), append(interleave, 0)
			continue
		}
		if run == nil {
			continue // placed with its run
		}
		for k, m := range run {
			out, interleave = append(out, m), append(interleave, uint32(k+1))
			inRun[m] = nil
		}
	}
	return out, interleave
}

// Size is the size of the packed file.
func (p *Plan) Size() int64 { return int64(p.dataOffset + p.dataLength) }

// Tier is the tier the packed file needs: TierGeneric when no tensor's
// layout changes (the file then reads as fast as its source).
func (p *Plan) Tier() Tier { return p.tier }

// DataBytes is the total size of the tensors (without padding).
func (p *Plan) DataBytes() int64 { return p.dataBytes }

// Write writes the packed file to w, which must be Size bytes long or
// empty. Tensor data come first, then the manifest, then the header: a file
// cut short anywhere fails the reader's checks. Faults on the source
// mapping (a source truncated under us) are reported as ErrSourceFault.
//
// The source is read once, front to back, a piece at a time (Options.Source
// with pread, else the mapping): each piece feeds both the SHA-256 of the
// whole source, on a goroutine of its own, and the repacking, the CRC-32C
// of each tensor's bytes as written, and the writes. The writes go out in
// large pieces whose ends fall on 2 MiB boundaries of the file, so that a
// tmpfs with huge pages fills each huge page with one copy (a write that
// covers part of a new huge page makes the kernel zero the rest of it).
func (p *Plan) Write(ctx context.Context, w io.WriterAt) error {
	digest := newDigester()
	var werr error
	func() {
		defer digest.close()
		werr = CatchFaults(func() error { return p.writeData(ctx, w, digest) })
	}()
	sum, derr := digest.wait()
	if werr != nil {
		return werr
	}
	if derr != nil {
		return derr
	}

	manifest := make([]byte, 0, uint64(len(p.meta))+p.dirSize)
	manifest = append(manifest, p.meta...)
	manifest = p.appendDirectory(manifest)
	pad := make([]byte, p.dataOffset-HeaderSize-uint64(len(manifest)))
	if _, err := w.WriteAt(append(manifest, pad...), HeaderSize); err != nil {
		return err
	}
	_, err := w.WriteAt(p.header(sum, manifest), 0)
	return err
}

// piece is a stretch of the source read in one go: part of tensor i
// (whole 16-row groups when it is repacked; within one of its parts when
// it is stored expert by expert), or bytes between tensors (i = -1) that
// only the digest reads.
type piece struct {
	off, n int64 // in the source file
	i      int
	part   int   // of tensor i (Tensor.Parts)
	from   int64 // bytes of the part before off
	hashed int64 // leading bytes the digest has already had (tensors out of file order)
}

// pieces returns the pieces of the source, tensor by tensor in the plan's
// order (file order but for a block's expert stacks, grouped) and part by
// part: every byte of the source is in one of them, and the digest sees
// them in file order (bytes it reaches early, ahead of a tensor taken out
// of order, are pieces of their own; that tensor's are then skipped).
func (p *Plan) pieces() []piece {
	var pcs []piece
	var hashed int64 // the digest has the source up to here
	gap := func(end int64) {
		for ; hashed < end; hashed += min(chunk, end-hashed) {
			pcs = append(pcs, piece{off: hashed, n: min(chunk, end-hashed), i: -1})
		}
	}
	for i := range p.tensors {
		t := &p.tensors[i]
		start, parts := p.srcOff[i], t.Parts()
		srcPart := int64(len(p.srcData[i]) / parts)
		gap(start)
		step := int64(chunk)
		if t.Layout == LayoutR16 {
			rb, _ := t.Type.RowBytes(int(t.Shape[0]))
			group := int64(kernels.R16 * rb)
			step = max(1, chunk/group) * group
		}
		for e := range parts {
			for from := int64(0); from < srcPart; from += step {
				pc := piece{off: start + int64(e)*srcPart + from, n: min(step, srcPart-from), i: i, part: e, from: from}
				pc.hashed = min(max(hashed-pc.off, 0), pc.n)
				pcs = append(pcs, pc)
				hashed = max(hashed, pc.off+pc.n)
			}
		}
	}
	gap(int64(len(p.src.Bytes())))
	return pcs
}

// writeData writes every tensor (repacked where its layout says) and the
// zeros between them, computing each tensor's CRC-32C on the bytes as they
// are written, and hands every piece of the source to digest.
func (p *Plan) writeData(ctx context.Context, w io.WriterAt, digest *digester) error {
	pcs := p.pieces()
	in := p.startReading(ctx, pcs)
	defer in.stop()
	out := newStream(w, int64(p.dataOffset))
	defer out.close()
	var (
		done int64
		crc  uint32
	)
	for k, pc := range pcs {
		if err := ctx.Err(); err != nil {
			return err // next may pick a piece read over a cancellation
		}
		src, err := in.next(k)
		if err != nil {
			return err
		}
		// The slot is reused once the digest and the writer are done.
		var refs atomic.Int32
		refs.Store(2)
		release := func() {
			if refs.Add(-1) == 0 {
				in.release(k)
			}
		}
		digest.add(src[pc.hashed:], release)
		n, err := p.writePiece(pc, src, out, &crc)
		release()
		if err != nil {
			return err
		}
		if done += int64(n); n > 0 && p.opts.Progress != nil {
			p.opts.Progress(done, p.dataBytes)
		}
	}
	return out.flush(true)
}

// writePiece passes the piece pc of a tensor (its source bytes src) to
// out, repacked where its layout says, after the zeros before its part
// when it is the part's first, and returns the tensor bytes it passed; crc
// is the tensor's CRC-32C so far (its parts, in order, make the tensor).
func (p *Plan) writePiece(pc piece, src []byte, out *stream, crc *uint32) (int, error) {
	if pc.i < 0 {
		return 0, nil
	}
	t := &p.tensors[pc.i]
	if pc.from == 0 {
		gap, at := p.gaps[pc.i][pc.part], t.Offset+uint64(pc.part)*t.Stride
		if err := out.seek(int64(p.dataOffset + gap)); err != nil {
			return 0, err
		}
		if err := out.zeros(int(at - gap)); err != nil {
			return 0, err
		}
		if pc.part == 0 {
			*crc = 0
		}
	}
	var dst []byte
	if t.Layout == LayoutR16 {
		cols := int(t.Shape[0])
		rb, _ := t.Type.RowBytes(cols)
		n, _ := kernels.LayoutBytes(t.Type, kernels.LayoutR16, len(src)/rb, cols)
		dst = out.next(n)
		kernels.RepackR16(t.Type, dst, src, cols)
	} else {
		dst = out.next(len(src))
		copy(dst, src)
	}
	*crc = crc32.Update(*crc, castagnoli, dst)
	if pc.part == t.Parts()-1 && pc.from+pc.n == int64(len(p.srcData[pc.i])/t.Parts()) {
		t.CRC = *crc
	}
	if err := out.commit(len(dst)); err != nil {
		return 0, fmt.Errorf("pack: writing tensor %q: %w", t.Name, err)
	}
	return len(dst), nil
}

// readers is how many reads of the source are in flight: a cold file
// read with O_DIRECT (Options.SourceAlign) is read at the device's speed
// only with several requests queued.
const readers = 3

// slots is how many pieces may be read and not yet both hashed and
// written (a multiple of readers: see startReading): the readers read on
// while the digest, the slower stage on most machines, catches up.
const slots = 2 * readers

// reading is the stage that reads the pieces of the source, several at a
// time, each into a slot of its own (piece k into slot k%slots).
type reading struct {
	ctx   context.Context
	stopc chan struct{}
	stop  func() // stops the readers and waits for them
	slots [slots]struct {
		buf   []byte
		free  chan struct{} // a token while the slot may be read into
		ready chan readResult
	}
}

type readResult struct {
	data []byte
	err  error
}

func (p *Plan) startReading(ctx context.Context, pcs []piece) *reading {
	r := &reading{ctx: ctx, stopc: make(chan struct{})}
	for i := range r.slots {
		r.slots[i].free = make(chan struct{}, 1)
		r.slots[i].free <- struct{}{}
		r.slots[i].ready = make(chan readResult, 1)
	}
	// Reader j reads pieces j, j+readers, ... in turn: with slots a
	// multiple of readers, a slot is only ever read into by one reader,
	// in the order of its pieces, so piece k's slot never holds another.
	var wg sync.WaitGroup
	for j := range readers {
		wg.Go(func() {
			for k := j; k < len(pcs); k += readers {
				sl := &r.slots[k%slots]
				select {
				case <-sl.free:
				case <-r.stopc:
					return
				}
				var res readResult
				res.data, res.err = p.read(pcs[k], &sl.buf)
				sl.ready <- res
			}
		})
	}
	r.stop = sync.OnceFunc(func() {
		close(r.stopc)
		wg.Wait()
	})
	return r
}

// next returns the source bytes of piece k, once read.
func (r *reading) next(k int) ([]byte, error) {
	select {
	case res := <-r.slots[k%slots].ready:
		return res.data, res.err
	case <-r.ctx.Done():
		return nil, r.ctx.Err()
	}
}

// release gives piece k's slot back to the readers.
func (r *reading) release(k int) { r.slots[k%slots].free <- struct{}{} }

// read returns the source bytes of pc: a part of the source's mapping, or
// the same bytes read from Options.Source into *buf (grown as needed, and
// aligned as Options.SourceAlign says).
func (p *Plan) read(pc piece, buf *[]byte) ([]byte, error) {
	if p.opts.Source == nil {
		return p.src.Bytes()[pc.off : pc.off+pc.n], nil
	}
	a := int64(max(p.opts.SourceAlign, 1))
	start, end := pc.off/a*a, (pc.off+pc.n+a-1)/a*a
	if int64(cap(*buf)) < end-start+a {
		*buf = make([]byte, end-start+a)
	}
	b := *buf
	if skew := int64(uintptr(unsafe.Pointer(unsafe.SliceData(b))) % uintptr(a)); skew != 0 {
		b = b[a-skew:]
	}
	b = b[:end-start]
	n, err := p.opts.Source.ReadAt(b, start)
	if int64(n) < pc.off+pc.n-start {
		return nil, fmt.Errorf("pack: %w: reading %d bytes at %d: %w", ErrSourceFault, pc.n, pc.off, err)
	}
	return b[pc.off-start : pc.off-start+pc.n], nil
}

// digester computes the SHA-256 of the source on a goroutine of its own,
// from the pieces the writer hands it, in order.
type digester struct {
	jobs  chan digestJob
	close func() // no more pieces
	done  chan struct{}
	sum   [32]byte
	err   error
}

type digestJob struct {
	data    []byte
	release func() // the digest is done with data
}

func newDigester() *digester {
	d := &digester{jobs: make(chan digestJob, slots), done: make(chan struct{})}
	d.close = sync.OnceFunc(func() { close(d.jobs) })
	go func() {
		defer close(d.done)
		h := sha256.New()
		for j := range d.jobs {
			if d.err == nil {
				// The piece may be part of the source's mapping.
				d.err = CatchFaults(func() error { h.Write(j.data); return nil })
			}
			j.release()
		}
		h.Sum(d.sum[:0])
	}()
	return d
}

// add hands the digest the next bytes of the source. It does not block:
// there are no more pieces out than the channel holds.
func (d *digester) add(data []byte, release func()) { d.jobs <- digestJob{data, release} }

// wait returns the digest of every piece added, after close.
func (d *digester) wait() ([32]byte, error) {
	<-d.done
	return d.sum, d.err
}

// hugeAlign is the size of a huge page, to which the stream aligns the
// ends of its writes.
const hugeAlign = 2 << 20

// flushAt is how many bytes the stream gathers before it writes.
const flushAt = 8 << 20

// stream writes the data section through w in large writes that end on
// hugeAlign boundaries of the file (but the last), on a goroutine of its
// own: the kernel's copy into the file (into fresh pages of a tmpfs, the
// largest cost of a load after the digest) runs beside the repacking, on
// whichever core the digest leaves free.
type stream struct {
	w      io.WriterAt
	off    int64  // the file offset of buf[0]
	buf    []byte // not yet handed to the writes
	free   chan []byte
	writes chan pendingWrite
	done   chan struct{}
	err    error // the first write error; read after done, or by fail
	failed atomic.Bool
	close  func() // no more writes; waits for those handed over
}

type pendingWrite struct {
	b   []byte
	off int64
}

// streamBuffers is how many buffers the stream fills and writes in turn.
const streamBuffers = 3

func newStream(w io.WriterAt, off int64) *stream {
	s := &stream{w: w, off: off, free: make(chan []byte, streamBuffers), writes: make(chan pendingWrite, streamBuffers),
		done: make(chan struct{})}
	for range streamBuffers - 1 {
		s.free <- nil
	}
	go func() {
		defer close(s.done)
		for pw := range s.writes {
			if !s.failed.Load() {
				if _, err := s.w.WriteAt(pw.b, pw.off); err != nil {
					s.err = err
					s.failed.Store(true)
				}
			}
			s.free <- pw.b[:0]
		}
	}()
	s.close = sync.OnceFunc(func() {
		close(s.writes)
		<-s.done
	})
	return s
}

// next returns room for the next n bytes; commit(n) takes them.
func (s *stream) next(n int) []byte {
	if len(s.buf)+n > cap(s.buf) {
		grown := make([]byte, len(s.buf), max(2*cap(s.buf), len(s.buf)+n, flushAt+hugeAlign+n))
		copy(grown, s.buf)
		s.buf = grown
	}
	return s.buf[len(s.buf) : len(s.buf)+n]
}

func (s *stream) commit(n int) error {
	s.buf = s.buf[:len(s.buf)+n]
	if len(s.buf) >= flushAt {
		return s.flush(false)
	}
	return nil
}

// zeros appends n zero bytes.
func (s *stream) zeros(n int) error {
	clear(s.next(n))
	return s.commit(n)
}

// seek moves the stream to file offset off: what it holds is handed over
// first, and the next bytes go to off. The data section is written in
// order but for a block's expert stacks: each stack's parts go to their
// experts' slots, a stride apart, so the writes jump forward and back.
func (s *stream) seek(off int64) error {
	if off == s.off+int64(len(s.buf)) {
		return nil
	}
	if err := s.handOver(int64(len(s.buf))); err != nil {
		return err
	}
	s.off = off
	return nil
}

// flush hands over what the stream holds up to its last hugeAlign
// boundary, or all of it and waits for every write to end.
func (s *stream) flush(all bool) error {
	n := int64(len(s.buf))
	if !all {
		n = (s.off+n)&^(hugeAlign-1) - s.off
	}
	if err := s.handOver(n); err != nil || !all {
		return err
	}
	s.close()
	return s.err
}

// handOver gives the first n bytes the stream holds to the writes.
func (s *stream) handOver(n int64) error {
	if n <= 0 {
		return nil
	}
	if s.failed.Load() {
		s.close()
		return s.err
	}
	rest := <-s.free
	rest = append(rest, s.buf[n:]...)
	s.writes <- pendingWrite{s.buf[:n], s.off}
	s.buf = rest
	s.off += n
	return nil
}

// CatchFaults runs fn with faults on memory mappings (SIGBUS from a mapped
// file truncated under the reader) turned into an ErrSourceFault error
// instead of a crash. Use it around code that reads a mapping of a file the
// process does not control.
func CatchFaults(fn func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if r := recover(); r != nil {
			if re, ok := r.(interface{ Addr() uintptr }); ok {
				err = fmt.Errorf("pack: %w (fault at %#x)", ErrSourceFault, re.Addr())
				return
			}
			panic(r)
		}
	}()
	return fn()
}

func (p *Plan) appendDirectory(b []byte) []byte {
	le := binary.LittleEndian
	b = le.AppendUint32(b, uint32(p.tier))
	b = le.AppendUint32(b, uint32(len(p.tensors)))
	for _, t := range p.tensors {
		b = le.AppendUint32(b, uint32(len(t.Name)))
		b = append(b, t.Name...)
		b = le.AppendUint32(b, uint32(t.Type))
		b = le.AppendUint16(b, uint16(t.Layout))
		b = le.AppendUint16(b, uint16(t.Tier))
		b = le.AppendUint32(b, uint32(len(t.Shape)))
		for _, d := range t.Shape {
			b = le.AppendUint64(b, d)
		}
		b = le.AppendUint64(b, t.Offset)
		b = le.AppendUint64(b, t.Size)
		b = le.AppendUint32(b, t.CRC)
		b = le.AppendUint32(b, t.Interleave)
		b = le.AppendUint64(b, t.Stride)
	}
	return b
}

func (p *Plan) header(sourceDigest [32]byte, manifest []byte) []byte {
	le := binary.LittleEndian
	h := make([]byte, 0, HeaderSize)
	h = append(h, Magic...)
	h = le.AppendUint32(h, Version)
	h = le.AppendUint32(h, HeaderSize)
	h = le.AppendUint64(h, p.opts.Generation)
	h = append(h, sourceDigest[:]...)
	h = le.AppendUint64(h, HeaderSize)
	h = le.AppendUint64(h, uint64(len(manifest)))
	h = le.AppendUint64(h, uint64(len(p.meta)))
	h = le.AppendUint64(h, p.dataOffset)
	h = le.AppendUint64(h, p.dataLength)
	sum := checksum(h, manifest)
	return append(h, sum[:]...)
}

// encodeMetadata encodes kvs as a GGUF v3 file without tensors.
func encodeMetadata(kvs []gguf.KV) []byte {
	le := binary.LittleEndian
	b := le.AppendUint32(nil, gguf.Magic)
	b = le.AppendUint32(b, 3)
	b = le.AppendUint64(b, 0)
	b = le.AppendUint64(b, uint64(len(kvs)))
	for _, kv := range kvs {
		b = le.AppendUint64(b, uint64(len(kv.Key)))
		b = append(b, kv.Key...)
		v := kv.Value
		b = le.AppendUint32(b, uint32(v.Type))
		switch v.Type {
		case gguf.TypeString:
			b = le.AppendUint64(b, uint64(len(v.Payload())))
		case gguf.TypeArray:
			b = le.AppendUint32(b, uint32(v.Elem))
			b = le.AppendUint64(b, uint64(v.Len))
		}
		b = append(b, v.Payload()...)
	}
	return b
}

// Bytes packs src into memory (tests, small models).
func Bytes(ctx context.Context, src *gguf.File, opts Options) ([]byte, error) {
	p, err := NewPlan(src, opts)
	if err != nil {
		return nil, err
	}
	buf := &memFile{b: make([]byte, p.Size())}
	if err := p.Write(ctx, buf); err != nil {
		return nil, err
	}
	return buf.b, nil
}

// memFile is an io.WriterAt over a fixed buffer.
type memFile struct{ b []byte }

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.b)) {
		return 0, fmt.Errorf("pack: write [%d, +%d) past %d bytes", off, len(p), len(m.b))
	}
	return copy(m.b[off:], p), nil
}
