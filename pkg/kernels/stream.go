package kernels

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
	sum := kern.sumU64
	p.Run(len(spans), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			sums[i] = sum(spans[i])
		}
	})
	var s uint64
	for _, v := range sums {
		s += v
	}
	return s
}

// Prefetch asks the CPU to bring b's cache lines in, a hint with no effect
// on any result (the reference tier ignores it). Decode attention calls it
// on the next KV tile, which the hardware prefetcher would find late: a
// tile is a few KiB, and the next one is elsewhere in memory.
func Prefetch(b []byte) {
	if len(b) > 0 {
		kern.prefetch(b)
	}
}
