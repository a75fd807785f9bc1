package kernels

// The reference twins of the attention kernels over an f16 KV cache
// (genericKernels' entries): a multiply and an add per element, where the
// assembly fuses them.

// axpyF16Generic adds w·v[j] to o[j], in order.
func axpyF16Generic(w float32, v []byte, o []float32) {
	v = v[:2*len(o)]
	for j := range o {
		o[j] += w * F16ToF32(uint16(v[2*j])|uint16(v[2*j+1])<<8)
	}
}

// axpysF16Generic adds the rows in order, each as axpyF16Generic does.
func axpysF16Generic(w []float32, v []byte, stride int, o []float32) {
	for i, wi := range w {
		axpyF16Generic(wi, v[i*stride:i*stride+2*len(o)], o)
	}
}
