//go:build !noasm

package cpu

import "unsafe"

// The AVX-512 kernels of kernels512_amd64.s. Affine ones take float32 scales
// and biases and walk `rows` consecutive rows, storing one result per row.

//go:noescape
func q4RowsAVX512(packed *byte, x, scales, biases, y unsafe.Pointer, rows, groups, reps int)

//go:noescape
func q2RowsAVX512(packed *byte, x, scales, biases, y unsafe.Pointer, rows, groups, reps int)

//go:noescape
func q8RowsAVX512(packed *byte, x, scales, biases, y unsafe.Pointer, rows, groups, reps int)

//go:noescape
func q3RowsAVX512(packed *byte, x, scales, biases, y unsafe.Pointer, rows, groups, reps int)

//go:noescape
func dotF32AVX512(a, b *float32, n int) float32

//go:noescape
func dotBF16AVX512(w *uint16, x *float32, n int) float32

//go:noescape
func q4Row4AVX512(packed *byte, xp unsafe.Pointer, xstride int, scales, biases, out unsafe.Pointer, groups, reps int, acc unsafe.Pointer, flags int)

//go:noescape
func q4Row8AVX512(packed *byte, xp unsafe.Pointer, xstride int, scales, biases, out unsafe.Pointer, groups, reps int)

//go:noescape
func q8Row4AVX512(packed *byte, xp unsafe.Pointer, xstride int, scales, biases, out unsafe.Pointer, groups, reps int, acc unsafe.Pointer, flags int)

//go:noescape
func q2Row4AVX512(packed *byte, xp unsafe.Pointer, xstride int, scales, biases, out unsafe.Pointer, groups, reps int, acc unsafe.Pointer, flags int)

//go:noescape
func q3Row4AVX512(packed *byte, xp unsafe.Pointer, xstride int, scales, biases, out unsafe.Pointer, groups, reps int, acc unsafe.Pointer, flags int)

//go:noescape
func bf16Row4AVX512(w *uint16, xp unsafe.Pointer, xstride int, out unsafe.Pointer, n int, acc unsafe.Pointer, flags int)

// affineRowsWide computes y[r] = row r · x for len(y) consecutive rows whose
// codes start at raw and whose float32 scales and biases are given (groups per
// row each). x is permuted by permuteX(…, bits, 16). The caller checks
// wideAffine(bits, gs) and, for 3 bits, that 8 bytes past the last row's codes
// are readable.
func affineRowsWide(bits int, raw []byte, x, scales, biases, y []float32, gs int) {
	rows := len(y)
	g := len(scales) / rows
	_ = raw[rows*g*gs*bits/8-1]
	_ = x[g*gs-1]
	_ = biases[rows*g-1]
	xp, sp, bp, yp := unsafe.Pointer(&x[0]), unsafe.Pointer(&scales[0]), unsafe.Pointer(&biases[0]), unsafe.Pointer(&y[0])
	switch bits {
	case 4:
		q4RowsAVX512(&raw[0], xp, sp, bp, yp, rows, g, gs/64)
	case 2:
		q2RowsAVX512(&raw[0], xp, sp, bp, yp, rows, g, gs/64)
	case 8:
		q8RowsAVX512(&raw[0], xp, sp, bp, yp, rows, g, gs/64)
	case 3:
		q3RowsAVX512(&raw[0], xp, sp, bp, yp, rows, g, gs/64)
	default:
		panic("cpu: no AVX-512 kernel for this bit width")
	}
}

