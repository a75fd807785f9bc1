package main

import (
	"flag"
	"fmt"

	. "github.com/mmcloughlin/avo/build"
	. "github.com/mmcloughlin/avo/operand"
	. "github.com/mmcloughlin/avo/reg"
)

// The frames of the kernels that take several activation rows (rows) or
// several weight rows (cols) per call: row addressing, pointer advance and
// the cols kernels' prefetch of the next row group.

// rowRegs are the activation row pointers of the avx512vnni rows kernels: x0
// and, past four rows, x4 = x0 + 4·xstride; other rows are addressed with
// the stride and 3·stride as index registers, so eight rows take four
// general registers.
var rowRegs struct{ x0, x4 Register }

// rowAddressing loads the x and xstride parameters and returns the
// addressing function: byte disp of activation row r's current block.
func rowAddressing(R int) func(r, disp int) Mem {
	x0, stride := Load(Param("x"), GP64()), Load(Param("xstride"), GP64())
	addr, x4 := stridedRows(x0, stride, R)
	rowRegs.x0, rowRegs.x4 = x0, x4
	return addr
}

// rowsProlog declares the rows kernel name, nb blocks of one weight row of
// typ against R activation rows at x + r·xstride, whose row r accumulates
// into acc[per·r : per·r+per] (note says how), and loads w and nb.
func rowsProlog(name, typ string, R, per int, note string) (w, nb Register) {
	kernel(name, fmt.Sprintf("func(w, x *byte, xstride, nb int, acc *[%d]float32)", per*R),
		fmt.Sprintf("%s accumulates nb %s blocks of one weight row against %d Q8_K rows", name, typ, R),
		fmt.Sprintf("x, x+xstride, ... into acc[%dr:%dr+%d]%s.", per, per, per, note))
	return Load(Param("w"), GP64()), Load(Param("nb"), GP64())
}

// chainedRows loads the x and xstride parameters and returns R pointers to
// the activation rows x + r·xstride: the AVX2 rows kernels, which address
// the rows one register each.
func chainedRows(R int) []Register {
	x0 := Load(Param("x"), GP64())
	stride := Load(Param("xstride"), GP64())
	xs := []Register{x0}
	for r := 1; r < R; r++ {
		xr := GP64()
		LEAQ(Mem{Base: xs[r-1], Index: stride, Scale: 1}, xr)
		xs = append(xs, xr)
	}
	return xs
}

// colsProlog declares the cols kernel name for C weight rows of typ at
// w + c·wstride (reduced in the order of hsum) and loads its parameters:
// rowMem addresses byte disp of weight row c's current block, pf is the
// prefetch pointer of colsPrefetchStart.
func colsProlog(name string, C int, typ, hsum string) (w, x, nb Register, rowMem func(c, disp int) Mem, pf Register) {
	kernel(name, fmt.Sprintf("func(w *byte, wstride int, x *byte, nb int, out *[%d]float32)", C),
		fmt.Sprintf("%s stores in out[c] the dots of nb %s blocks of the %d weight rows", name, typ, C),
		fmt.Sprintf("w + c·wstride with one Q8_K row x, reduced in %s's order.", hsum))
	w, ws := Load(Param("w"), GP64()), Load(Param("wstride"), GP64())
	x, nb = Load(Param("x"), GP64()), Load(Param("nb"), GP64())
	rowMem, _ = stridedRows(w, ws, C)
	pf = colsPrefetchStart(w, ws)
	return w, x, nb, rowMem, pf
}

// colsPrefetch sets whether the cols kernels prefetch the next group of
// weight rows: each block iteration touches the next C·blockBytes bytes
// of the C rows that follow (contiguous in MatMul), so the following call's
// rows are in cache by the time it starts. Prefetching each row ahead
// instead lands in the next row of the same group and loses to the
// hardware prefetcher; with four interleaved streams per core the latter
// alone does not keep DRAM busy.
var colsPrefetch = flag.Bool("colsprefetch", true, "prefetch the next row group in the cols kernels")

// colsPrefetchStart returns the register of the next group's address,
// w + 4·wstride (nil without prefetching).
func colsPrefetchStart(w, ws Register) Register {
	if !*colsPrefetch {
		return nil
	}
	pf := GP64()
	LEAQ(Mem{Base: w, Index: ws, Scale: 4}, pf)
	return pf
}

// colsPrefetchNext touches the next n bytes at pf and advances it.
func colsPrefetchNext(pf Register, n int) {
	if pf == nil {
		return
	}
	for off := 0; off < n; off += 64 {
		PREFETCHT0(Mem{Base: pf, Disp: off})
	}
	ADDQ(U32(n), pf)
}

// colsPairSums replaces lane 0 of each 128-bit lane [v0, v1, v2, v3] of v
// with (v0+v2) + (v1+v3).
func colsPairSums(v Register) {
	s := YMM()
	VPERMILPS(U8(0x4e), v, s)
	VADDPS(s, v, v)
	VMOVSHDUP(v, s)
	VADDPS(s, v, v)
}

// stridedRows returns the addressing of R rows at base + r·stride (stride
// in bytes), with x4 = base + 4·stride past four rows.
func stridedRows(base, stride Register, R int) (addr func(r, disp int) Mem, x4 Register) {
	s3 := GP64()
	LEAQ(Mem{Base: stride, Index: stride, Scale: 2}, s3)
	if R > 4 {
		x4 = GP64()
		LEAQ(Mem{Base: base, Index: stride, Scale: 4}, x4)
	}
	return func(r, disp int) Mem {
		b := base
		if r >= 4 {
			b, r = x4, r-4
		}
		switch r {
		case 0:
			return Mem{Base: b, Disp: disp}
		case 1:
			return Mem{Base: b, Index: stride, Scale: 1, Disp: disp}
		case 2:
			return Mem{Base: b, Index: stride, Scale: 2, Disp: disp}
		}
		return Mem{Base: b, Index: s3, Scale: 1, Disp: disp}
	}, x4
}
