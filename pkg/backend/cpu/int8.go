package cpu

import (
	"github.com/fm-moe/fm/pkg/internal/half"
	"math"
	"unsafe"
)

// Int8-activation products (the opt-in numerics mode backend.MatmulInt8,
// `--matmul int8`). For an affine matrix, x is quantized once per product to
// int8 in blocks of one weight group: sx_g = max|x_g|/127, xq = round(x/sx_g),
// and the group's exact float32 sum Σx_g is kept, so that
//
//	y = Σ_g s_g·sx_g·(Σ q·xq)_g + b_g·Σx_g
//
// where the inner sum is an exact integer dot product of the unsigned codes q
// with the signed xq. Only x is approximated (each element's error is at most
// sx_g/2, 1/254 of its group's largest magnitude); the bias term is exact. The
// VNNI kernels (int8_amd64.s) do the integer part with VPDPBUSD, 64 products
// per instruction, and convert each group's int32 partial sums to float once,
// per lane, so there is no horizontal reduction per group; the Go twin below
// computes the same integers.

// int8Wide reports whether the AVX-512 VNNI kernels handle an affine matrix
// of this bit width and group size.
func int8Wide(bits, gs int) bool { return haveVNNI && wideAffine(bits, gs) }

// quantizeX quantizes x per group of gs elements: sx[j] = max|x| of group j
// over 127, xq = x/sx[j] rounded to nearest (ties to even) in [−127, 127], and
// gsum[j] = Σx of group j in float32. A NaN or ±Inf in x makes its group's
// sum (hence every product that uses it) non-finite too. quantizeWide is its
// AVX-512 twin.
func quantizeX(xq []int8, sx, gsum, x []float32, gs int) {
	const magic = 12582912 // 1.5·2^23: adding it rounds a float32 below 2^22 to an integer
	for j := range sx {
		xg := x[j*gs : (j+1)*gs]
		qg := xq[j*gs : (j+1)*gs]
		var amax, sum float32
		for _, v := range xg {
			sum += v
			if a := float32(math.Abs(float64(v))); a > amax {
				amax = a
			}
		}
		gsum[j] = sum
		var inv float32
		sx[j] = amax / 127
		if amax > 0 {
			inv = 127 / amax
		}
		for i, v := range xg {
			f := float32(v * inv) // the conversion keeps the product from fusing into the add
			q := int32(f+magic) - magic
			qg[i] = int8(max(-127, min(127, q)))
		}
	}
}

// quantizeAny is quantizeWide where wide (p.wideQuant), else quantizeX.
func quantizeAny(wide bool, xq []int8, sx, gsum, x []float32, gs int) {
	if wide {
		quantizeWide(xq, sx, gsum, x, gs)
	} else {
		quantizeX(xq, sx, gsum, x, gs)
	}
}

// wideQuant reports whether p quantizes x for groups of gs with
// quantizeWide (AVX-512, groups a multiple of 16).
func (p *Pool) wideQuant(gs int) bool { return p.level >= levelAVX512 && gs%16 == 0 }

// int8Paired reports whether the VNNI kernel for this matrix reads x in
// int8PairLayout order (4-bit codes in groups of 64: q4PairsVNNI) rather than
// element order.
func int8Paired(bits, gs int) bool { return bits == 4 && gs == 64 }

// int8Quads reports whether the VNNI kernel for this matrix reads x in
// int8QuadLayout order (2-bit codes in groups of 64 with bf16 scales:
// q2QuadsVNNIBF16).
func int8Quads(bits, gs int, sf Format) bool { return bits == 2 && gs == 64 && sf == BF16 }

// int8QuadLayout copies quantized x (element order, groups of 64) into the
// order q2QuadsVNNIBF16 reads: per four groups (256 elements, a 64-byte block
// of 2-bit codes whose dword lane L it takes from group L mod 4), field k of
// every byte meets the 64 bytes at 64k, byte 4L+b of which is element
// 16·(L/4) + 4b + k of group L mod 4; the last groups mod 4 stay in element
// order.
func int8QuadLayout(dst, src []int8) {
	n := len(src) &^ 255
	for blk := 0; blk < n; blk += 256 {
		s, d := (*[256]int8)(src[blk:]), (*[256]int8)(dst[blk:])
		for k := 0; k < 4; k++ {
			for L := 0; L < 16; L++ {
				for b := 0; b < 4; b++ {
					d[64*k+4*L+b] = s[64*(L%4)+16*(L/4)+4*b+k]
				}
			}
		}
	}
	copy(dst[n:], src[n:])
}

