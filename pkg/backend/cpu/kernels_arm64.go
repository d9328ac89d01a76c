//go:build !noasm

package cpu

import "golang.org/x/sys/cpu"

// haveNEON selects the arm64 NEON kernels (ASIMD is mandatory on arm64). They
// plug in below the SIMD levels: the product's dispatch stays at the generic
// level, affineRowDot hands whole 2/4/8-bit rows to NEON (neonAffine), and
// floatRows hands f32 and bf16 rows to f32DotArch, bf16DotArch and
// bf16Row4Arch; Dot, DotRows4, WeightedRowSum and Axpy have NEON forms too.
const haveNEON = true

// haveSDOT gates the int8-activation kernels (`--matmul int8`), which need the
// ARMv8.2 dot product (every Apple Silicon CPU has it; x/sys/cpu asks the OS).
var haveSDOT = cpu.ARM64.HasASIMDDP

//go:noescape
func q4RowNEON(packed *byte, x, scales *float32, out *[4]float32, groups, steps int)

//go:noescape
func q8RowNEON(packed *byte, x, scales *float32, out *[4]float32, groups, steps int)

//go:noescape
func q2RowNEON(packed *byte, x, scales *float32, out *[4]float32, groups, steps int)

//go:noescape
func bf16DotNEON(w *uint16, x *float32, out *[4]float32, blocks int)

//go:noescape
func f32DotNEON(a, b *float32, out *[4]float32, blocks int)

//go:noescape
func dotRows4NEON(q, k *float32, kstride int, out *[4]float32, blocks int)

//go:noescape
func weightedSum16NEON(o, p, v *float32, vstride, n int)

//go:noescape
func axpyNEON(y, x *float32, a float32, blocks int)

//go:noescape
func bf16Row4NEON(w *uint16, x *float32, stride int, out *[4]float32, blocks int)

//go:noescape
func q4RowSDOT(packed *byte, xq *int8, sx, scales *float32, out *[4]float32, groups, steps int)

//go:noescape
func q8RowSDOT(packed *byte, xq *int8, sx, scales *float32, out *[4]float32, groups, steps int)

//go:noescape
func q4Row4NEON(packed *byte, x *float32, stride int, scales *float32, out *[4]float32, groups, steps int)

//go:noescape
func q8Row4NEON(packed *byte, x *float32, stride int, scales *float32, out *[4]float32, groups, steps int)

//go:noescape
func q2RowSDOT(packed *byte, xq *int8, sx, scales *float32, out *[4]float32, groups, steps int)

// neonAffine reports whether a NEON row kernel handles affine rows of this
// bit width and group size (a group must fill whole 16-byte code vectors).
func neonAffine(bits, gs int) bool {
	switch bits {
	case 4:
		return gs%32 == 0
	case 8:
		return gs%16 == 0
	case 2:
		return gs%64 == 0
	}
	return false
}

// affineRowArch is one affine row (neonAffine holds) dotted with x (natural
// order), given the group sums of x: Σ_g s_g·Σq·x + b_g·Σx.
func affineRowArch(bits int, raw []byte, x, scales, biases, gsum []float32, gs int) float32 {
	g := len(scales)
	if g == 0 {
		return 0
	}
	_ = raw[g*gs*bits/8-1]
	_ = x[g*gs-1]
	var out [4]float32
	switch bits {
	case 4:
		q4RowNEON(&raw[0], &x[0], &scales[0], &out, g, gs/32)
	case 8:
		q8RowNEON(&raw[0], &x[0], &scales[0], &out, g, gs/16)
	case 2:
		q2RowNEON(&raw[0], &x[0], &scales[0], &out, g, gs/64)
	default:
		panic("cpu: no NEON kernel for this bit width")
	}
	return (out[0] + out[1]) + (out[2] + out[3]) + dotF32(biases[:g], gsum)
}

// neonAffine4 reports whether a 4-token NEON kernel handles affine rows of
// this bit width and group size.
func neonAffine4(bits, gs int) bool {
	switch bits {
	case 4:
		return gs%32 == 0
	case 8:
		return gs%16 == 0
	}
	return false
}

// affineRow4Arch is affineRowArch for four tokens (neonAffine4 holds): token
// t's x at x[t·stride:], gsum4 its group sums interleaved [group][token];
// out[t] = Σ_g s_g·Σq·x_t + b_g·Σx_t.
func affineRow4Arch(bits int, raw []byte, x []float32, stride int, scales, biases, gsum4 []float32, gs int, out *[4]float32) {
	g := len(scales)
	*out = [4]float32{}
	if g == 0 {
		return
	}
	_ = raw[g*gs*bits/8-1]
	_ = x[3*stride+g*gs-1]
	_ = gsum4[4*g-1]
	switch bits {
	case 4:
		q4Row4NEON(&raw[0], &x[0], stride, &scales[0], out, g, gs/32)
	case 8:
		q8Row4NEON(&raw[0], &x[0], stride, &scales[0], out, g, gs/16)
	default:
		panic("cpu: no 4-token NEON kernel for this bit width")
	}
	var b [4]float32
	for j, bj := range biases[:g] {
		gj := (*[4]float32)(gsum4[4*j:])
		b[0] += bj * gj[0]
		b[1] += bj * gj[1]
		b[2] += bj * gj[2]
		b[3] += bj * gj[3]
	}
	for t := range out {
		out[t] += b[t]
	}
}

