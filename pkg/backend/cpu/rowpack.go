package cpu

import (
	"encoding/binary"
	"os"
	"unsafe"

	"github.com/fm-moe/fm/pkg/internal/half"
)

// Row-interleaved 4-bit matrices for int8 mode (`--matmul int8`, AVX-512
// VNNI only): an in-memory, CPU-only copy of a dense matrix's codes, scales
// and biases, made once, at the matrix's first product (Device.BindDense
// arranges it; a matrix only Embed reads gets none). Nothing
// on disk changes.
//
// Why: in the row-major layout one ZMM of codes holds one row, and each of
// its 64-weight groups has its own scale, so the int32 lanes of VPDPBUSD
// cannot accumulate across groups; every group (or pair of groups) of every
// row then pays a convert, a scale expansion and an FMA, ~14 vector
// instructions per 64 bytes of codes. Here a ZMM's 16 dword lanes hold 16
// different rows at the same columns, so all lanes share one group: x is
// broadcast (VPDPBUSD with an embedded-broadcast dword of x), the int32
// lanes accumulate a whole group, and the float epilogue (convert, ×scale
// of 16 rows, ×sx, + bias × Σx) runs once per 16 rows per group; the 16
// results of a block are stored as one vector, with no horizontal sums.
//
// Layout (rowPack.data): blocks of 16 consecutive rows (rows 16b..16b+15),
// one after another; a block is its groups in order, each a record of
// gs/8 steps of 64 bytes, then the 16 rows' bf16 scales (32 bytes) and the
// 16 rows' bf16 biases (32 bytes):
//
//	step k, bytes 4r..4r+3 (dword lane r = row 16b+r): byte i holds the
//	codes of columns 8k+i (low nibble) and 8k+4+i (high nibble) of the group
//
// so the low nibbles of a step meet x's dword 2k of the group (elements
// 8k..8k+3 in natural order) and the high nibbles dword 2k+1: x needs no
// pair layout. A record is gs/2 + 4 bytes per row, the same as the original
// codes, scales and biases, so the copy is one more matrix of the same size.
// Rows beyond the last multiple of 16 are not packed: they keep the original
// bytes and the row kernels.
//
// 8-bit codes use the same steps of 16 rows × 8 columns, as two 64-byte
// vectors (dword lane r of the first: row 16b+r's codes of columns
// 8k..8k+3; of the second: 8k+4..8k+7), so that the kernels differ from
// the 4-bit ones only in how a step is decoded (two loads instead of a
// nibble split), x and its layout being the same. A record is then
// gs/8 steps of 128 bytes, then the scales and biases.
//
// 2-bit codes use steps of 16 columns in one 64-byte vector: byte i of dword
// lane r holds row 16b+r's codes of columns 16k+i, 16k+4+i, 16k+8+i and
// 16k+12+i in its four crumbs (low to high), which meet x's dwords 4k..4k+3
// of the group: gs/16 steps of 64 bytes per record.
//
// 3-bit codes are split into their low two bits and their high bit: per 32
// columns, two 2-bit steps (64 bytes each) of the low bits, then one
// 64-byte vector of the high bits, byte i of lane r holding in bit q the
// high bit of column 4q+i (of the 32), which the kernels move to bit 2 (its
// weight, 4) for x's dword q: gs/32 such 192-byte steps per record.

// rowPack is a Matrix's row-interleaved copy (see above).
type rowPack struct {
	data   []byte
	blocks int // full blocks of 16 rows; rows 16·blocks.. are not packed
	bits   int // 2, 3, 4 or 8: the code width, which decides the step's shape
	// tail is the rows past the last block (16·blocks..) in the original
	// layout, as a matrix of its own: a view of the source's bytes for a
	// dense matrix, a copy for a routed expert in the device's cache
	// (expertcache.go), whose source buffer is given back after the bind.
	tail Matrix
}

// rowPackRows is the number of rows a block interleaves (a ZMM's dword lanes).
const rowPackRows = 16

// rowPackOff turns the layout off (FM_ROWPACK=0), for A/B measurements of the
// row kernels in one binary; matrices bound before the switch changes keep
// what they have.
var rowPackOff = os.Getenv("FM_ROWPACK") == "0"