// int8PairLayout copies quantized x (element order, groups of 64) into the
// order q4PairsVNNI reads: per pair of groups (128 elements, a 64-byte block
// of codes whose dwords it interleaves), the elements meeting low nibbles,
// then those meeting high nibbles, each as dword i of the first group then
// dword i of the second; an odd last group stays in element order.
func int8PairLayout(dst, src []int8) {
	n := len(src) &^ 127
	for b := 0; b < n; b += 128 {
		s, d := (*[128]int8)(src[b:]), (*[128]int8)(dst[b:])
		for i := 0; i < 8; i++ {
			for k := 0; k < 4; k++ {
				d[8*i+k] = s[8*i+2*k]
				d[8*i+4+k] = s[64+8*i+2*k]
				d[64+8*i+k] = s[8*i+2*k+1]
				d[64+8*i+4+k] = s[64+8*i+2*k+1]
			}
		}
	}
	copy(dst[n:], src[n:])
}

// int8Block4 interleaves four tokens' int8PairLayout x (cols bytes each,
// xq[t·cols:]) and scales (g each, sx[t·g:]) for q4Pairs4BF16: per pair of
// groups, the four tokens' 128 bytes and (sx, sx) pairs; an odd last group's
// 64 bytes and scale per token after them.
func int8Block4(x4 []int8, sx4 []float32, xq []int8, sx []float32, cols, g int) {
	pairs := g / 2
	for t := 0; t < 4; t++ {
		xt, st := xq[t*cols:(t+1)*cols], sx[t*g:(t+1)*g]
		for p := 0; p < pairs; p++ {
			copy(x4[p*512+t*128:p*512+(t+1)*128], xt[p*128:(p+1)*128])
			sx4[p*8+2*t], sx4[p*8+2*t+1] = st[2*p], st[2*p+1]
		}
		if g%2 == 1 {
			copy(x4[pairs*512+t*64:pairs*512+(t+1)*64], xt[pairs*128:])
			sx4[pairs*8+t] = st[g-1]
		}
	}
}

// dotI8 is the exact Σ q·xq over one group's codes (LSB-first bit stream of
// bits-wide codes) and its int8 activations in natural order.
func dotI8(bits int, codes []byte, xq []int8) int32 {
	var s int32
	switch bits {
	case 8:
		xq = xq[:len(codes)]
		for i, c := range codes {
			s += int32(c) * int32(xq[i])
		}
	case 4:
		xq = xq[:2*len(codes)]
		for i, c := range codes {
			s += int32(c&15)*int32(xq[2*i]) + int32(c>>4)*int32(xq[2*i+1])
		}
	case 2:
		xq = xq[:4*len(codes)]
		for i, c := range codes {
			p := (*[4]int8)(xq[4*i:])
			s += int32(c&3)*int32(p[0]) + int32(c>>2&3)*int32(p[1]) + int32(c>>4&3)*int32(p[2]) + int32(c>>6)*int32(p[3])
		}
	default:
		// Every 8 codes fill exactly `bits` bytes.
		mask := uint64(1)<<uint(bits) - 1
		i := 0
		for ; i+8 <= len(xq); i += 8 {
			off := i * bits / 8
			var v uint64
			for k := bits - 1; k >= 0; k-- {
				v = v<<8 | uint64(codes[off+k])
			}
			p := (*[8]int8)(xq[i:])
			for k := range p {
				s += int32(v>>uint(k*bits)&mask) * int32(p[k])
			}
		}
		for ; i < len(xq); i++ {
			s += int32(bitCode(codes, i, bits)) * int32(xq[i])
		}
	}
	return s
}

