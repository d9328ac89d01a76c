//go:build !noasm

package cpu

import "golang.org/x/sys/cpu"

// haveNEON selects the arm64 NEON kernels (ASIMD is mandatory on arm64). They
// plug in below the SIMD levels: the product's dispatch stays at the generic
// level, affineRowDot hands whole 2/4/8-bit rows to NEON (neonAffine), and
// floatRows hands bf16 rows to bf16DotArch and bf16Row4Arch.
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
func bf16Row4NEON(w *uint16, x *float32, stride int, out *[4]float32, blocks int)

//go:noescape
func q4RowSDOT(packed *byte, xq *int8, sx, scales *float32, out *[4]float32, groups, steps int)

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
// width and group size.
func int8NEON(bits, gs int) bool {
	if !haveSDOT {
		return false
	}
	switch bits {
	case 4:
		return gs%32 == 0
	case 2:
		return gs%64 == 0
	}
	return false
}

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
	case 2:
		q2RowSDOT(&raw[0], &xq[0], &sx[0], &scales[0], &out, g, gs/64)
	default:
		panic("cpu: no SDOT kernel for this bit width")
	}
	return (out[0] + out[1]) + (out[2] + out[3]) + dotF32(biases[:g], gsum)
}