// rowPackExpertsOff turns off only the routed experts' packed cache
// (FM_ROWPACK_EXPERTS=0; expertcache.go): dense matrices stay packed, the
// expert store keeps its RAM cache, for A/B measurements of the experts'
// part alone.
var rowPackExpertsOff = os.Getenv("FM_ROWPACK_EXPERTS") == "0"

// rowPacks reports whether p's products use row-interleaved copies: int8
// mode on AVX-512 VNNI, unless FM_ROWPACK=0.
func (p *Pool) rowPacks() bool {
	return p.int8 && p.level >= levelAVX512 && haveVNNI && !rowPackOff
}

// rowPackable reports whether m has a row-interleaved kernel: 2-, 3-, 4- or 8-bit codes,
// bf16 scales and biases, groups a multiple of 32 elements, at least one
// block of rows.
func rowPackable(m *Matrix) bool {
	return m.Format == Affine && (m.Bits == 2 || m.Bits == 3 || m.Bits == 4 || m.Bits == 8) && m.ScaleFormat == BF16 && m.GroupSize%32 == 0 && m.GroupSize > 0 &&
		m.Rows >= rowPackRows
}

// rowPackRecord is the size of one group's record in a block: 16 rows of
// gs codes (2·gs·bits bytes in steps), then 16 bf16 scales and 16 bf16
// biases.
func rowPackRecord(gs, bits int) int { return 2*gs*bits + 64 }

// rowPackBytes is the size of m's packed data (rowPack.data; the caller
// checks rowPackable).
func rowPackBytes(m *Matrix) int {
	return m.Rows / rowPackRows * m.Groups() * rowPackRecord(m.GroupSize, m.Bits)
}

// packRows builds m's row-interleaved copy (the caller checks rowPackable),
// blocks split over p's workers (nil: the calling goroutine).
func packRows(m *Matrix, p *Pool) *rowPack {
	out := hugeBytes(rowPackBytes(m))
	packInto(out, m, p)
	nb := m.Rows / rowPackRows
	return &rowPack{data: out, blocks: nb, bits: m.Bits, tail: tailRows(m, nb*rowPackRows)}
}

// packInto writes m's row-interleaved blocks into out (rowPackBytes(m)
// bytes), split over p's workers (nil: the calling goroutine).
func packInto(out []byte, m *Matrix, p *Pool) {
	nb := m.Rows / rowPackRows
	out = out[:rowPackBytes(m)]
	if p == nil {
		packBlocks(out, m, 0, nb)
	} else {
		p.For(nb, rowPackRows*m.Cols, func(lo, hi int) { packBlocks(out, m, lo, hi) })
	}
}

// tailRows is the matrix of m's rows r0.. (bf16 scales and biases), viewing
// m's bytes.
func tailRows(m *Matrix, r0 int) Matrix {
	g, rb := m.Groups(), m.RowBytes()
	t := *m
	t.packed = nil
	t.Rows = m.Rows - r0
	t.Data = m.Data[r0*rb : m.Rows*rb]
	t.Scales, t.Biases = m.Scales[2*r0*g:2*m.Rows*g], m.Biases[2*r0*g:2*m.Rows*g]
	return t
}