// affineRowInt8 is the Go twin of the VNNI row kernels: one affine row (codes,
// float32 scales and biases) against x quantized by quantizeX in natural
// order.
func affineRowInt8(bits, gs int, raw []byte, xq []int8, sx, scales, biases, gsum []float32) float32 {
	gb := gs * bits / 8
	var acc, bacc float32
	for j := range scales {
		d := dotI8(bits, raw[j*gb:(j+1)*gb], xq[j*gs:(j+1)*gs])
		acc += float32(d) * sx[j] * scales[j]
		bacc += biases[j] * gsum[j]
	}
	return acc + bacc
}

// prepInt8 prepares MatMul for affine matrices in int8 mode: x is quantized
// once per token, then the rows are split over the workers.
func (p *Pool) prepInt8(t *matTask) {
	m, x, n := t.m, t.x, t.n
	cols, gs, g := m.Cols, m.GroupSize, m.Groups()
	t.simd = p.level >= levelAVX512 && int8Wide(m.Bits, gs)
	// level marks the AVX2 kernels' turn (levelAVX2), else the Go twin.
	t.level = levelGeneric
	if !t.simd && p.level >= levelAVX2 && gs%32 == 0 && (m.Bits == 4 || m.Bits == 8) {
		t.level = levelAVX2
	}
	wideQ := p.wideQuant(gs)
	if p.packedProduct(m) {
		p.prepPacked(t, wideQ)
		t.packedBody()
		return
	}
	paired := t.simd && int8Paired(m.Bits, gs)
	quads := t.simd && int8Quads(m.Bits, gs, m.ScaleFormat)
	qn := (n*cols + 3) / 4 // floats holding n·cols bytes
	if paired || quads {
		qn += (cols + 3) / 4 // room to quantize one token before the layout
	}
	qBuf := t.scratch(qn)
	fBuf := t.scratch(2 * n * g)
	all := unsafe.Slice((*int8)(unsafe.Pointer(&(*qBuf)[0])), 4*qn)
	t.xq = all[:n*cols]
	t.sx, t.gsum = (*fBuf)[:n*g], (*fBuf)[n*g:]
	for k := 0; k < n; k++ {
		xq, sx, gsum, xk := t.xq[k*cols:(k+1)*cols], t.sx[k*g:(k+1)*g], t.gsum[k*g:(k+1)*g], x[k*cols:(k+1)*cols]
		if paired || quads {
			xq = all[n*cols : (n+1)*cols]
		}
		quantizeAny(wideQ, xq, sx, gsum, xk, gs)
		switch {
		case paired:
			int8PairLayout(t.xq[k*cols:(k+1)*cols], xq)
		case quads:
			int8QuadLayout(t.xq[k*cols:(k+1)*cols], xq)
		}
	}
	// Blocks of four tokens go through the 4-token kernel where one exists.
	if paired && m.ScaleFormat == BF16 && n >= 4 {
		t.blocks = n / 4
		x4Buf := t.scratch(t.blocks * cols)
		s4Buf := t.scratch(t.blocks * 4 * g)
		x4 := unsafe.Slice((*int8)(unsafe.Pointer(&(*x4Buf)[0])), 4*t.blocks*cols)
		for b := 0; b < t.blocks; b++ {
			int8Block4(x4[4*b*cols:4*(b+1)*cols], (*s4Buf)[4*b*g:4*(b+1)*g], t.xq[4*b*cols:], t.sx[4*b*g:], cols, g)
		}
		t.x4, t.sx4 = x4, *s4Buf
	}
	t.body = (*matTask).int8Rows
}

