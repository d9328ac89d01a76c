//go:build !noasm

package cpu

// haveNEON selects the arm64 NEON kernels (ASIMD is mandatory on arm64). They
// plug in below the SIMD levels: the product's dispatch stays at the generic
// level, and affineRowDot hands whole 4-bit rows to NEON.
const haveNEON = true

//go:noescape
func q4RowNEON(packed *byte, x, scales *float32, out *[4]float32, groups, steps int)

// q4RowArch is one 4-bit affine row dotted with x (natural order), given the
// group sums of x: Σ_g s_g·Σq·x + b_g·Σx. gs is a multiple of 32.
func q4RowArch(raw []byte, x, scales, biases, gsum []float32, gs int) float32 {
	g := len(scales)
	_ = raw[g*gs/2-1]
	_ = x[g*gs-1]
	var out [4]float32
	q4RowNEON(&raw[0], &x[0], &scales[0], &out, g, gs/32)
	return (out[0] + out[1]) + (out[2] + out[3]) + dotF32(biases[:g], gsum)
}
