//go:build !noasm

package cpu

import "unsafe"

// The int8-activation kernels of int8_amd64.s (AVX512BW + AVX512-VNNI). Each
// walks `rows` consecutive affine rows (codes, float32 scales and biases
// contiguous) against x quantized by quantizeX and store one result per row.

//go:noescape
func q4RowsVNNI(packed *byte, xq, sx, scales, biases, gsum, y unsafe.Pointer, rows, groups, reps int)

//go:noescape
func q4PairsVNNI(packed *byte, xq, sx, scales, biases, gsum, y unsafe.Pointer, rows, groups, reps int)

//go:noescape
func q2RowsVNNI(packed *byte, xq, sx, scales, biases, gsum, y unsafe.Pointer, rows, groups, reps int)

//go:noescape
func q3RowsVNNI(packed *byte, xq, sx, scales, biases, gsum, y unsafe.Pointer, rows, groups, reps int)

//go:noescape
func q8RowsVNNI(packed *byte, xq, sx, scales, biases, gsum, y unsafe.Pointer, rows, groups, reps int)

// affineRowsInt8 computes y[r] for len(y) consecutive rows whose codes start
// at raw; the caller checks int8Wide(bits, gs) and lays x out as
// int8Layout says.
func affineRowsInt8(bits int, raw []byte, xq []int8, sx, scales, biases, gsum, y []float32, gs int) {
	var k i8Kernel
	switch bits {
	case 4:
		k = q4RowsVNNI
		if gs == 64 {
			k = q4PairsVNNI
		}
	case 2:
		k = q2RowsVNNI
	case 3:
		k = q3RowsVNNI
	case 8:
		k = q8RowsVNNI
	default:
		panic("cpu: no VNNI kernel for this bit width")
	}
	callI8(k, bits, raw, xq, sx, scales, biases, gsum, y, gs, gs/64)
}

// i8Kernel is the signature every int8 row kernel shares.
type i8Kernel func(packed *byte, xq, sx, scales, biases, gsum, y unsafe.Pointer, rows, groups, reps int)

// callI8 checks that the rows, x and scales are in range and runs k over
// len(y) rows.
func callI8(k i8Kernel, bits int, raw []byte, xq []int8, sx, scales, biases, gsum, y []float32, gs, reps int) {
	rows := len(y)
	g := len(sx)
	_ = raw[rows*g*gs*bits/8-1]
	_ = xq[g*gs-1]
	_ = gsum[g-1]
	_ = scales[rows*g-1]
	_ = biases[rows*g-1]
	k(&raw[0], unsafe.Pointer(&xq[0]), unsafe.Pointer(&sx[0]), unsafe.Pointer(&scales[0]), unsafe.Pointer(&biases[0]),
		unsafe.Pointer(&gsum[0]), unsafe.Pointer(&y[0]), rows, g, reps)
}

//go:noescape
func quantizeI8AVX512(x *float32, xq *int8, sx, gsum *float32, groups, gs16 int)

// quantizeWide is quantizeX with AVX-512 (the caller checks haveAVX512 and
// gs%16 == 0): the same codes and scales, the group sums added lane by lane.
func quantizeWide(xq []int8, sx, gsum, x []float32, gs int) {
	g := len(sx)
	if g == 0 {
		return
	}
	_ = x[g*gs-1]
	_ = xq[g*gs-1]
	_ = gsum[g-1]
	quantizeI8AVX512(&x[0], &xq[0], &sx[0], &gsum[0], g, gs/16)
}

//go:noescape
func q4PairsVNNIBF16(packed *byte, xq, sx, scales, biases, gsum, y unsafe.Pointer, rows, groups, reps int)

// q4PairsBF16 is affineRowsInt8 for 4-bit rows of GroupSize 64 whose bf16
// scales and biases the kernel reads in place (x in int8PairLayout order).
func q4PairsBF16(raw []byte, xq []int8, sx []float32, scales, biases []uint16, gsum, y []float32) {
	callI8BF16(q4PairsVNNIBF16, 4, raw, xq, sx, scales, biases, gsum, y)
}

// callI8BF16 is callI8 for the kernels that read bf16 scales and biases in
// place (group size 64).
func callI8BF16(k i8Kernel, bits int, raw []byte, xq []int8, sx []float32, scales, biases []uint16, gsum, y []float32) {
	rows, g := len(y), len(sx)
	_ = raw[rows*g*8*bits-1]
	_ = xq[g*64-1]
	_ = gsum[g-1]
	_ = scales[rows*g-1]
	_ = biases[rows*g-1]
	k(&raw[0], unsafe.Pointer(&xq[0]), unsafe.Pointer(&sx[0]), unsafe.Pointer(&scales[0]), unsafe.Pointer(&biases[0]),
		unsafe.Pointer(&gsum[0]), unsafe.Pointer(&y[0]), rows, g, 1)
}

//go:noescape
func q4Pairs4VNNIBF16(packed *byte, x4, sx4, scales, biases, gsum, y unsafe.Pointer, rows, groups, gstride, ystride int)

// q4Pairs4BF16 is q4PairsBF16 against four tokens: x4 and sx4 as
// int8Block4 lays them out, token t's group sums at gsum[t·g:] and its
// results at y[t·ystride:][:rows].
func q4Pairs4BF16(raw []byte, x4 []int8, sx4 []float32, scales, biases []uint16, gsum, y []float32, rows, ystride int) {
	g := len(sx4) / 4
	_ = raw[rows*g*32-1]
	_ = x4[g*256-1]
	_ = gsum[4*g-1]
	_ = scales[rows*g-1]
	_ = biases[rows*g-1]
	_ = y[3*ystride+rows-1]
	q4Pairs4VNNIBF16(&raw[0], unsafe.Pointer(&x4[0]), unsafe.Pointer(&sx4[0]), unsafe.Pointer(&scales[0]), unsafe.Pointer(&biases[0]),
		unsafe.Pointer(&gsum[0]), unsafe.Pointer(&y[0]), rows, g, 4*g, 4*ystride)
}

//go:noescape
func q2QuadsVNNIBF16(packed *byte, xq, sx, scales, biases, gsum, y unsafe.Pointer, rows, groups, reps int)

// q2QuadsBF16 is affineRowsInt8 for 2-bit rows of GroupSize 64 whose bf16
// scales and biases the kernel reads in place (x in int8QuadLayout order).
func q2QuadsBF16(raw []byte, xq []int8, sx []float32, scales, biases []uint16, gsum, y []float32) {
	callI8BF16(q2QuadsVNNIBF16, 2, raw, xq, sx, scales, biases, gsum, y)
}

//go:noescape
func q4RowsI8AVX2(packed *byte, xq, sx, scales, biases, gsum, y unsafe.Pointer, rows, groups, reps int)

//go:noescape
func q8RowsI8AVX2(packed *byte, xq, sx, scales, biases, gsum, y unsafe.Pointer, rows, groups, reps int)

// affineRowsInt8AVX2 is affineRowsInt8 on the AVX2 kernels (int8avx2_amd64.s):
// 4- and 8-bit codes, GroupSize a multiple of 32, x in element order.
func affineRowsInt8AVX2(bits int, raw []byte, xq []int8, sx, scales, biases, gsum, y []float32, gs int) {
	switch bits {
	case 4:
		callI8(q4RowsI8AVX2, bits, raw, xq, sx, scales, biases, gsum, y, gs, gs/32)
	case 8:
		callI8(q8RowsI8AVX2, bits, raw, xq, sx, scales, biases, gsum, y, gs, gs/16)
	default:
		panic("cpu: no AVX2 int8 kernel for this bit width")
	}
}