// int8Rows is the body prepInt8 sets: scales of wideChunk rows at a time
// (as wideRows), then one multi-row kernel call per token, or the Go twin.
func (t *matTask) int8Rows(lo, hi int) {
	m, y, n := t.m, t.y, t.n
	rows, cols, gs, g, bits := m.Rows, m.Cols, m.GroupSize, m.Groups(), m.Bits
	rb := m.RowBytes()
	sbBuf := t.p.buf.get(2 * wideChunk * g)
	defer t.p.buf.put(sbBuf)
	// The paired 4-bit and the 2-bit quad kernels read bf16 scales and
	// biases in place.
	inPlace := t.simd && (int8Paired(bits, gs) || int8Quads(bits, gs, m.ScaleFormat)) && m.ScaleFormat == BF16
	for c := lo; c < hi; c += wideChunk {
		ce := min(c+wideChunk, hi)
		var scales, biases []float32
		if !inPlace {
			scales, biases = chunkScales(m, *sbBuf, c, ce)
		}
		for b := 0; b < t.blocks; b++ {
			k := 4 * b
			q4Pairs4BF16(m.Data[c*rb:ce*rb], t.x4[k*cols:(k+4)*cols], t.sx4[k*g:(k+4)*g], u16s(m.Scales)[c*g:ce*g], u16s(m.Biases)[c*g:ce*g],
				t.gsum[k*g:(k+4)*g], y[k*rows+c:], ce-c, rows)
		}
		for k := 4 * t.blocks; k < n; k++ {
			xq, sx, gsum := t.xq[k*cols:(k+1)*cols], t.sx[k*g:(k+1)*g], t.gsum[k*g:(k+1)*g]
			yk := y[k*rows+c : k*rows+ce]
			if inPlace && bits == 2 {
				q2QuadsBF16(m.Data[c*rb:ce*rb], xq, sx, u16s(m.Scales)[c*g:ce*g], u16s(m.Biases)[c*g:ce*g], gsum, yk)
				continue
			}
			if inPlace {
				q4PairsBF16(m.Data[c*rb:ce*rb], xq, sx, u16s(m.Scales)[c*g:ce*g], u16s(m.Biases)[c*g:ce*g], gsum, yk)
				continue
			}
			first := 0
			if t.simd {
				// The 3-bit kernel reads 8 bytes past each block: the
				// matrix's last row runs in Go.
				last := ce
				if bits == 3 && ce == rows {
					last--
				}
				if last > c {
					affineRowsInt8(bits, m.Data[c*rb:last*rb], xq, sx, scales[:(last-c)*g], biases[:(last-c)*g], gsum, yk[:last-c], gs)
				}
				first = last - c
			} else if t.level == levelAVX2 {
				affineRowsInt8AVX2(bits, m.Data[c*rb:ce*rb], xq, sx, scales, biases, gsum, yk, gs)
				first = len(yk)
			} else if int8NEON(bits, gs) {
				for i := range yk {
					r := c + i
					yk[i] = affineRowInt8Arch(bits, gs, m.Data[r*rb:(r+1)*rb], xq, sx, scales[i*g:(i+1)*g], biases[i*g:(i+1)*g], gsum)
				}
				first = len(yk)
			}
			for i := first; i < len(yk); i++ {
				r := c + i
				yk[i] = affineRowInt8(bits, gs, m.Data[r*rb:(r+1)*rb], xq, sx, scales[i*g:(i+1)*g], biases[i*g:(i+1)*g], gsum)
			}
		}
	}
}

// chunkScales converts the scales and biases of rows [c, ce) to float32 in
// buf (room for 2·wideChunk rows of groups): scales first, biases from
// wideChunk·groups on.
func chunkScales(m *Matrix, buf []float32, c, ce int) (scales, biases []float32) {
	g, nr := m.Groups(), ce-c
	scales, biases = buf[:nr*g], buf[wideChunk*g:wideChunk*g+nr*g]
	if m.ScaleFormat == BF16 {
		half.DecodeBF16(scales, m.Scales[2*c*g:])
		half.DecodeBF16(biases, m.Biases[2*c*g:])
	} else {
		decodeFloats(scales, m.Scales, m.ScaleFormat, c*g)
		decodeFloats(biases, m.Biases, m.ScaleFormat, c*g)
	}
	return scales, biases
}

// packedBody sets t's body, units and cost for a packed product, once x is
// prepared (prepPacked, prepPackedRows).
func (t *matTask) packedBody() {
	t.body = (*matTask).int8Packed
	t.units, t.cost = t.packedUnits(), rowPackRows*t.m.Cols*t.n
}

// packedUnits is the number of work units of a packed product: blocks of 16
// rows, then the rows past the last block.
func (t *matTask) packedUnits() int {
	pk := t.m.packed
	return pk.blocks + t.m.Rows - pk.blocks*rowPackRows
}

// packedProduct reports whether m's product on p runs on its rowPack
// (prepPacked).
func (p *Pool) packedProduct(m *Matrix) bool {
	return p.int8 && m.Format == Affine && m.packed != nil && p.level >= levelAVX512 && haveVNNI
}