// bf16DotArch is dotBF16 on NEON: whole blocks of 16 weights in assembly,
// the tail in Go.
func bf16DotArch(w []uint16, x []float32) float32 {
	x = x[:len(w)]
	n := len(w) &^ 15
	var s float32
	if n > 0 {
		var out [4]float32
		bf16DotNEON(&w[0], &x[0], &out, n/16)
		s = (out[0] + out[1]) + (out[2] + out[3])
	}
	return s + dotBF16(w[n:], x[n:])
}

// f32DotArch is dotF32 on NEON: whole blocks of 16 in assembly, the tail in
// Go.
func f32DotArch(a, b []float32) float32 {
	b = b[:len(a)]
	n := len(a) &^ 15
	var s float32
	if n > 0 {
		var out [4]float32
		f32DotNEON(&a[0], &b[0], &out, n/16)
		s = (out[0] + out[1]) + (out[2] + out[3])
	}
	return s + dotF32(a[n:], b[n:])
}

// bf16Row4Arch sets out[t] = Σ bf16(w[i])·x[t·stride+i] for four tokens: the
// weights are widened once for all four; blocks of 8 in assembly, the tail
// in Go.
func bf16Row4Arch(w []uint16, x []float32, stride int, out *[4]float32) {
	*out = [4]float32{}
	n := len(w) &^ 7
	if n > 0 {
		_ = x[3*stride+len(w)-1]
		bf16Row4NEON(&w[0], &x[0], stride, out, n/8)
	}
	for t := range out {
		out[t] += dotBF16(w[n:], x[t*stride+n:t*stride+len(w)])
	}
}

// int8NEON reports whether an SDOT kernel handles int8-mode rows of this bit
// width and group size: the same shapes as the float kernels.
func int8NEON(bits, gs int) bool { return haveSDOT && neonAffine(bits, gs) }

// affineRowInt8Arch is affineRowInt8 (int8NEON holds) on the SDOT kernels.
func affineRowInt8Arch(bits, gs int, raw []byte, xq []int8, sx, scales, biases, gsum []float32) float32 {
	g := len(scales)
	if g == 0 {
		return 0
	}
	_ = raw[g*gs*bits/8-1]
	_ = xq[g*gs-1]
	_ = sx[g-1]
	var out [4]float32
	switch bits {
	case 4:
		q4RowSDOT(&raw[0], &xq[0], &sx[0], &scales[0], &out, g, gs/32)
	case 8:
		q8RowSDOT(&raw[0], &xq[0], &sx[0], &scales[0], &out, g, gs/16)
	case 2:
		q2RowSDOT(&raw[0], &xq[0], &sx[0], &scales[0], &out, g, gs/64)
	default:
		panic("cpu: no SDOT kernel for this bit width")
	}
	return (out[0] + out[1]) + (out[2] + out[3]) + dotF32(biases[:g], gsum)
}

// dotRows4Arch is DotRows4 on NEON (len(q) > 0, k long enough): blocks of 8
// in assembly, the tail in Go.
func dotRows4Arch(q, k []float32, stride int, out *[4]float32) {
	n := len(q) &^ 7
	*out = [4]float32{}
	if n > 0 {
		dotRows4NEON(&q[0], &k[0], 4*stride, out, n/8)
	}
	dotRows4Tail(q, k, stride, n, out)
}

// weightedRowSumArch is WeightedRowSum on NEON (p and o not empty, v long
// enough): 16 columns of o at a time in registers, the rest through axpyGo.
func weightedRowSumArch(o, p, v []float32, stride int) {
	c := 0
	for ; c+16 <= len(o); c += 16 {
		weightedSum16NEON(&o[c], &p[0], &v[c], 4*stride, len(p))
	}
	if c < len(o) {
		for s, w := range p {
			axpyGo(o[c:], w, v[s*stride+c:s*stride+len(o)])
		}
	}
}

// axpyArch is Axpy on NEON: blocks of 16 in assembly, the tail in Go.
func axpyArch(y []float32, a float32, x []float32) {
	y = y[:len(x)]
	n := len(x) &^ 15
	if n > 0 {
		axpyNEON(&y[0], &x[0], a, n/16)
	}
	axpyGo(y[n:], a, x[n:])
}
