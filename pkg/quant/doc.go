// Package quant implements the number formats of prepared models: conversions
// between float32 and the 16-bit floats of checkpoints (bfloat16, IEEE half),
// and MLX-compatible affine group quantization with least-significant-bits-first
// packing into little-endian uint32 words.
//
// Affine group quantization stores a matrix W [rows, cols] as unsigned codes q of
// Bits bits plus, for every run of GroupSize consecutive elements of a row, one
// scale s and one bias b, so that W[o, c] ≈ s[o, c/GroupSize]·q[o, c] +
// b[o, c/GroupSize]. Quantize chooses s and b with the algorithm of
// mx.quantize (ml-explore/mlx, CPU backend rules: true group maximum,
// round-half-to-even), so 4- and 8-bit output has MLX's layout and, for the same
// float32 input, MLX's CPU results.
//
// Packing: element c of a row is bits [c·Bits, (c+1)·Bits) of the row's bit
// stream, counted from the least-significant bit of the first little-endian
// uint32 word. For 2, 4 and 8 bits no code straddles a word and this is exactly
// MLX's uint32 packing (4-bit: byte j holds element 2j in its low nibble). For 3
// bits codes straddle words; the stream is the same as MLX's 3-bit packing
// (8 codes per 3 little-endian bytes, LSB first), and a row needs cols·3/32
// words, so cols must be a multiple of 32.
//
// Another engineer's error-minimizing requantizer lives beside this code and uses
// the same Packed type, PackCodes/UnpackCodes and the float conversions.
package quant