// packBlocksGo writes blocks [lo, hi) of m's row-interleaved copy into out
// (packBlocks' generic twin). Bytes 4k..4k+3 of a group's codes, read as a little-endian word w, hold
// the nibbles of columns 8k..8k+7 in order; the step's dword wants byte i =
// nibble i | nibble 4+i << 4, so each 16-bit half of w spreads its four
// nibbles to the low nibbles of four bytes (the high half then shifted up).
func packBlocksGo(out []byte, m *Matrix, lo, hi int) {
	gs, g := m.GroupSize, m.Groups()
	rb := m.RowBytes()
	rec := rowPackRecord(gs, m.Bits)
	sc, bi := u16s(m.Scales), u16s(m.Biases)
	spread := func(x uint32) uint32 {
		x = (x | x<<8) & 0x00ff00ff
		return (x | x<<4) & 0x0f0f0f0f
	}
	gb := gs * m.Bits / 8 // bytes of a group's codes in a row
	for b := lo; b < hi; b++ {
		for r := 0; r < rowPackRows; r++ {
			row := b*rowPackRows + r
			codes := m.Data[row*rb : (row+1)*rb]
			for j := 0; j < g; j++ {
				dst := out[(b*g+j)*rec : (b*g+j+1)*rec]
				cg := codes[j*gb : (j+1)*gb]
				if m.Bits == 3 {
					pack3(dst, cg, r, gs)
				}
				for k := 0; k < gs/16 && m.Bits == 2; k++ {
					binary.LittleEndian.PutUint32(dst[64*k+4*r:], transposeCrumbs(binary.LittleEndian.Uint32(cg[4*k:])))
				}
				for k := 0; k < gs/8 && m.Bits != 2 && m.Bits != 3; k++ {
					if m.Bits == 8 {
						copy(dst[128*k+4*r:128*k+4*r+4], cg[8*k:8*k+4])
						copy(dst[128*k+64+4*r:128*k+64+4*r+4], cg[8*k+4:8*k+8])
						continue
					}
					w := binary.LittleEndian.Uint32(cg[4*k:])
					binary.LittleEndian.PutUint32(dst[64*k+4*r:], spread(w&0xffff)|spread(w>>16)<<4)
				}
				o := rec - 64
				binary.LittleEndian.PutUint16(dst[o+2*r:], sc[row*g+j])
				binary.LittleEndian.PutUint16(dst[o+32+2*r:], bi[row*g+j])
			}
		}
	}
}

// transposeCrumbs transposes the 4×4 matrix of 2-bit fields of w (field
// (q, i) at bit 8q+2i, i.e. byte q's crumb i) to field (i, q): four source
// bytes of 2-bit codes (columns 4q+i) become the 2-bit step's four bytes
// (byte i: columns i, 4+i, 8+i, 12+i). Two delta swaps: the off-diagonal
// 2×2 blocks (12 bits apart), then the off-diagonal fields of each block
// (6 bits apart).
func transposeCrumbs(w uint32) uint32 {
	t := (w>>12 ^ w) & 0x0000f0f0
	w ^= t ^ t<<12
	t = (w>>6 ^ w) & 0x00cc00cc
	return w ^ t ^ t<<6
}

// pack3 writes row r's 3-bit codes of one group (cg: gs·3/8 bytes, code c
// at bit 3c) into the group's record dst: low bits as 2-bit steps, high bits
// as the plane described above.
func pack3(dst, cg []byte, r, gs int) {
	for s := 0; s < gs/32; s++ {
		rec := dst[192*s : 192*s+192]
		src := cg[12*s : 12*s+12] // 32 codes, 8 per 3 bytes
		var lo [2]uint32
		var hi uint32
		for e := 0; e < 4; e++ {
			w := uint32(src[3*e]) | uint32(src[3*e+1])<<8 | uint32(src[3*e+2])<<16
			for i := 0; i < 8; i++ {
				c, p := w>>(3*i)&7, 8*e+i
				q := p % 16 // column in its 2-bit step: byte q%4, crumb q/4
				lo[p/16] |= (c & 3) << (8*(q%4) + 2*(q/4))
				hi |= (c >> 2) << (8*(p%4) + p/4)
			}
		}
		binary.LittleEndian.PutUint32(rec[4*r:], lo[0])
		binary.LittleEndian.PutUint32(rec[64+4*r:], lo[1])
		binary.LittleEndian.PutUint32(rec[128+4*r:], hi)
	}
}

// rowPackGeom returns the columns and bytes of one step of the layout.
func rowPackGeom(bits int) (cols, bytes int) {
	switch bits {
	case 3:
		return 32, 192
	case 8:
		return 8, 128
	case 2:
		return 16, 64
	}
	return 8, 64
}

// rowPackPlace returns where the code of row r (of its block) at column c
// (of its group) lives in the group's record: its byte and bit shift.
func rowPackPlace(bits, r, c int) (off, shift int) {
	cols, bytes := rowPackGeom(bits)
	k, p := c/cols, c%cols
	if bits == 8 {
		return bytes*k + 64*(p/4) + 4*r + p%4, 0
	}
	return bytes*k + 4*r + p%4, bits * (p / 4)
}

