//go:build !noasm

package cpu

import "unsafe"

// dotRows4AVX2 computes four dot products of q (n floats, n a multiple of 16)
// with the rows k, k+kstride, k+2·kstride, k+3·kstride (kstride in bytes).
//
//go:noescape
func dotRows4AVX2(q, k *float32, kstride int, out unsafe.Pointer, n int)

// weightedSum64AVX2 adds Σₛ p[s]·v[s·vstride : +64] (vstride in bytes, n rows)
// to the 64 floats at o, accumulating in registers in row order.
//
//go:noescape
func weightedSum64AVX2(o, p, v *float32, vstride int, n int)

func dotRows4SIMD(q, k []float32, stride int, out *[4]float32) {
	n := len(q) &^ 15
	if n > 0 {
		dotRows4AVX2(&q[0], &k[0], 4*stride, unsafe.Pointer(out), n)
	} else {
		*out = [4]float32{}
	}
	dotRows4Tail(q, k, stride, n, out)
}

func weightedRowSumSIMD(o, p, v []float32, stride int) {
	c := 0
	for ; c+64 <= len(o); c += 64 {
		weightedSum64AVX2(&o[c], &p[0], &v[c], 4*stride, len(p))
	}
	if c < len(o) {
		rest := o[c:]
		for s, w := range p {
			axpySIMD(rest, w, v[s*stride+c:s*stride+len(o)])
		}
	}
}

// expSumAVX2 replaces x[i] (n floats, n a multiple of 8) by exp(x[i] − mx),
// the float32 exp of exp32, and returns their sum in float64.
//
//go:noescape
func expSumAVX2(x *float32, n int, consts unsafe.Pointer, mx float32) float64

func expSumSIMD(x []float32, mx float32) float64 {
	return expSumAVX2(&x[0], len(x), unsafe.Pointer(&expConsts), mx)
}