// prepPacked prepares int8 mode's product for a matrix with a rowPack: it
// quantizes x per token in natural order and lays the tokens out in blocks
// of eight for rowPack8VNNI, in scratch buffers t holds until release; the
// workers split the blocks of 16 rows (then the rows past the last block).
func (p *Pool) prepPacked(t *matTask, wideQ bool) {
	n, cols, g := t.n, t.m.Cols, t.m.Groups()
	t.xq, t.sx, t.gsum = t.quantScratch(n, cols, g)
	if p.splitPrep(n) {
		p.For(n, 2*cols, func(lo, hi int) { t.quantizeTokens(wideQ, lo, hi) })
	} else {
		t.quantizeTokens(wideQ, 0, n)
	}
	p.layoutPacked(t)
}

// quantizeTokens quantizes tokens [lo, hi) of t.x into t.xq, t.sx, t.gsum
// (prepPacked).
func (t *matTask) quantizeTokens(wideQ bool, lo, hi int) {
	cols, gs, g := t.m.Cols, t.m.GroupSize, t.m.Groups()
	for k := lo; k < hi; k++ {
		quantizeAny(wideQ, t.xq[k*cols:(k+1)*cols], t.sx[k*g:(k+1)*g], t.gsum[k*g:(k+1)*g], t.x[k*cols:(k+1)*cols], gs)
	}
}

// splitPrep reports whether preparing x for n tokens (quantizing, laying
// out) goes over p's workers: a prefill chunk's tokens on a pool with
// several. On the owner alone it took ~2 % of a two-core int8 prefill
// (docs/PERF.md, round fourteen); a decode step's token, and an expert's
// tokens inside a worker's part (on the one-worker pool), stay on the caller.
func (p *Pool) splitPrep(n int) bool { return p.Workers() > 1 && n >= 4*rowPackTokens }

// quantRows are a tensor's rows quantized as prepPacked quantizes a token
// (quantizeAny with wide, groups of gs): row r's codes at xq[r·cols:], its
// group scales and sums at sx[r·g:] and gsum[r·g:], in the scratch buffers
// qBuf and fBuf.
type quantRows struct {
	xq         []int8
	sx, gsum   []float32
	cols, gs   int
	wide       bool
	qBuf, fBuf *[]float32
}

// quantizeRows quantizes the n rows of x (cols each) into q's buffers,
// taken from p's scratch (release them with putRows); the rows are split
// over p's workers when there are several.
func (p *Pool) quantizeRows(q *quantRows, x []float32, n, cols, gs int) {
	g := cols / gs
	*q = quantRows{cols: cols, gs: gs, wide: p.wideQuant(gs)}
	q.qBuf, q.fBuf, q.xq, q.sx, q.gsum = p.quantBufs(n, cols, g)
	if n == 1 {
		quantizeAny(q.wide, q.xq, q.sx, q.gsum, x[:cols], gs)
		return
	}
	p.For(n, cols, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			quantizeAny(q.wide, q.xq[r*cols:(r+1)*cols], q.sx[r*g:(r+1)*g], q.gsum[r*g:(r+1)*g], x[r*cols:(r+1)*cols], gs)
		}
	})
}

// putRows returns q's scratch buffers to p.
func (p *Pool) putRows(q *quantRows) {
	p.buf.put(q.qBuf)
	p.buf.put(q.fBuf)
	*q = quantRows{}
}

// fits reports whether q is what prepPacked would make for m on p.
func (q *quantRows) fits(p *Pool, m *Matrix) bool {
	return q.xq != nil && m.Cols == q.cols && m.GroupSize == q.gs && p.wideQuant(m.GroupSize) == q.wide
}

// prepPackedRows is prepPacked for x already quantized: token k is row
// rows[k] of q (ExpertFFNs quantizes a layer's tokens once for all its
// experts). The tokens of the multi-token kernels are laid out from q's
// rows; only those the one-token and row kernels read (tokens past the
// blocks, or all when m has rows past its last block) are copied into t.xq,
// at their place.
func (p *Pool) prepPackedRows(t *matTask, q *quantRows, rows []int) {
	cols, g := t.m.Cols, t.m.Groups()
	t.xq, t.sx, t.gsum = t.quantScratch(t.n, cols, g)
	t.src, t.srcRows = q, rows
	p.layoutPacked(t)
	from := t.laidOut()
	if t.m.packed.tail.Rows > 0 {
		from = 0
	}
	for k := from; k < t.n; k++ {
		r := rows[k]
		copy(t.xq[k*cols:(k+1)*cols], q.xq[r*cols:(r+1)*cols])
		copy(t.sx[k*g:(k+1)*g], q.sx[r*g:(r+1)*g])
		copy(t.gsum[k*g:(k+1)*g], q.gsum[r*g:(r+1)*g])
	}
}

