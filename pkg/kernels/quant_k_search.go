package kernels

import "math"

// The scale searches behind ggml's k-quant reference quantizers
// (make_qx_quants, make_q3_quants, make_qkx2_quants in ggml-quants.c). They
// are transcribed operation for operation, in float32 and in the same order,
// because a different search would produce files that decode fine but do not
// match what llama.cpp writes, and quality comparisons would then measure
// the search rather than the format.

// groupMaxEps is the magnitude below which a group counts as all zeros.
const groupMaxEps = 1e-15

// nearestInt rounds to the nearest integer, ties to even, by adding 1.5·2²³
// and reading the mantissa: that is ggml's nearest_int, and it differs from
// math.Round on ties. Valid for |f| ≤ 2²²-1.
func nearestInt(f float32) int {
	v := f + 12582912
	return int(math.Float32bits(v)&0x7fffff) - 0x400000
}

func clampInt(v, lo, hi int) int { return max(lo, min(hi, v)) }

func sqrt32(f float32) float32 { return float32(math.Sqrt(float64(f))) }

// makeQXQuants picks a symmetric scale for x with quants in [-nmax, nmax-1]
// (stored in L offset by nmax), weighting the error of each element by x²
// (ggml's rmse_type 1, used by Q6_K) and trying 18 scales around nmax/amax.
func makeQXQuants(nmax int, x []float32, L []int8) float32 {
	amax, m := maxAbs(x)
	if amax < groupMaxEps {
		clear(L[:len(x)])
		return 0
	}
	fmax := float32(nmax)
	iscale := float32(-nmax) / m
	var sumlx, suml2 float32
	for i, v := range x {
		l := clampInt(nearestInt(iscale*v), -nmax, nmax-1)
		L[i] = int8(l + nmax)
		w := v * v
		fl := float32(l)
		sumlx += w * v * fl
		suml2 += w * fl * fl
	}
	var scale float32
	if suml2 != 0 {
		scale = sumlx / suml2
	}
	best := scale * sumlx
	for is := -9; is <= 9; is++ {
		if is == 0 {
			continue
		}
		iscale = -(fmax + 0.1*float32(is)) / m
		sumlx, suml2 = 0, 0
		for _, v := range x {
			l := clampInt(nearestInt(iscale*v), -nmax, nmax-1)
			w := v * v
			fl := float32(l)
			sumlx += w * v * fl
			suml2 += w * fl * fl
		}
		if suml2 > 0 && sumlx*sumlx > best*suml2 {
			for i, v := range x {
				L[i] = int8(nmax + clampInt(nearestInt(iscale*v), -nmax, nmax-1))
			}
			scale = sumlx / suml2
			best = scale * sumlx
		}
	}
	return scale
}

// makeQ3Quants is makeQXQuants' cousin for Q3_K: after the first guess it
// moves single quants while that improves the x²-weighted fit (at most five
// sweeps). L gets quants in [0, 2·nmax).
func makeQ3Quants(nmax int, x []float32, L []int8) float32 {
	amax, m := maxAbs(x)
	if amax < groupMaxEps {
		clear(L[:len(x)])
		return 0
	}
	iscale := float32(-nmax) / m
	var sumlx, suml2 float32
	for i, v := range x {
		l := clampInt(nearestInt(iscale*v), -nmax, nmax-1)
		L[i] = int8(l)
		w := v * v
		fl := float32(l)
		sumlx += w * v * fl
		suml2 += w * fl * fl
	}
	for range 5 {
		changed := false
		for i, v := range x {
			w := v * v
			li := float32(L[i])
			slx := sumlx - w*v*li
			if !(slx > 0) {
				continue
			}
			sl2 := suml2 - w*li*li
			nl := clampInt(nearestInt(v*sl2/slx), -nmax, nmax-1)
			if nl == int(L[i]) {
				continue
			}
			fl := float32(nl)
			slx += w * v * fl
			sl2 += w * fl * fl
			if sl2 > 0 && slx*slx*suml2 > sumlx*sumlx*sl2 {
				L[i] = int8(nl)
				sumlx, suml2 = slx, sl2
				changed = true
			}
		}
		if !changed {
			break
		}
	}
	for i := range x {
		L[i] += int8(nmax)
	}
	if suml2 > 0 {
		return sumlx / suml2
	}
	return 0
}

// makeQKX2Quants fits x ≈ scale·L - negMin with L in [0, nmax] and the
// offset never positive (so zero stays representable), minimising the
// weights-weighted squared error (absolute error if useMad). It starts from
// the min/max fit and tries nstep+1 scales (nmax+rmin+k·rdelta)/(max-min),
// solving the 2×2 least-squares problem for each. laux is scratch of len(x).
func makeQKX2Quants(nmax int, x, weights []float32, L, laux []uint8, rmin, rdelta float32, nstep int, useMad bool) (scale, negMin float32) {
	n := len(x)
	lo, hi := x[0], x[0]
	sumW := weights[0]
	sumX := sumW * x[0]
	for i := 1; i < n; i++ {
		if x[i] < lo {
			lo = x[i]
		}
		if x[i] > hi {
			hi = x[i]
		}
		w := weights[i]
		sumW += w
		sumX += w * x[i]
	}
	if lo > 0 {
		lo = 0
	}
	if hi == lo {
		clear(L[:n])
		return 0, -lo
	}
	errOf := func(diff float32) float32 {
		if useMad {
			return abs32(diff)
		}
		return diff * diff
	}
	iscale := float32(nmax) / (hi - lo)
	scale = 1 / iscale
	var bestErr float32
	for i := range n {
		L[i] = uint8(clampInt(nearestInt(iscale*(x[i]-lo)), 0, nmax))
		bestErr += weights[i] * errOf(scale*float32(L[i])+lo-x[i])
	}
	if nstep < 1 {
		return scale, -lo
	}
	for is := 0; is <= nstep; is++ {
		// lo moves when a better fit is found; later candidates start from it.
		iscale = (rmin + rdelta*float32(is) + float32(nmax)) / (hi - lo)
		var sumL, sumL2, sumXL float32
		for i := range n {
			l := clampInt(nearestInt(iscale*(x[i]-lo)), 0, nmax)
			laux[i] = uint8(l)
			w := weights[i]
			fl := float32(l)
			sumL += w * fl
			sumL2 += w * fl * fl
			sumXL += w * fl * x[i]
		}
		det := sumW*sumL2 - sumL*sumL
		if !(det > 0) {
			continue
		}
		thisScale := (sumW*sumXL - sumX*sumL) / det
		thisMin := (sumL2*sumX - sumL*sumXL) / det
		if thisMin > 0 {
			thisMin = 0
			thisScale = sumXL / sumL2
		}
		var cur float32
		for i := range n {
			cur += weights[i] * errOf(thisScale*float32(laux[i])+thisMin-x[i])
		}
		if cur < bestErr {
			copy(L[:n], laux[:n])
			bestErr = cur
			scale = thisScale
			lo = thisMin
		}
	}
	return scale, -lo
}
