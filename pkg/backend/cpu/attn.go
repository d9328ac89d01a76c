package cpu

// Kernels for blocked attention: a block of query rows scored against a block
// of keys, and the probability-weighted sum of value rows. Both read their
// key/value rows with a stride so that one head of a [positions × heads·dim]
// cache is used in place.

// DotRows4 sets out[j] = q · k[j·stride : j·stride+len(q)] for j = 0…3: one
// query against four keys, so q is loaded once per four dot products.
func DotRows4(q, k []float32, stride int, out *[4]float32) {
	if len(q) == 0 {
		*out = [4]float32{}
		return
	}
	_ = k[3*stride+len(q)-1]
	if haveAVX2 {
		dotRows4SIMD(q, k, stride, out)
		return
	}
	if haveNEON {
		dotRows4Arch(q, k, stride, out)
		return
	}
	dotRows4Go(q, k, stride, out)
}

// dotRows4Tail adds the products of elements from on to out: the tail of
// the assembly DotRows4 kernels, which take whole blocks.
func dotRows4Tail(q, k []float32, stride, from int, out *[4]float32) {
	for i := from; i < len(q); i++ {
		out[0] += q[i] * k[i]
		out[1] += q[i] * k[stride+i]
		out[2] += q[i] * k[2*stride+i]
		out[3] += q[i] * k[3*stride+i]
	}
}

func dotRows4Go(q, k []float32, stride int, out *[4]float32) {
	for j := range out {
		out[j] = dotF32(q, k[j*stride:j*stride+len(q)])
	}
}

// WeightedRowSum adds Σₛ p[s]·v[s·stride : s·stride+len(o)] to o, s in
// increasing order, one multiply-add per element and step: the same sum, in the
// same order, as calling Axpy(o, p[s], row s) for each s, but with o kept in
// registers across the rows.
func WeightedRowSum(o, p, v []float32, stride int) {
	if len(p) == 0 || len(o) == 0 {
		return
	}
	_ = v[(len(p)-1)*stride+len(o)-1]
	if haveAVX2 {
		weightedRowSumSIMD(o, p, v, stride)
		return
	}
	if haveNEON {
		weightedRowSumArch(o, p, v, stride)
		return
	}
	weightedRowSumGo(o, p, v, stride)
}

func weightedRowSumGo(o, p, v []float32, stride int) {
	for s, w := range p {
		axpyGo(o, w, v[s*stride:s*stride+len(o)])
	}
}
