package kernels

import (
	"encoding/binary"
	"math"
)

// dotR16Generic is the reference twin of the LayoutR16 kernels: for the group
// block run w (nb super-blocks of one group of 16 rows) and the R Q8_K
// activation rows at xq, xq[xrb:], ..., it sets out[r*ostride+l] to the dot of
// group row l with activation row r. Per super-block it forms exact integer
// sums per row (each sub-block's sum times its scale; for Q4_K the mins times
// the activation's sums, for Q6_K the offset 32 times the scales times them)
// and then adds d·dx·sum (and, for Q4_K, subtracts dmin·dx·mins) to a
// float32 accumulator with one fused multiply-add each, as the kernels do.
func dotR16Generic(t DType, w []byte, nb int, xq []byte, xrb, R int, out []float32, ostride int) {
	gbb := r16BlockBytes(t)
	for r := range R {
		var acc [R16]float32
		for b := range nb {
			blk := w[b*gbb : (b+1)*gbb]
			x := xq[r*xrb+b*q8KBytes:][:q8KBytes]
			dx := math.Float32frombits(binary.LittleEndian.Uint32(x))
			for l := range R16 {
				d := F16ToF32(binary.LittleEndian.Uint16(blk[2*l:]))
				var isum, imin int32
				if t == Q4_K {
					for j := range 8 {
						var s int32
						for k := 32 * j; k < 32*j+32; k++ {
							c, i := k/8, k%8
							q := blk[320+64*c+4*l+i%4] >> (4 * (i / 4)) & 0xf
							s += int32(q) * int32(int8(x[4+k]))
						}
						isum += s * int32(blk[64+16*j+l])
						bs := int32(int16(binary.LittleEndian.Uint16(x[260+4*j:]))) +
							int32(int16(binary.LittleEndian.Uint16(x[262+4*j:])))
						imin += int32(blk[192+32*(j/2)+2*l+j%2]) * bs
					}
					dmin := F16ToF32(binary.LittleEndian.Uint16(blk[32+2*l:]))
					acc[l] = fma32(d*dx, float32(isum), acc[l])
					acc[l] = fma32(-(dmin * dx), float32(imin), acc[l])
					continue
				}
				for j := range 16 {
					var s int32
					for k := 16 * j; k < 16*j+16; k++ {
						c, i := k/8, k%8
						q := blk[288+64*c+4*l+i%4] >> (4 * (i / 4)) & 0xf
						p, kk := k/16, k%16
						q |= blk[2336+64*p+4*l+kk%4] >> (2 * (kk / 4)) & 3 << 4
						s += int32(q) * int32(int8(x[4+k]))
					}
					sc := int32(int8(blk[32+32*(j/2)+2*l+j%2]))
					bs := int32(int16(binary.LittleEndian.Uint16(x[260+2*j:])))
					isum += sc * (s - 32*bs)
				}
				acc[l] = fma32(d*dx, float32(isum), acc[l])
			}
		}
		copy(out[r*ostride:r*ostride+R16], acc[:])
	}
}

// r16Q4KGeneric and r16Q6KGeneric are genericKernels' r16 entries.

func r16Q4KGeneric(w []byte, nb int, xq []byte, xrb, R int, out []float32, ostride int) {
	dotR16Generic(Q4_K, w, nb, xq, xrb, R, out, ostride)
}

func r16Q6KGeneric(w []byte, nb int, xq []byte, xrb, R int, out []float32, ostride int) {
	dotR16Generic(Q6_K, w, nb, xq, xrb, R, out, ostride)
}

// fma32 is a float32 fused multiply-add (one rounding), computed in float64
// with the double-rounding case fixed up.
func fma32(a, b, c float32) float32 {
	p := float64(a) * float64(b) // exact
	s := p + float64(c)
	bb := s - p
	e := (p - (s - bb)) + (float64(c) - bb) // s + e == p + c exactly
	if e != 0 {
		bits := math.Float64bits(s)
		// A float64 on a float32 rounding midpoint (29 low mantissa bits
		// 1000…0) whose exact value lies off it must round the way e says.
		if bits&(1<<29-1) == 1<<28 {
			if (e > 0) == (s > 0) {
				s = math.Nextafter(s, math.Inf(int(math.Copysign(1, s))))
			} else {
				s = math.Nextafter(s, 0)
			}
		}
	}
	return float32(s)
}
