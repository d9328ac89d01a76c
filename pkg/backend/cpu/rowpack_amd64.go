//go:build !noasm

package cpu

import "fmt"

//go:noescape
func rowPack1VNNI(packed *byte, xq *int8, sx, gsum, y *float32, blocks, groups, quads int)

//go:noescape
func rowPack1VNNI8(packed *byte, xq *int8, sx, gsum, y *float32, blocks, groups, quads int)

//go:noescape
func rowPack8VNNI8(packed *byte, x8 *int8, sx8, gs8, y *float32, blocks, groups, steps, ystride int)

//go:noescape
func rowPack1VNNI2(packed *byte, xq *int8, sx, gsum, y *float32, blocks, groups, quads int)

//go:noescape
func rowPack8VNNI2(packed *byte, x8 *int8, sx8, gs8, y *float32, blocks, groups, steps, ystride int)

//go:noescape
func rowPack1VNNI3(packed *byte, xq *int8, sx, gsum, y *float32, blocks, groups, quads int)

//go:noescape
func rowPack8VNNI3(packed *byte, x8 *int8, sx8, gs8, y *float32, blocks, groups, steps, ystride int)

//go:noescape
func rowPack8VNNI(packed *byte, x8 *int8, sx8, gs8, y *float32, blocks, groups, steps, ystride int)

// rowPack1 runs rowPack1VNNI, or rowPack1VNNI8 / 2 / 3 for 8-, 2- and 3-bit
// codes (the caller checks haveVNNI), over the len(y)/16 blocks of pk against one token's x in
// natural order.
func rowPack1(pk []byte, xq []int8, sx, gsum, y []float32, gs, bits int) {
	blocks, g := len(y)/rowPackRows, len(sx)
	if blocks == 0 {
		return
	}
	_ = pk[blocks*g*rowPackRecord(gs, bits)-1]
	_ = xq[g*gs-1]
	_ = gsum[g-1]
	kernel := rowPack1VNNI
	switch bits {
	case 8:
		kernel = rowPack1VNNI8
	case 2:
		kernel = rowPack1VNNI2
	case 3:
		kernel = rowPack1VNNI3
	}
	kernel(&pk[0], &xq[0], &sx[0], &gsum[0], &y[0], blocks, g, gs/32)
}

// rowPack8 runs rowPack8VNNI, or rowPack8VNNI8 / 2 / 3 for 8-, 2- and 3-bit
// codes (the caller checks haveVNNI), over blocks blocks of pk against eight tokens laid out by
// rowPackX8; token t's results go to y[t·ystride:], 16 per block.
func rowPack8(pk []byte, x8 []int8, sx8, gs8, y []float32, blocks, gs, bits, ystride int) {
	g := len(sx8) / rowPackTokens
	if blocks == 0 {
		return
	}
	_ = pk[blocks*g*rowPackRecord(gs, bits)-1]
	_ = x8[g*gs*rowPackTokens-1]
	_ = gs8[g*rowPackTokens-1]
	_ = y[(rowPackTokens-1)*ystride+blocks*rowPackRows-1]
	kernel, steps := rowPack8VNNI, gs/8
	switch bits {
	case 8:
		kernel = rowPack8VNNI8
	case 2:
		kernel, steps = rowPack8VNNI2, gs/16
	case 3:
		kernel, steps = rowPack8VNNI3, gs/32
	}
	kernel(&pk[0], &x8[0], &sx8[0], &gs8[0], &y[0], blocks, g, steps, 4*ystride)
}

//go:noescape
func rowPack4VNNI(packed *byte, x8 *int8, sx8, gs8, y *float32, blocks, groups, steps, ystride int)

//go:noescape
func rowPack4VNNI8(packed *byte, x8 *int8, sx8, gs8, y *float32, blocks, groups, steps, ystride int)

//go:noescape
func rowPack4VNNI2(packed *byte, x8 *int8, sx8, gs8, y *float32, blocks, groups, steps, ystride int)

//go:noescape
func rowPack4VNNI3(packed *byte, x8 *int8, sx8, gs8, y *float32, blocks, groups, steps, ystride int)

// rowPack4Fits reports whether rowPack4 takes codes of this width: every
// width the row-interleaved layout has.
func rowPack4Fits(bits int) bool { return bits == 2 || bits == 3 || bits == 4 || bits == 8 }

// rowPack4 runs rowPack4VNNI (or its 8-, 2- and 3-bit variants): rowPack8
// for the four tokens rowPackXN laid out.
func rowPack4(pk []byte, x4 []int8, sx4, gs4, y []float32, blocks, gs, bits, ystride int) {
	g := len(sx4) / rowPackTail
	if blocks == 0 {
		return
	}
	if !rowPack4Fits(bits) {
		panic(fmt.Sprintf("cpu: rowPack4 with %d-bit codes", bits))
	}
	_ = pk[blocks*g*rowPackRecord(gs, bits)-1]
	_ = x4[g*gs*rowPackTail-1]
	_ = gs4[g*rowPackTail-1]
	_ = y[(rowPackTail-1)*ystride+blocks*rowPackRows-1]
	kernel, steps := rowPack4VNNI, gs/8
	switch bits {
	case 8:
		kernel = rowPack4VNNI8
	case 2:
		kernel, steps = rowPack4VNNI2, gs/16
	case 3:
		kernel, steps = rowPack4VNNI3, gs/32
	}
	kernel(&pk[0], &x4[0], &sx4[0], &gs4[0], &y[0], blocks, g, steps, 4*ystride)
}

// q4RowsNatural is q4RowsVNNI (4-bit rows, x in natural order, float32
// scales and biases, GroupSize a multiple of 64) for the rows a rowPack
// leaves out.
func q4RowsNatural(raw []byte, xq []int8, sx, scales, biases, gsum, y []float32, gs int) {
	callI8(q4RowsVNNI, 4, raw, xq, sx, scales, biases, gsum, y, gs, gs/64)
}

//go:noescape
func packBlocksAVX512(out, codes *byte, sc, bi *uint16, rb, groups, steps, blocks int)

// packBlocks writes blocks [lo, hi) of m's row-interleaved copy into out:
// packBlocksAVX512 with AVX-512 and at least two groups per row (its scale
// gathers read a dword that must stay inside the row) for 4-bit codes, else
// packBlocksGo (8-bit codes are a plain copy of dwords).
func packBlocks(out []byte, m *Matrix, lo, hi int) {
	g := m.Groups()
	if !haveAVX512 || g < 2 || hi <= lo || m.Bits != 4 {
		packBlocksGo(out, m, lo, hi)
		return
	}
	rb, rec := m.RowBytes(), rowPackRecord(m.GroupSize, 4)
	sc, bi := u16s(m.Scales), u16s(m.Biases)
	first, last := lo*rowPackRows, hi*rowPackRows-1
	_ = out[hi*g*rec-1]
	_ = m.Data[(last+1)*rb-1]
	_ = sc[(last+1)*g-1]
	_ = bi[(last+1)*g-1]
	packBlocksAVX512(&out[lo*g*rec], &m.Data[first*rb], &sc[first*g], &bi[first*g], rb, g, m.GroupSize/8, hi-lo)
}
