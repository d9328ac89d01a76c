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

// dotHeads4AVX512 computes DotHeads4 for n a multiple of 16 (strides in
// bytes).
//
//go:noescape
func dotHeads4AVX512(q *float32, qstride int, k *float32, kstride int, out unsafe.Pointer, n int)

func dotHeads4SIMD(q []float32, qstride int, k []float32, kstride, D int, out *[16]float32) {
	if !haveAVX512 || D%16 != 0 {
		dotHeads4Go(q, qstride, k, kstride, D, out)
		return
	}
	dotHeads4AVX512(&q[0], 4*qstride, &k[0], 4*kstride, unsafe.Pointer(out), D)
}

// weightedSumHeads4x64AVX512 adds, for h = 0…3, Σₛ p_h[s]·v[s·vstride : +64]
// to the 64 floats at o_h (o_h = o + h·ostride, p_h = p + h·pstride; strides
// in bytes; n ≥ 1 rows), in row order.
//
//go:noescape
func weightedSumHeads4x64AVX512(o *float32, ostride int, p *float32, pstride int, v *float32, vstride int, n int)

func weightedRowSumHeads4SIMD(o []float32, ostride int, p []float32, pstride, n int, v []float32, stride, D int) {
	if !haveAVX512 || D%64 != 0 {
		weightedRowSumHeads4Go(o, ostride, p, pstride, n, v, stride, D)
		return
	}
	for c := 0; c < D; c += 64 {
		weightedSumHeads4x64AVX512(&o[c], 4*ostride, &p[0], 4*pstride, &v[c], 4*stride, n)
	}
}

// swiGLUAVX2 is swiGLU32's loop for n a multiple of 8 (consts: expConsts).
//
//go:noescape
func swiGLUAVX2(gate, up *float32, n int, consts unsafe.Pointer, hi float32)

func swiGLU32SIMD(gate, up []float32) {
	n := 0
	if haveAVX2 {
		n = len(gate) &^ 7
		if n > 0 {
			swiGLUAVX2(&gate[0], &up[0], n, unsafe.Pointer(&expConsts), swiGLUExpMax)
		}
	}
	swiGLU32Go(gate[n:], up[n:])
}

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

// expSumAVX512 is expSumAVX2 sixteen lanes at a time for any n ≥ 1 (the
// last n mod 16 under a mask), bit for bit for n a multiple of 8.
//
//go:noescape
func expSumAVX512(x *float32, n int, consts unsafe.Pointer, mx float32) float64

// expSum512 lets SoftmaxF32 take the AVX-512 kernel (false for A/B
// measurements and the bit-for-bit test).
var expSum512 = true

// expSumAll replaces every x[i] by exp(x[i] − mx) and returns their sum in
// float64 with the AVX-512 kernel, the tail included; ok is false without
// it (SoftmaxF32 then takes multiples of 8 to expSumSIMD and the rest to
// exp32 one by one).
func expSumAll(x []float32, mx float32) (sum float64, ok bool) {
	if !haveAVX512 || !expSum512 || len(x) == 0 {
		return 0, false
	}
	return expSumAVX512(&x[0], len(x), unsafe.Pointer(&expConsts), mx), true
}

func expSumSIMD(x []float32, mx float32) float64 {
	return expSumAVX2(&x[0], len(x), unsafe.Pointer(&expConsts), mx)
}

// maxAVX2 returns the largest of x[0..n), n a positive multiple of 32.
//
//go:noescape
func maxAVX2(x *float32, n int) float32

// scaleAVX2 multiplies x[0..n) by s, n a multiple of 16.
//
//go:noescape
func scaleAVX2(x *float32, n int, s float32)

func maxF32SIMD(x []float32) float32 {
	n := len(x) &^ 31
	if !haveAVX2 || n == 0 {
		return maxF32Go(x)
	}
	mx := maxAVX2(&x[0], n)
	if n < len(x) {
		mx = max(mx, maxF32Go(x[n:]))
	}
	return mx
}

func scaleF32SIMD(x []float32, s float32) {
	n := len(x) &^ 15
	if !haveAVX2 || n == 0 {
		scaleF32Go(x, s)
		return
	}
	scaleAVX2(&x[0], n, s)
	scaleF32Go(x[n:], s)
}
