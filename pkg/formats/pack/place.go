package pack

import "fmt"

// place lays out ts in directory order as the package doc says, from each
// tensor's Size, Shape and Interleave: it sets Offset and Stride and
// returns where the data end. Nothing may end past limit (the data
// section's length for the reader), which also keeps every sum of hostile
// sizes from overflowing; on an error, the entries before ts[done] are
// placed. The writer places tensors with it; the reader runs it on a copy
// of the directory and requires the same numbers, so the two cannot
// disagree.
func place(ts []Tensor, limit uint64) (end uint64, done int, err error) {
	var next uint64 // ≤ limit ≤ MaxInt64: aligning it up cannot overflow
	for i := 0; i < len(ts); {
		t := &ts[i]
		if t.Interleave == 0 {
			start := alignUp(next, tensorAlign(t.Size))
			if t.Size > limit || start > limit-t.Size {
				return 0, i, errorf(where(i, t), ErrPlacement, "data [%d, +%d) past the end of the data section (%d bytes)", start, t.Size, limit)
			}
			t.Offset, t.Stride = start, 0
			next = start + t.Size
			i++
			continue
		}
		if t.Interleave != 1 {
			return 0, i, errorf(where(i, t), ErrPlacement, "interleave %d does not follow member %d of a run", t.Interleave, t.Interleave-1)
		}
		j := i + 1
		for j < len(ts) && ts[j].Interleave == ts[j-1].Interleave+1 {
			j++
		}
		run := ts[i:j]
		if len(t.Shape) != 3 {
			return 0, i, errorf(where(i, t), ErrTensor, "interleaved, but of rank %d: only 3-D stacks of experts are", len(t.Shape))
		}
		n := t.Shape[2]
		// Each member's matrices at the next multiple of TensorAlign of a
		// slot, offsets relative to the slot for now.
		var slot uint64
		for k := range run {
			m := &run[k]
			if len(m.Shape) != 3 || m.Shape[2] != n || n == 0 || m.Size%n != 0 {
				return 0, i, errorf(where(i+k, m), ErrTensor, "shape %v of %d bytes cannot be interleaved with %d experts", m.Shape, m.Size, n)
			}
			piece := m.Size / n
			slot = alignUp(slot, TensorAlign)
			if piece > limit || slot > limit-piece {
				return 0, i, errorf(where(i+k, m), ErrPlacement, "one expert's matrices take more than the data section (%d bytes)", limit)
			}
			m.Offset = slot
			slot += piece
		}
		stride := alignUp(slot, PageAlign)
		base := alignUp(next, PageAlign)
		if base > limit || n-1 > (limit-base)/stride || slot > limit-base-(n-1)*stride {
			return 0, i, errorf(where(i, t), ErrPlacement, "%d experts of %d bytes from %d run past the end of the data section (%d bytes)", n, stride, base, limit)
		}
		for k := range run {
			run[k].Offset += base
			run[k].Stride = stride
		}
		next = base + (n-1)*stride + slot
		i = j
	}
	return next, len(ts), nil
}

// where names directory entry i for errors.
func where(i int, t *Tensor) string { return fmt.Sprintf("tensor %d %q", i, t.Name) }

// pieces calls fn with every stored piece of ts in file order: a whole
// tensor (e = 0), or expert e's matrix of an interleaved one. ts must be
// placed (place accepted it).
func pieces(ts []Tensor, fn func(i, e int, off, size uint64)) {
	for i := 0; i < len(ts); {
		if ts[i].Interleave == 0 {
			fn(i, 0, ts[i].Offset, ts[i].Size)
			i++
			continue
		}
		j := i + 1
		for j < len(ts) && ts[j].Interleave == ts[j-1].Interleave+1 {
			j++
		}
		n := ts[i].Shape[2]
		for e := uint64(0); e < n; e++ {
			for k := i; k < j; k++ {
				piece := ts[k].Size / n
				fn(k, int(e), ts[k].Offset+e*ts[k].Stride, piece)
			}
		}
		i = j
	}
}

// Parts is how many pieces t is stored in: its expert count when it is
// interleaved, else 1.
func (t *Tensor) Parts() int {
	if t.Interleave == 0 {
		return 1
	}
	return int(t.Shape[2])
}
