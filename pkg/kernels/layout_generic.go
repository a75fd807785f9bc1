package kernels

import (
	"encoding/binary"
	"math"
)

// dotR16Generic is the reference twin of the LayoutR16 kernels: for the group
// block run w (nb blocks of columns of one group of 16 rows) and the R
// activation rows at xq, xq[xrb:], ..., it sets out[r*ostride+l] to the dot of
// group row l with activation row r.
//
// For the k-quants the activations are Q8_K rows. Per super-block it forms
// exact integer sums per row (each sub-block's sum times its scale; for Q4_K
// and Q5_K the mins times the activation's sums, for Q6_K the offset 32 times
// the scales times them) and then adds d·dx·sum (and, for Q4_K and Q5_K,
// subtracts dmin·dx·mins) to a float32 accumulator with one fused
// multiply-add each, as the kernels do.
//
// For Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 the activations are in q8R16Bytes
// blocks (quantQ8R16). Per block of 32 columns it forms each row's exact
// integer sum -o·Σx + Σq·x of the unsigned quants q and adds d·dx·sum to
// the row's float32 accumulator with one fused multiply-add (for Q4_1 and
// Q5_1 then m·s with another): the integer sum of ggml's
// ggml_vec_dot_q4_0_q8_0 (q4_1_q8_1, q5_0_q8_0, q5_1_q8_1, q8_0_q8_0), in
// another float order.
//
// For F16 and BF16 see dotR16FloatGeneric.
func dotR16Generic(t DType, w []byte, nb int, xq []byte, xrb, R int, out []float32, ostride int) {
	if r16Half(t) {
		dotR16FloatGeneric(t, w, nb, xq, xrb, R, out, ostride)
		return
	}
	if r16Legacy(t) {
		dotR16LegacyGeneric(t, w, nb, xq, xrb, R, out, ostride)
		return
	}
	if t == TQ2_0 {
		dotR16TQ2Generic(w, nb, xq, xrb, R, out, ostride)
		return
	}
	if t == TQ1_0 {
		dotR16TQ1Generic(w, nb, xq, xrb, R, out, ostride)
		return
	}
	_, gbb := r16Block(t)
	for r := range R {
		var acc [R16]float32
		for b := range nb {
			blk := w[b*gbb : (b+1)*gbb]
			x := xq[r*xrb+b*q8KBytes:][:q8KBytes]
			dx := math.Float32frombits(binary.LittleEndian.Uint32(x))
			for l := range R16 {
				d := F16ToF32(binary.LittleEndian.Uint16(blk[2*l:]))
				var isum, imin int32
				if t == Q4_K || t == Q5_K {
					for j := range 8 {
						var s int32
						for k := 32 * j; k < 32*j+32; k++ {
							s += int32(r16Q45KQuant(t, blk, l, k)) * int32(int8(x[4+k]))
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

// dotR16LegacyGeneric is dotR16Generic of Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0.
func dotR16LegacyGeneric(t DType, w []byte, nb int, xq []byte, xrb, R int, out []float32, ostride int) {
	_, gbb := r16Block(t)
	for r := range R {
		var acc [R16]float32
		for b := range nb {
			blk := w[b*gbb : (b+1)*gbb]
			x := xq[r*xrb+b*q8R16Bytes:][:q8R16Bytes]
			dx := math.Float32frombits(binary.LittleEndian.Uint32(x))
			start := int32(binary.LittleEndian.Uint32(x[4:]))
			s := math.Float32frombits(uint32(start)) // Q4_1, Q5_1
			at := r16MinAt(t)
			if at > 0 {
				start = 0
			}
			for l := range R16 {
				isum := start
				for k := range qk {
					isum += int32(r16LegacyQuant(t, blk, l, k)) * int32(int8(x[8+k]))
				}
				d := F16ToF32(binary.LittleEndian.Uint16(blk[2*l:]))
				acc[l] = fma32(d*dx, float32(isum), acc[l])
				if at > 0 {
					m := F16ToF32(binary.LittleEndian.Uint16(blk[at+2*l:]))
					acc[l] = fma32(m, s, acc[l])
				}
			}
		}
		copy(out[r*ostride:r*ostride+R16], acc[:])
	}
}

// dotR16FloatGeneric is dotR16Generic of F16 and BF16, whose activations
// are float32 rows rounded through t (roundR16): per row l and activation
// row r, two float32 sums take the products of the even and of the odd
// columns in order with one fused multiply-add each (every product is
// exact: two 11-bit or 8-bit significands), and are added at the end.
func dotR16FloatGeneric(t DType, w []byte, nb int, xq []byte, xrb, R int, out []float32, ostride int) {
	_, gbb := r16Block(t)
	for r := range R {
		var even, odd [R16]float32
		for b := range nb {
			blk := w[b*gbb : (b+1)*gbb]
			for k := range 32 {
				x := math.Float32frombits(binary.LittleEndian.Uint32(xq[r*xrb+4*(32*b+k):]))
				for l := range R16 {
					h := binary.LittleEndian.Uint16(blk[32*k+2*l:])
					v := BF16ToF32(h)
					if t == F16 {
						v = F16ToF32(h)
					}
					if k%2 == 0 {
						even[l] = fma32(v, x, even[l])
					} else {
						odd[l] = fma32(v, x, odd[l])
					}
				}
			}
		}
		for l := range R16 {
			out[r*ostride+l] = even[l] + odd[l]
		}
	}
}

// roundR16 encodes the activation row src for the LayoutR16 kernels of F16
// or BF16 weights into dst (4·len(src) bytes): float32 values rounded
// through t, the values Quantize(t) writes: whole vectors of 8 by the
// tier's roundF16 or roundBF16, the rest by their reference here.
func roundR16(t DType, src []float32, dst []byte) {
	dst = dst[:4*len(src)]
	n := len(src) &^ 7
	if t == F16 {
		kern.roundF16(src[:n], dst[:4*n])
		roundF16Generic(src[n:], dst[4*n:])
		return
	}
	kern.roundBF16(src[:n], dst[:4*n])
	roundBF16Generic(src[n:], dst[4*n:])
}

// roundBF16Generic is roundR16 of BF16 (F32ToBF16, BF16ToF32), the
// reference of the tiers' roundBF16.
func roundBF16Generic(src []float32, dst []byte) {
	for i, v := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(BF16ToF32(F32ToBF16(v))))
	}
}

// roundF16Generic is roundR16 of F16: each float32 rounded to float16 and
// back (F32ToF16, F16ToF32), the reference of the tiers' roundF16.
func roundF16Generic(src []float32, dst []byte) {
	for i, v := range src {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(F16ToF32(F32ToF16(v))))
	}
}

// quantQ8R16 encodes the activation row src (a multiple of 32 long) for
// the LayoutR16 kernels of t (Q4_0, Q4_1, Q5_0, Q5_1 or Q8_0) into dst
// (len(src)/32 blocks of q8R16Bytes): the quants and scale are those
// Quantize(Q8_0) writes, Q4_1's and Q5_1's s that of Quantize(Q8_1).
func quantQ8R16(t DType, src []float32, dst []byte) {
	if r16MinAt(t) > 0 {
		kern.quantQ8R16S(src, dst[:len(src)/qk*q8R16Bytes])
		return
	}
	kern.quantQ8R16(src, dst[:len(src)/qk*q8R16Bytes], -r16Offset(t))
}

// quantQ8R16SGeneric is quantQ8R16 of Q4_1 and Q5_1, with s = d·Σq as
// quantQ8_1 rounds it: the reference twin of the tiers' encoders.
func quantQ8R16SGeneric(src []float32, dst []byte) {
	for i := 0; i < len(src)/qk; i++ {
		b := dst[i*q8R16Bytes : (i+1)*q8R16Bytes]
		d, sum := quant8(src[i*qk:(i+1)*qk], b[8:])
		binary.LittleEndian.PutUint32(b, math.Float32bits(F16ToF32(F32ToF16(d))))
		binary.LittleEndian.PutUint32(b[4:], math.Float32bits(F16ToF32(F32ToF16(float32(sum)*d))))
	}
}

// quantQ8R16Generic is quantQ8R16 with the block sums multiplied by neg
// (-o): the reference twin of the tiers' encoders.
func quantQ8R16Generic(src []float32, dst []byte, neg int32) {
	for i := 0; i < len(src)/qk; i++ {
		b := dst[i*q8R16Bytes : (i+1)*q8R16Bytes]
		d, sum := quant8(src[i*qk:(i+1)*qk], b[8:])
		binary.LittleEndian.PutUint32(b, math.Float32bits(F16ToF32(F32ToF16(d))))
		binary.LittleEndian.PutUint32(b[4:], uint32(neg*int32(sum)))
	}
}

// r16Q4KGeneric, r16Q5KGeneric, r16Q6KGeneric, r16Q4_0Generic,
// r16Q4_1Generic, r16Q5_0Generic, r16Q5_1Generic and r16Q8_0Generic are
// genericKernels' r16 entries.

func r16Q4KGeneric(w []byte, nb int, xq []byte, xrb, R int, out []float32, ostride int) {
	dotR16Generic(Q4_K, w, nb, xq, xrb, R, out, ostride)
}

func r16Q5KGeneric(w []byte, nb int, xq []byte, xrb, R int, out []float32, ostride int) {
	dotR16Generic(Q5_K, w, nb, xq, xrb, R, out, ostride)
}

func r16Q6KGeneric(w []byte, nb int, xq []byte, xrb, R int, out []float32, ostride int) {
	dotR16Generic(Q6_K, w, nb, xq, xrb, R, out, ostride)
}

func r16Q4_0Generic(w []byte, nb int, xq []byte, xrb, R int, out []float32, ostride int) {
	dotR16LegacyGeneric(Q4_0, w, nb, xq, xrb, R, out, ostride)
}

func r16Q4_1Generic(w []byte, nb int, xq []byte, xrb, R int, out []float32, ostride int) {
	dotR16LegacyGeneric(Q4_1, w, nb, xq, xrb, R, out, ostride)
}

func r16Q5_0Generic(w []byte, nb int, xq []byte, xrb, R int, out []float32, ostride int) {
	dotR16LegacyGeneric(Q5_0, w, nb, xq, xrb, R, out, ostride)
}

func r16Q5_1Generic(w []byte, nb int, xq []byte, xrb, R int, out []float32, ostride int) {
	dotR16LegacyGeneric(Q5_1, w, nb, xq, xrb, R, out, ostride)
}

func r16F16Generic(w []byte, nb int, xq []byte, xrb, R int, out []float32, ostride int) {
	dotR16FloatGeneric(F16, w, nb, xq, xrb, R, out, ostride)
}

func r16BF16Generic(w []byte, nb int, xq []byte, xrb, R int, out []float32, ostride int) {
	dotR16FloatGeneric(BF16, w, nb, xq, xrb, R, out, ostride)
}

func r16Q8_0Generic(w []byte, nb int, xq []byte, xrb, R int, out []float32, ostride int) {
	dotR16LegacyGeneric(Q8_0, w, nb, xq, xrb, R, out, ostride)
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
