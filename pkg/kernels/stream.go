package kernels

import "encoding/binary"

// sumU64Generic is the reference of sumU64: the wrapping sum of b's
// little-endian uint64 words (a trailing partial word is ignored). sumU64
// reads memory as fast as the host allows; the STREAM-style benchmark uses it
// to measure the read bandwidth that decode should approach.
func sumU64Generic(b []byte) uint64 {
	var s0, s1, s2, s3 uint64
	i := 0
	for ; i+32 <= len(b); i += 32 {
		s0 += binary.LittleEndian.Uint64(b[i:])
		s1 += binary.LittleEndian.Uint64(b[i+8:])
		s2 += binary.LittleEndian.Uint64(b[i+16:])
		s3 += binary.LittleEndian.Uint64(b[i+24:])
	}
	for ; i+8 <= len(b); i += 8 {
		s0 += binary.LittleEndian.Uint64(b[i:])
	}
	return s0 + s1 + s2 + s3
}

// StreamRead reads every byte of bufs once, split over the pool's threads,
// as fast as the host allows, and returns a checksum (so the reads cannot be
// optimised away). Timed by the caller, it is the STREAM-style read
// bandwidth that decode, which reads the same bytes once per token, should
// approach; `corelm bench` runs it over the model's own weights.
func StreamRead(p *Pool, bufs [][]byte) uint64 {
	const piece = 1 << 20
	var spans [][]byte
	for _, b := range bufs {
		for off := 0; off < len(b); off += piece {
			spans = append(spans, b[off:min(off+piece, len(b))])
		}
	}
	sums := make([]uint64, len(spans))
	p.Run(len(spans), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			sums[i] = sumU64(spans[i])
		}
	})
	var s uint64
	for _, v := range sums {
		s += v
	}
	return s
}