// rowPackCode reads the code rowPackPlace puts at column c of row r from a
// group's record (3-bit: its low bits as a 2-bit code, its high bit from the
// plane after them).
func rowPackCode(rec []byte, bits, r, c int) int32 {
	if bits == 3 {
		s, p := c/32, c%32
		lo := rowPackCode(rec[192*s:], 2, r, p)
		return lo | int32(rec[192*s+128+4*r+p%4]>>(p/4)&1)<<2
	}
	off, shift := rowPackPlace(bits, r, c)
	return int32(rec[off]>>shift) & (1<<bits - 1)
}

// rowPackGo is the Go twin of rowPack1VNNI: blocks of the packed layout
// against one token's x quantized by quantizeX (natural order), 16 results
// per block into y. Per group it computes the same integer dots as
// affineRowInt8, then acc += float(dot)·(s·sx) and bacc += b·Σx, as the
// kernel does lane by lane.
func rowPackGo(pk []byte, xq []int8, sx, gsum, y []float32, blocks, gs, bits int) {
	g := len(sx)
	rec := rowPackRecord(gs, bits)
	for b := 0; b < blocks; b++ {
		var acc, bacc [rowPackRows]float32
		for j := 0; j < g; j++ {
			r0 := pk[(b*g+j)*rec : (b*g+j+1)*rec]
			xg := xq[j*gs : (j+1)*gs]
			var dot [rowPackRows]int32
			for r := 0; r < rowPackRows; r++ {
				for c, x := range xg {
					dot[r] += rowPackCode(r0, bits, r, c) * int32(x)
				}
			}
			sb := u16s(r0[rec-64:])
			for r := 0; r < rowPackRows; r++ {
				acc[r] += float32(dot[r]) * (half.BF16ToF32(sb[r]) * sx[j])
				bacc[r] += half.BF16ToF32(sb[16+r]) * gsum[j]
			}
		}
		for r := range acc {
			y[b*rowPackRows+r] = acc[r] + bacc[r]
		}
	}
}

// rowPackTokens is the number of tokens the multi-token kernel takes at once.
const rowPackTokens = 8

// rowPackX8 interleaves eight tokens' quantized x (natural order, cols bytes
// each) and their per-group sx and Σx (g each) for rowPack8VNNI: per 8
// columns, the eight tokens' 8 bytes; per group, the eight tokens' sx (sx8)
// and Σx (gs8). Token t is row rows[t] of xq, sx and gsum (xq[r·cols:],
// sx[r·g:], gsum[r·g:]), or row t when rows is nil.
func rowPackX8(x8 []int8, sx8, gs8 []float32, xq []int8, sx, gsum []float32, rows []int, cols, g int) {
	rowPackXN(x8, sx8, gs8, xq, sx, gsum, rows, cols, g, rowPackTokens)
}

// rowPackXN is rowPackX8 for n ≤ 8 tokens (rowPack4VNNI takes 4): per 8
// columns, the n tokens' 8 bytes; per group, their n sx and n Σx.
func rowPackXN(xn []int8, sxn, gsn []float32, xq []int8, sx, gsum []float32, rows []int, cols, g, n int) {
	var src [rowPackTokens]unsafe.Pointer
	_ = xn[n*cols-1]
	_ = sxn[n*g-1]
	_ = gsn[n*g-1]
	for t := 0; t < n; t++ {
		r := t
		if rows != nil {
			r = rows[t]
		}
		xt, st, gt := xq[r*cols:(r+1)*cols], sx[r*g:(r+1)*g], gsum[r*g:(r+1)*g]
		src[t] = unsafe.Pointer(&xt[0])
		for j := 0; j < g; j++ {
			sxn[j*n+t] = st[j]
			gsn[j*n+t] = gt[j]
		}
	}
	// Eight bytes a move as one word, written in order: 3.2× the loop that
	// walked one token at a time with bounds-checked words (13.7 against
	// 4.3 GB/s, eight tokens of 2,048 columns), which took 2.7 % of a
	// two-core int8 prefill (docs/PERF.md, round fifteen). The slices
	// above bound every byte read (a token's row) and written (n·cols).
	// (Each address from the base: a pointer stepped past the last word
	// would point outside xn, which -race's checkptr rejects.)
	d := unsafe.Pointer(&xn[0])
	for c := 0; c < cols/8; c++ {
		for t := 0; t < n; t++ {
			*(*uint64)(unsafe.Add(d, 8*(c*n+t))) = *(*uint64)(unsafe.Add(src[t], 8*c))
		}
	}
}