// affineRow4Wide is one row against four tokens (x rows stride floats apart,
// permuted as for affineRowsWide); ok is false where no such kernel exists.
// For 3 bits, 8 bytes past the row's codes must be readable.
func affineRow4Wide(bits int, row []byte, x []float32, stride int, scales, biases []float32, gs int, out *[4]float32) bool {
	g := len(scales)
	_ = x[3*stride+g*gs-1]
	_ = biases[g-1]
	_ = row[g*gs*bits/8-1]
	xp, sp, bp, op := unsafe.Pointer(&x[0]), unsafe.Pointer(&scales[0]), unsafe.Pointer(&biases[0]), unsafe.Pointer(out)
	switch bits {
	case 4:
		q4Row4AVX512(&row[0], xp, 4*stride, sp, bp, op, g, gs/64, nil, row4Whole)
	case 8:
		q8Row4AVX512(&row[0], xp, 4*stride, sp, bp, op, g, gs/32, nil, row4Whole)
	case 2:
		q2Row4AVX512(&row[0], xp, 4*stride, sp, bp, op, g, gs/64, nil, row4Whole)
	case 3:
		q3Row4AVX512(&row[0], xp, 4*stride, sp, bp, op, g, gs/64, nil, row4Whole)
	default:
		return false
	}
	return true
}

// The four-token kernels' flags: start from the accumulators at acc
// (else from zero), reduce into out at the end (else store them to acc).
const (
	row4Resume = 1
	row4Reduce = 2
	row4Whole  = row4Reduce // a whole row in one call
)

// row4PartFlags are part p of parts' flags: resume after the first part,
// reduce at the last.
func row4PartFlags(p, parts int) int {
	f := 0
	if p > 0 {
		f |= row4Resume
	}
	if p == parts-1 {
		f |= row4Reduce
	}
	return f
}

// row4PartCols is the widest part of a row the four-token kernels walk at
// once when a row is wider than row4WholeMaxCols (row4Split): the four
// tokens' x of a part, 16 bytes a column, must stay in L1 (48 KB here)
// while the rows' codes stream past. One core, 4-bit rows in L2: 2,048
// columns 81 G multiply-adds a second, 4,096 (64 KB of x) 47; in parts,
// BenchmarkRow4SplitAB: 4,096 columns 1.42–1.45× the whole rows, 3,072
// (48 KB, two parts of 1,536) 0.93× — so rows up to 3,072 stay whole
// (docs/PERF.md, round twelve).
const (
	row4PartCols     = 2048
	row4WholeMaxCols = 3072
)

// row4Split reports whether wideRows runs bits-bit rows of cols columns in
// parts (affineRows4Split) instead of whole (affineRow4Wide).
func row4Split(bits, cols int) bool {
	return cols > row4WholeMaxCols && row4Parts && haveAVX512 && (bits == 2 || bits == 3 || bits == 4 || bits == 8)
}

// affineRows4Split is affineRow4Wide for the len(out) ≤ row4SplitRows rows
// of bits-bit codes (rb bytes apart, their scales and biases g a row), bit
// for bit, walking the columns in parts of at most row4PartCols, whole
// groups each: every row's part, then the next part (the kernels keep row
// i's accumulators in acc[128i:] between parts). 3-bit rows read 8 bytes past
// each part, as affineRow4Wide past each row.
func affineRows4Split(bits int, codes []byte, rb int, x []float32, stride int, scales, biases []float32, gs int, acc []float32, out [][4]float32) {
	nr := len(out)
	g := len(scales) / nr
	_ = x[3*stride+g*gs-1]
	_ = biases[nr*g-1]
	_ = codes[(nr-1)*rb+g*gs*bits/8-1]
	_ = acc[nr*128-1]
	parts := (g*gs + row4PartCols - 1) / row4PartCols
	g0 := 0
	for p := range parts {
		g1 := g * (p + 1) / parts
		flags := row4PartFlags(p, parts)
		xp := unsafe.Pointer(&x[g0*gs])
		for i := range nr {
			c, sp, bp := &codes[i*rb+g0*gs*bits/8], unsafe.Pointer(&scales[i*g+g0]), unsafe.Pointer(&biases[i*g+g0])
			op, ap := unsafe.Pointer(&out[i]), unsafe.Pointer(&acc[i*128])
			// Direct calls, not a func value: through one, go:noescape
			// does not hold and acc would move to the heap on every call
			// (the parts then ran 0.6–0.9× the whole rows).
			switch bits {
			case 4:
				q4Row4AVX512(c, xp, 4*stride, sp, bp, op, g1-g0, gs/64, ap, flags)
			case 8:
				q8Row4AVX512(c, xp, 4*stride, sp, bp, op, g1-g0, gs/32, ap, flags)
			case 2:
				q2Row4AVX512(c, xp, 4*stride, sp, bp, op, g1-g0, gs/64, ap, flags)
			case 3:
				q3Row4AVX512(c, xp, 4*stride, sp, bp, op, g1-g0, gs/64, ap, flags)
			}
		}
		g0 = g1
	}
}

