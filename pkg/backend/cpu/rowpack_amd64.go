//go:build !noasm

package cpu

import "fmt"

//go:noescape
func rowPack1VNNI(packed *byte, xq *int8, sx, gsum, y *float32, blocks, groups, quads int)

//go:noescape
func rowPack1VNNI8(packed *byte, xq *int8, sx, gsum, y *float32, blocks, groups, quads int)

//go:noescape
func rowPack8VNNI8(packed *byte, x8 *int8, sx8, gs8, y *float32, blocks, groups, steps, ystride, ahead int)

//go:noescape
func rowPack1VNNI2(packed *byte, xq *int8, sx, gsum, y *float32, blocks, groups, quads int)

//go:noescape
func rowPack8VNNI2(packed *byte, x8 *int8, sx8, gs8, y *float32, blocks, groups, steps, ystride, ahead int)

//go:noescape
func rowPack1VNNI3(packed *byte, xq *int8, sx, gsum, y *float32, blocks, groups, quads int)

//go:noescape
func rowPack8VNNI3(packed *byte, x8 *int8, sx8, gs8, y *float32, blocks, groups, steps, ystride, ahead int)

//go:noescape
func rowPack8VNNI(packed *byte, x8 *int8, sx8, gs8, y *float32, blocks, groups, steps, ystride, ahead int)

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
// codes (the caller checks haveVNNI), over blocks blocks of pk against eight
// tokens laid out by rowPackX8; token t's results go to y[t·ystride:], 16 per
// block. ahead > 0 prefetches the bytes that far past pk's into L2 on the
// way (the PF kernels; 0: none).
func rowPack8(pk []byte, x8 []int8, sx8, gs8, y []float32, blocks, gs, bits, ystride, ahead int) {
	rowPackMulti(rowPackTokens, pk, x8, sx8, gs8, y, blocks, gs, bits, ystride, ahead)
}

// rowPack4 is rowPack8 for the four tokens rowPackXN laid out
// (rowPack4VNNI and its 8-, 2- and 3-bit variants).
func rowPack4(pk []byte, x4 []int8, sx4, gs4, y []float32, blocks, gs, bits, ystride int) {
	rowPackMulti(rowPackTail, pk, x4, sx4, gs4, y, blocks, gs, bits, ystride, 0)
}

//go:noescape
func rowPack4VNNI(packed *byte, x8 *int8, sx8, gs8, y *float32, blocks, groups, steps, ystride, ahead int)

//go:noescape
func rowPack4VNNI8(packed *byte, x8 *int8, sx8, gs8, y *float32, blocks, groups, steps, ystride, ahead int)

//go:noescape
func rowPack4VNNI2(packed *byte, x8 *int8, sx8, gs8, y *float32, blocks, groups, steps, ystride, ahead int)

//go:noescape
func rowPack4VNNI3(packed *byte, x8 *int8, sx8, gs8, y *float32, blocks, groups, steps, ystride, ahead int)

// The PF variants of the eight-token kernels prefetch into L2, as they go,
// the bytes ahead bytes past each step's (rowpack_amd64.s, PF64).

//go:noescape
func rowPack8VNNIPF(packed *byte, x8 *int8, sx8, gs8, y *float32, blocks, groups, steps, ystride, ahead int)

//go:noescape
func rowPack8VNNI8PF(packed *byte, x8 *int8, sx8, gs8, y *float32, blocks, groups, steps, ystride, ahead int)

//go:noescape
func rowPack8VNNI2PF(packed *byte, x8 *int8, sx8, gs8, y *float32, blocks, groups, steps, ystride, ahead int)

//go:noescape
func rowPack8VNNI3PF(packed *byte, x8 *int8, sx8, gs8, y *float32, blocks, groups, steps, ystride, ahead int)

// rowPackKernel is the signature of the multi-token kernels.
type rowPackKernel func(packed *byte, x8 *int8, sx8, gs8, y *float32, blocks, groups, steps, ystride, ahead int)

// rowPackKernels are the multi-token kernels of a width, the eight-token
// one plain and prefetching (PF), the rowPackTail-token one, and how many
// columns a step covers. The four-token kernel has no PF variant: as a
// chunk's only pass (an expert given 4–7 tokens) it measured the same with
// one (BenchmarkRowPackPrefetchAB, 0.93–1.04).
func rowPackKernels(bits int) (k8 [2]rowPackKernel, k4 rowPackKernel, stepCols int) {
	switch bits {
	case 4:
		return [2]rowPackKernel{rowPack8VNNI, rowPack8VNNIPF}, rowPack4VNNI, 8
	case 8:
		return [2]rowPackKernel{rowPack8VNNI8, rowPack8VNNI8PF}, rowPack4VNNI8, 8
	case 2:
		return [2]rowPackKernel{rowPack8VNNI2, rowPack8VNNI2PF}, rowPack4VNNI2, 16
	case 3:
		return [2]rowPackKernel{rowPack8VNNI3, rowPack8VNNI3PF}, rowPack4VNNI3, 32
	}
	panic(fmt.Sprintf("cpu: row-interleaved kernel for %d-bit codes", bits))
}

// rowPackMulti runs the n-token kernel (8 or rowPackTail) of the codes'
// width over blocks blocks of pk, n tokens laid out by rowPackXN; with 8
// tokens and ahead > 0, its PF variant.
func rowPackMulti(n int, pk []byte, xn []int8, sxn, gsn, y []float32, blocks, gs, bits, ystride, ahead int) {
	g := len(sxn) / n
	if blocks == 0 {
		return
	}
	_ = pk[blocks*g*rowPackRecord(gs, bits)-1]
	_ = xn[g*gs*n-1]
	_ = gsn[g*n-1]
	_ = y[(n-1)*ystride+blocks*rowPackRows-1]
	k8, kernel, stepCols := rowPackKernels(bits)
	if n == rowPackTokens {
		kernel = k8[0]
		if ahead > 0 {
			kernel = k8[1]
		}
	}
	kernel(&pk[0], &xn[0], &sxn[0], &gsn[0], &y[0], blocks, g, gs/stepCols, 4*ystride, ahead)
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