// rowPackTail is the token count of the kernel that takes a remainder of
// tokens past the eight-token blocks (rowPack4VNNI, 4-bit codes): a prefill
// chunk gives each routed expert a few such tokens, and one-token calls
// re-read the expert's rows for each (docs/PERF.md, round seven).
const rowPackTail = 4

// rowPack8Go is the Go twin of rowPack8VNNI: blocks of the packed layout
// against eight tokens laid out by rowPackX8; token t's 16 results of block
// b at y[t·ystride+16b:].
func rowPack8Go(pk []byte, x8 []int8, sx8, gs8, y []float32, blocks, gs, bits, ystride int) {
	rowPackNGo(pk, x8, sx8, gs8, y, blocks, gs, bits, ystride, rowPackTokens)
}

// rowPack4Go is the Go twin of rowPack4VNNI: rowPack8Go for the four tokens
// rowPackXN laid out.
func rowPack4Go(pk []byte, x4 []int8, sx4, gs4, y []float32, blocks, gs, bits, ystride int) {
	rowPackNGo(pk, x4, sx4, gs4, y, blocks, gs, bits, ystride, rowPackTail)
}

// rowPackNGo is the twins' loop for n ≤ 8 tokens laid out by rowPackXN.
func rowPackNGo(pk []byte, xn []int8, sxn, gsn, y []float32, blocks, gs, bits, ystride, n int) {
	g := len(sxn) / n
	rec := rowPackRecord(gs, bits)
	for b := 0; b < blocks; b++ {
		var acc [rowPackTokens][rowPackRows]float32
		for j := 0; j < g; j++ {
			r0 := pk[(b*g+j)*rec : (b*g+j+1)*rec]
			var dot [rowPackTokens][rowPackRows]int32
			for c := 0; c < gs; c++ {
				xc := xn[(j*gs+c)/8*8*n+c%8:] // column j·gs+c of token t at xc[8t]
				for r := 0; r < rowPackRows; r++ {
					code := rowPackCode(r0, bits, r, c)
					for t := 0; t < n; t++ {
						dot[t][r] += code * int32(xc[8*t])
					}
				}
			}
			sb := u16s(r0[rec-64:])
			for t := 0; t < n; t++ {
				for r := 0; r < rowPackRows; r++ {
					acc[t][r] += float32(dot[t][r]) * (half.BF16ToF32(sb[r]) * sxn[j*n+t])
					acc[t][r] += half.BF16ToF32(sb[16+r]) * gsn[j*n+t]
				}
			}
		}
		for t := 0; t < n; t++ {
			copy(y[t*ystride+b*rowPackRows:], acc[t][:])
		}
	}
}

// rowPackPrefetch turns the PF kernels on (BenchmarkRowPackPrefetchAB
// turns them off for its pairs); rowPackOneCall a decode's single kernel
// call per range (BenchmarkRowPackOneCallAB).
var rowPackPrefetch, rowPackOneCall = true, true

// rowPackPrefetchAll makes every eight-token pass over a chunk prefetch the
// next one, not only the first (BenchmarkRowPackPrefetchAllAB turns it off
// for its pairs).
var rowPackPrefetchAll = true

// rowPackChunk is the number of blocks one kernel call walks: their bytes
// (64 rows: 74 KB at 2048 columns, 147 KB at 4096) stay in L2 while every
// token meets them.
const rowPackChunk = 4

