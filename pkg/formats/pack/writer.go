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
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

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
// empty and take concurrent WriteAt calls on disjoint ranges (*os.File
// does). Tensor data come first, then the manifest, then the header: a file
// cut short anywhere fails the reader's checks. Faults on the source
// mapping (a source truncated under us) are reported as ErrSourceFault.
func (p *Plan) Write(ctx context.Context, w io.WriterAt) error {
	// The source digest is a second pass over the source: run it beside the
	// copy. Always wait for it, since the caller may unmap the source as
	// soon as Write returns.
	type digestResult struct {
		sum [32]byte
		err error
	}
	dc := make(chan digestResult, 1)
	go func() {
		var d digestResult
		d.err = CatchFaults(func() error {
			h := sha256.New()
			src := p.src.Bytes()
			var buf []byte
			for off := 0; off < len(src); off += chunk {
				if err := ctx.Err(); err != nil {
					return err
				}
				piece, err := p.read(src[off:min(off+chunk, len(src))], int64(off), &buf)
				if err != nil {
					return err
				}
				h.Write(piece)
			}
			h.Sum(d.sum[:0])
			return nil
		})
		dc <- d
	}()
	werr := p.writeData(ctx, w)
	d := <-dc
	if werr != nil {
		return werr
	}
	if d.err != nil {
		return d.err
	}

	manifest := make([]byte, 0, uint64(len(p.meta))+p.dirSize)
	manifest = append(manifest, p.meta...)
	manifest = p.appendDirectory(manifest)
	pad := make([]byte, p.dataOffset-HeaderSize-uint64(len(manifest)))
	if _, err := w.WriteAt(append(manifest, pad...), HeaderSize); err != nil {
		return err
	}
	_, err := w.WriteAt(p.header(d.sum, manifest), 0)
	return err
}

// writeData writes every tensor (repacked where its layout says) and the
// zeros between them, computing each tensor's CRC-32C on the bytes as they
// are written. Tensors are shared out to one worker per CPU, whole, so each
// CRC runs in order; each worker catches faults on the source mapping.
func (p *Plan) writeData(ctx context.Context, w io.WriterAt) error {
	var (
		next     atomic.Int64
		done     atomic.Int64
		progress sync.Mutex
		wg       sync.WaitGroup
		errs     = make([]error, min(runtime.GOMAXPROCS(0), len(p.tensors)))
	)
	var reported int64
	report := func(n int) {
		d := done.Add(int64(n))
		if p.opts.Progress == nil {
			return
		}
		// Workers race to report: the callback sees a rising count only
		// (the last call says all is done).
		progress.Lock()
		if d > reported {
			reported = d
			p.opts.Progress(d, p.dataBytes)
		}
		progress.Unlock()
	}
	for wi := range errs {
		wg.Go(func() {
			errs[wi] = CatchFaults(func() error {
				for {
					i := int(next.Add(1) - 1)
					if i >= len(p.tensors) {
						return nil
					}
					if err := p.writeTensor(ctx, w, i, report); err != nil {
						next.Store(int64(len(p.tensors))) // the others stop after their tensor
						return err
					}
				}
			})
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// writeTensor writes tensor i, whole or expert by expert (its parts), and
// the zeros before each part, and sets its CRC.
func (p *Plan) writeTensor(ctx context.Context, w io.WriterAt, i int, report func(int)) error {
	t := &p.tensors[i]
	// Source bytes per piece, and what a piece becomes: LayoutR16
	// tensors are repacked a whole number of 16-row groups at a time (an
	// expert's matrix is whole groups).
	step, conv := chunk, func(src []byte) []byte { return src }
	if t.Layout == LayoutR16 {
		cols := int(t.Shape[0])
		rb, _ := t.Type.RowBytes(cols)
		group := kernels.R16 * rb
		step = max(1, chunk/group) * group
		var buf []byte
		conv = func(src []byte) []byte {
			n, _ := kernels.LayoutBytes(t.Type, kernels.LayoutR16, len(src)/rb, cols)
			if cap(buf) < n {
				buf = make([]byte, n)
			}
			kernels.RepackR16(t.Type, buf[:n], src, cols)
			return buf[:n]
		}
	}
	parts := t.Parts()
	srcPart, part := len(p.srcData[i])/parts, t.Size/uint64(parts)
	crc := uint32(0)
	var in []byte
	for e := range parts {
		at := t.Offset + uint64(e)*t.Stride
		if gap := at - p.gaps[i][e]; gap > 0 {
			var zeros [PageAlign]byte
			if _, err := w.WriteAt(zeros[:gap], int64(p.dataOffset+p.gaps[i][e])); err != nil {
				return err
			}
		}
		data := p.srcData[i][e*srcPart : (e+1)*srcPart]
		var written int64
		for off := 0; off < len(data); off += step {
			if err := ctx.Err(); err != nil {
				return err
			}
			src, err := p.read(data[off:min(off+step, len(data))], p.srcOff[i]+int64(e*srcPart+off), &in)
			if err != nil {
				return err
			}
			piece := conv(src)
			crc = crc32.Update(crc, castagnoli, piece)
			if _, err := w.WriteAt(piece, int64(p.dataOffset+at)+written); err != nil {
				return fmt.Errorf("pack: writing tensor %q: %w", t.Name, err)
			}
			written += int64(len(piece))
			report(len(piece))
		}
		if uint64(written) != part {
			return fmt.Errorf("pack: tensor %q: part %d became %d bytes, want %d", t.Name, e, written, part)
		}
	}
	t.CRC = crc
	return nil
}

// read returns the source bytes that mapped (a part of the source's
// mapping) holds, which start at off in the source file: mapped itself, or
// the same bytes read from Options.Source into *buf.
func (p *Plan) read(mapped []byte, off int64, buf *[]byte) ([]byte, error) {
	if p.opts.Source == nil {
		return mapped, nil
	}
	if cap(*buf) < len(mapped) {
		*buf = make([]byte, len(mapped))
	}
	b := (*buf)[:len(mapped)]
	if n, err := p.opts.Source.ReadAt(b, off); n < len(b) {
		return nil, fmt.Errorf("pack: %w: reading %d bytes at %d: %w", ErrSourceFault, len(b), off, err)
	}
	return b, nil
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
