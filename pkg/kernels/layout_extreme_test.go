package kernels

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
)

// extremeR16 returns 16 ggml rows of t (nb blocks each) and R activation
// rows of its vec-dot type built to saturate int16 arithmetic: weight row l
// has every quant at its largest (l%4 == 0), at 0 (1), alternating (2) or
// random (3), with the largest sub-block scales (Q6_K: -128 and 127);
// activation row r is all -128 (r%4 == 0), all 127 (1), alternating 127,
// -128 (2) or random bytes (3), -128 included though Quantize never writes
// it.
func extremeR16(r *rand.Rand, t DType, nb, R int) (w, xq []byte) {
	bb := t.BlockBytes()
	w = make([]byte, R16*nb*bb)
	small := F32ToF16(1.0 / 1024)
	for l := range R16 {
		for b := range nb {
			blk := w[(l*nb+b)*bb:][:bb]
			var qs []byte
			switch t {
			case Q4_K, Q5_K:
				binary.LittleEndian.PutUint16(blk, small)
				binary.LittleEndian.PutUint16(blk[2:], small)
				for i := 4; i < 16; i++ {
					blk[i] = 0xff // scales and mins 63
				}
				qs = blk[16:]
			case Q6_K:
				binary.LittleEndian.PutUint16(blk[208:], small)
				for j := range 16 {
					blk[192+j] = byte(int8(-128 + 255*((l+j)%2)))
				}
				qs = blk[:192] // ql and qh
			case Q4_0, Q5_0, Q8_0: // Q5_0: qh too, all fifth bits set
				binary.LittleEndian.PutUint16(blk, small)
				qs = blk[2:]
			case Q4_1, Q5_1: // Q5_1: qh too
				binary.LittleEndian.PutUint16(blk, small)
				binary.LittleEndian.PutUint16(blk[2:], small)
				qs = blk[4:]
			}
			for i := range qs {
				v := byte(0xff)
				if t == Q8_0 {
					v = 0x7f // 127: unsigned 255 in LayoutR16
				}
				switch l % 4 {
				case 1:
					v ^= 0xff // Q8_0: -128, unsigned 0
				case 2:
					if i%2 == 1 {
						v ^= 0xff
					}
				case 3:
					v = byte(r.Uint32())
				}
				qs[i] = v
			}
		}
	}
	vt := VecDotType(t)
	xb := vt.BlockBytes()
	xq = make([]byte, R*nb*xb)
	for row := range R {
		for b := range nb {
			blk := xq[(row*nb+b)*xb:][:xb]
			qs, n := blk[2:34], qk
			switch vt {
			case Q8_K:
				binary.LittleEndian.PutUint32(blk, math.Float32bits(1.0/512))
				qs, n = blk[4:260], QK_K
			case Q8_1:
				binary.LittleEndian.PutUint16(blk, F32ToF16(1.0/512))
				binary.LittleEndian.PutUint16(blk[2:], F32ToF16(-0.25)) // s
				qs = blk[4:36]
			default:
				binary.LittleEndian.PutUint16(blk, F32ToF16(1.0/512))
			}
			for i := range n {
				v := int8(-128)
				switch row % 4 {
				case 1:
					v = 127
				case 2:
					if i%2 == 0 {
						v = 127
					}
				case 3:
					v = int8(r.Uint32())
				}
				qs[i] = byte(v)
			}
			if vt == Q8_K {
				for g := range 16 {
					var s int16
					for _, q := range qs[16*g : 16*g+16] {
						s += int16(int8(q))
					}
					binary.LittleEndian.PutUint16(blk[260+2*g:], uint16(s))
				}
			}
		}
	}
	return w, xq
}

// TestR16KernelsExtremes checks every tier's LayoutR16 kernels against the
// reference twin bit for bit where int16 intermediates would saturate if
// the AVX2 kernels grouped their products differently: the largest quants
// and scales against activations of -128 and 127.
func TestR16KernelsExtremes(t *testing.T) {
	r := rand.New(rand.NewPCG(53, 54))
	for _, k := range hostKernels() {
		for _, typ := range r16Types {
			if r16Half(typ) {
				continue // float products: no int16 to saturate
			}
			for _, nb := range []int{1, 3} {
				const R = 9 // every activation pattern, and the 8/4/2/1-row kernels
				cols := nb * r16Cols(typ)
				w, xq := extremeR16(r, typ, nb, R)
				xq, xrb := r16X(typ, xq, R, nb)
				size, _ := LayoutBytes(typ, LayoutR16, R16, cols)
				packed := make([]byte, size)
				RepackR16(typ, packed, w, cols)
				want := make([]float32, R*R16)
				dotR16Generic(typ, packed, nb, xq, xrb, R, want, R16)
				got := make([]float32, R*R16)
				k.r16[typ](packed, nb, xq, xrb, R, got, R16)
				for i := range got {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("%s %v nb=%d: out[%d][%d] = %v, reference %v", k.tier, typ, nb, i/R16, i%R16, got[i], want[i])
					}
				}
			}
		}
	}
}