// int8Packed is the body prepPacked's products run (a matrix with a rowPack): units
// [0, blocks) are blocks of 16 rows, the units after them single rows past
// the last block (original bytes, the row kernels).
func (t *matTask) int8Packed(lo, hi int) {
	m, y, n := t.m, t.y, t.n
	pk := m.packed
	rows, cols, gs, g := m.Rows, m.Cols, m.GroupSize, m.Groups()
	rec := rowPackRecord(gs, pk.bits)
	bhi := min(hi, pk.blocks)
	// The chunk's first eight-token pass streams it from DRAM; it
	// prefetches the next chunk meanwhile (rowPackMulti's PF kernels:
	// 1.03–1.16× at 8–64 tokens, BenchmarkRowPackPrefetchAB), and so do the
	// chunk's further eight-token passes (rowPackPrefetchAll): prefetched
	// by the first pass alone, the next chunk's first pass still ran at
	// ~0.6 of the others' rate (docs/PERF.md, round fifteen). One-token
	// passes do not: a decode's stream gained nothing from it.
	next := 0
	if rowPackPrefetch {
		next = rowPackChunk * g * rec
	}
	// A decode's one token walks its whole range in one kernel call: the
	// chunks only keep rows in L2 for further tokens (one call per chunk
	// cost 1.4–5 %, BenchmarkRowPackOneCallAB).
	step := rowPackChunk
	if n == 1 && rowPackOneCall {
		step = max(1, bhi-lo)
	}
	for c := lo; c < bhi; c += step {
		ce := min(c+step, bhi)
		data := pk.data[c*g*rec : ce*g*rec]
		ahead := next
		for b := 0; b < t.blocks; b++ {
			k := rowPackTokens * b
			rowPack8(data, t.x4[k*cols:(k+rowPackTokens)*cols], t.sx4[k*g:(k+rowPackTokens)*g], t.gsum4[k*g:(k+rowPackTokens)*g],
				y[k*rows+c*rowPackRows:], ce-c, gs, pk.bits, rows, ahead)
			if !rowPackPrefetchAll {
				ahead = 0
			}
		}
		k := rowPackTokens * t.blocks
		if t.tail {
			rowPack4(data, t.x4[k*cols:(k+rowPackTail)*cols], t.sx4[k*g:(k+rowPackTail)*g], t.gsum4[k*g:(k+rowPackTail)*g],
				y[k*rows+c*rowPackRows:], ce-c, gs, pk.bits, rows)
			k += rowPackTail
		}
		for ; k < n; k++ {
			rowPack1(data, t.xq[k*cols:(k+1)*cols], t.sx[k*g:(k+1)*g], t.gsum[k*g:(k+1)*g],
				y[k*rows+c*rowPackRows:k*rows+ce*rowPackRows], gs, pk.bits)
		}
	}
	// Rows past the last block, from the tail's original bytes.
	tm := &pk.tail
	for u := max(lo, pk.blocks); u < hi; u++ {
		i := u - pk.blocks // row of the tail
		r := i + pk.blocks*rowPackRows
		sbBuf := t.p.buf.get(2 * wideChunk * g)
		scales, biases := chunkScales(tm, *sbBuf, i, i+1)
		raw := tm.Data[i*tm.RowBytes() : (i+1)*tm.RowBytes()]
		for k := 0; k < n; k++ {
			xq, sx, gsum := t.xq[k*cols:(k+1)*cols], t.sx[k*g:(k+1)*g], t.gsum[k*g:(k+1)*g]
			yk := y[k*rows+r : k*rows+r+1]
			if m.Bits == 4 && gs%64 == 0 {
				q4RowsNatural(raw, xq, sx, scales, biases, gsum, yk, gs)
			} else {
				yk[0] = affineRowInt8(m.Bits, gs, raw, xq, sx, scales, biases, gsum)
			}
		}
		t.p.buf.put(sbBuf)
	}
}

// int8AsBytes views x's bytes.
func int8AsBytes(x []int8) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(x))), len(x))
}

// x8Bytes views a float32 scratch buffer as n int8s.
func x8Bytes(b []float32, n int) []int8 {
	return unsafe.Slice((*int8)(unsafe.Pointer(&b[0])), n)
}