// laidOut is the number of t's tokens layoutPacked laid out for the
// multi-token kernels: its blocks of eight, and four more when t.tail.
func (t *matTask) laidOut() int {
	nt := t.blocks * rowPackTokens
	if t.tail {
		nt += rowPackTail
	}
	return nt
}

// layoutSource is where layoutPacked takes tokens k.. of t from: t.src's
// rows t.srcRows[k:] (prepPackedRows), else t's own quantized tokens.
func (t *matTask) layoutSource(k int) (xq []int8, sx, gsum []float32, rows []int) {
	if t.src != nil {
		return t.src.xq, t.src.sx, t.src.gsum, t.srcRows[k:]
	}
	cols, g := t.m.Cols, t.m.Groups()
	return t.xq[k*cols:], t.sx[k*g:], t.gsum[k*g:], nil
}

// quantScratch is quantBufs for t: scratch that t holds until release.
func (t *matTask) quantScratch(n, cols, g int) (xq []int8, sx, gsum []float32) {
	qBuf, fBuf := t.scratch((n*cols+3)/4), t.scratch(2*n*g)
	return x8Bytes(*qBuf, n*cols), (*fBuf)[:n*g], (*fBuf)[n*g:]
}

// quantBufs takes scratch buffers for n tokens of cols quantized columns in
// g groups: the codes (xq, in qBuf) and each group's scale and sum (sx,
// gsum, in fBuf).
func (p *Pool) quantBufs(n, cols, g int) (qBuf, fBuf *[]float32, xq []int8, sx, gsum []float32) {
	qBuf, fBuf = p.buf.get((n*cols+3)/4), p.buf.get(2*n*g)
	return qBuf, fBuf, x8Bytes(*qBuf, n*cols), (*fBuf)[:n*g], (*fBuf)[n*g:]
}

// layoutBlocks lays t's blocks [lo, hi) of eight quantized tokens out for
// the eight-token kernels (layoutPacked).
func (t *matTask) layoutBlocks(lo, hi int) {
	cols, g := t.m.Cols, t.m.Groups()
	for b := lo; b < hi; b++ {
		k := rowPackTokens * b
		xq, sx, gsum, rows := t.layoutSource(k)
		rowPackX8(t.x4[k*cols:(k+rowPackTokens)*cols], t.sx4[k*g:(k+rowPackTokens)*g], t.gsum4[k*g:(k+rowPackTokens)*g],
			xq, sx, gsum, rows, cols, g)
	}
}

// layoutPacked lays t's quantized tokens out in blocks of eight (and four)
// for the multi-token kernels.
func (p *Pool) layoutPacked(t *matTask) {
	m, n := t.m, t.n
	cols, g := m.Cols, m.Groups()
	t.blocks = n / rowPackTokens
	// Four of the tokens past the blocks, laid out for the 4-token kernels
	// too.
	t.tail = n-t.blocks*rowPackTokens >= rowPackTail
	if nt := t.laidOut(); nt > 0 {
		t.x4, t.sx4, t.gsum4 = t.quantScratch(nt, cols, g)
		if p.splitPrep(n) {
			p.For(t.blocks, rowPackTokens*cols, t.layoutBlocks)
		} else {
			t.layoutBlocks(0, t.blocks)
		}
		if t.tail {
			k := rowPackTokens * t.blocks
			xq, sx, gsum, rows := t.layoutSource(k)
			rowPackXN(t.x4[k*cols:(k+rowPackTail)*cols], t.sx4[k*g:(k+rowPackTail)*g], t.gsum4[k*g:(k+rowPackTail)*g],
				xq, sx, gsum, rows, cols, g, rowPackTail)
		}
	}
}