// bf16Split reports whether bf16Tiled runs BF16 rows of cols columns in
// parts (bf16Rows4Split): the same L1 limit as row4Split's.
func bf16Split(cols int) bool {
	return cols > row4WholeMaxCols && cols%32 == 0 && row4Parts && haveAVX512
}

// bf16Rows4Split is bf16Row4Wide for the len(out) ≤ row4SplitRows BF16 rows
// of w (cols each, a multiple of 32), bit for bit, in parts of at most
// row4PartCols columns, as affineRows4Split walks quantized rows.
func bf16Rows4Split(w []uint16, cols int, x []float32, stride int, acc []float32, out [][4]float32) {
	nr := len(out)
	_ = x[3*stride+cols-1]
	_ = w[nr*cols-1]
	_ = acc[nr*128-1]
	parts := (cols + row4PartCols - 1) / row4PartCols
	c0 := 0
	for p := range parts {
		c1 := cols / 32 * (p + 1) / parts * 32
		flags := row4PartFlags(p, parts)
		xp := unsafe.Pointer(&x[c0])
		for i := range nr {
			bf16Row4AVX512(&w[i*cols+c0], xp, 4*stride, unsafe.Pointer(&out[i]), c1-c0, unsafe.Pointer(&acc[i*128]), flags)
		}
		c0 = c1
	}
}

// row8MaxCols is the widest row the eight-token kernel takes: its eight
// tokens' x (32 bytes a column) must stay in L1 while a row's codes stream
// past. BenchmarkRow8AB, against the four-token kernel: 512 columns 1.18×,
// 768 1.14×, 1024 1.09×, 1536 1.01×, 2048 0.68× (64 KB of x).
const row8MaxCols = 1024

// row8Wide reports whether affineRow8Wide has a kernel for bits and rows of
// cols columns (4-bit only so far).
func row8Wide(bits, cols int) bool {
	return bits == 4 && cols <= row8MaxCols && row8Kernels && haveAVX512
}

// affineRow8Wide is affineRow4Wide for eight tokens, for matrices row8Wide
// admits: its results are the 4-token kernel's bit for bit, each weight
// decoded once for eight tokens instead of four.
func affineRow8Wide(row []byte, x []float32, stride int, scales, biases []float32, gs int, out *[8]float32) {
	g := len(scales)
	_ = x[7*stride+g*gs-1]
	_ = biases[g-1]
	_ = row[g*gs/2-1]
	q4Row8AVX512(&row[0], unsafe.Pointer(&x[0]), 4*stride, unsafe.Pointer(&scales[0]), unsafe.Pointer(&biases[0]), unsafe.Pointer(out), g, gs/64)
}

//go:noescape
func readSumAVX512(p *byte, n int) uint64

//go:noescape
func readSumAVX2(p *byte, n int) uint64

// readSumSIMD is readSumGo with the widest loads the CPU has.
func readSumSIMD(b []byte) uint64 {
	var s uint64
	switch {
	case haveAVX512:
		n := len(b) &^ 255
		if n > 0 {
			s = readSumAVX512(&b[0], n)
		}
		b = b[n:]
	case haveAVX2:
		n := len(b) &^ 127
		if n > 0 {
			s = readSumAVX2(&b[0], n)
		}
		b = b[n:]
	}
	return s + readSumGo(b)
}
