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

// DotHeads4 sets out[4h+j] = q[h·qstride : h·qstride+D] · k[j·kstride :
// j·kstride+D] for h, j = 0…3: four query heads against four keys. A GQA
// group's query heads share their keys, and scoring four heads at once loads
// each key once for the four (DotRows4 loads it once per head).
func DotHeads4(q []float32, qstride int, k []float32, kstride, D int, out *[16]float32) {
	if D == 0 {
		*out = [16]float32{}
		return
	}
	_ = q[3*qstride+D-1]
	_ = k[3*kstride+D-1]
	dotHeads4SIMD(q, qstride, k, kstride, D, out)
}

// dotHeads4Go is DotHeads4 as four DotRows4.
func dotHeads4Go(q []float32, qstride int, k []float32, kstride, D int, out *[16]float32) {
	var four [4]float32
	for h := 0; h < 4; h++ {
		DotRows4(q[h*qstride:h*qstride+D], k, kstride, &four)
		copy(out[4*h:4*h+4], four[:])
	}
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

// WeightedRowSumHeads4 is WeightedRowSum for four heads that share their
// value rows: for h = 0…3 it adds Σₛ p[h·pstride+s]·v[s·stride : s·stride+D]
// to o[h·ostride : h·ostride+D], s = 0…n−1 in order. Each value row is
// loaded once for the four; every head's sum is WeightedRowSum's, bit for
// bit.
func WeightedRowSumHeads4(o []float32, ostride int, p []float32, pstride, n int, v []float32, stride, D int) {
	if n == 0 || D == 0 {
		return
	}
	_ = o[3*ostride+D-1]
	_ = p[3*pstride+n-1]
	_ = v[(n-1)*stride+D-1]
	weightedRowSumHeads4SIMD(o, ostride, p, pstride, n, v, stride, D)
}

// weightedRowSumHeads4Go is WeightedRowSumHeads4 as four WeightedRowSum.
func weightedRowSumHeads4Go(o []float32, ostride int, p []float32, pstride, n int, v []float32, stride, D int) {
	for h := 0; h < 4; h++ {
		WeightedRowSum(o[h*ostride:h*ostride+D], p[h*pstride:h*pstride+n], v, stride)
	}
}

func weightedRowSumGo(o, p, v []float32, stride int) {
	for s, w := range p {
		axpyGo(o, w, v[s*stride:s*stride+len(o)])
	}
}
