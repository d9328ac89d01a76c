package cpu

import (
	"sync"

	"github.com/fm-moe/fm/pkg/internal/half"
)

// MatVec computes y = M·x: len(x) >= Cols, y[:Rows] is overwritten. Rows are
// split across the pool. For quantized matrices the dequantization is fused.
func (p *Pool) MatVec(y []float32, m *Matrix, x []float32) {
	p.MatMul(y, m, x, 1)
}

// matTask is one MatMul's loop body over a range of rows, with everything
// the workers share; tasks are recycled so that a product allocates nothing.
type matTask struct {
	p     *Pool
	y, x  []float32
	m     *Matrix
	n     int
	body  func(t *matTask, lo, hi int)
	level int // kernels to use (AVX2 paths: simd below)
	simd  bool

	// affine
	xp, gsum, gsum4 []float32
	blocks          int

	// int8 mode (int8.go): quantized x and its per-group scales
	xq []int8
	sx []float32
	// four-token blocks of xq and sx (int8Block4), blocks of them; for a
	// rowPack, eight-token blocks of xq, sx and gsum (rowPackX8) in x4, sx4
	// and gsum4, then, when tail, rowPackTail more tokens (rowPackXN)
	x4   []int8
	sx4  []float32
	tail bool
	// where layoutPacked takes the tokens from when they are rows of
	// quantized x (prepPackedRows): token k is row srcRows[k] of src
	src     *quantRows
	srcRows []int
	// the scratch buffers behind the prepared x (scratch: xq, sx/gsum, x4,
	// sx4/gsum4 or xp, by mode), returned by release
	held  [4]*[]float32
	nHeld int
	// units is the number of work units of the prepared product (rows, or
	// a packed product's row blocks), cost the multiply-adds of one
	units, cost int
}

// scratch takes n floats of scratch that t holds until release.
func (t *matTask) scratch(n int) *[]float32 {
	b := t.p.buf.get(n)
	t.held[t.nHeld] = b
	t.nHeld++
	return b
}

// release returns the scratch buffers t holds for its prepared x.
func (t *matTask) release() {
	for i := range t.nHeld {
		t.p.buf.put(t.held[i])
		t.held[i] = nil
	}
	t.nHeld = 0
}

func (t *matTask) run(lo, hi int) { t.body(t, lo, hi) }

var matTasks = sync.Pool{New: func() any { return new(matTask) }}

// MatMul computes y[t] = M·x[t] for n tokens: x is [n, Cols] and y [n, Rows],
// both row-major. Each worker takes a range of rows and, row by row, computes
// the row's product with every token while the row is in cache, so a prefill
// chunk reads the weights from memory once instead of n times (four tokens
// at a time share each decoded weight where a 4-token kernel exists).
func (p *Pool) MatMul(y []float32, m *Matrix, x []float32, n int) {
	t := matTasks.Get().(*matTask)
	*t = matTask{p: p, y: y[:n*m.Rows], x: x[:n*m.Cols], m: m, n: n, level: p.level}
	p.prepare(t)
	p.forRanger(t.units, t.cost, t)
	t.release()
	*t = matTask{}
	matTasks.Put(t)
}

// prepare readies t (p, y, x, m, n and level set) to run: it picks the
// kernels, lays x out as they want it, in scratch t holds until release,
// and sets body, units and cost.
func (p *Pool) prepare(t *matTask) {
	m := t.m
	t.units, t.cost = m.Rows, m.Cols*t.n
	switch {
	case m.Format != Affine:
		t.body = (*matTask).floatRows
	case p.int8:
		p.prepInt8(t)
	case p.level >= levelAVX512 && wideAffine(m.Bits, m.GroupSize):
		p.prepWide(t)
	default:
		p.prepAffine(t)
	}
}

// floatRows is MatMul's body for F32, BF16 and F16 matrices.
func (t *matTask) floatRows(lo, hi int) {
	m, x, y, n, level := t.m, t.x, t.y, t.n, t.level
	rows, cols := m.Rows, m.Cols
	rb := m.RowBytes()
	var buf []float32
	if m.Format == F16 && n > 1 {
		b := t.p.buf.get(cols)
		defer t.p.buf.put(b)
		buf = *b
	}
	// BF16 rows against four tokens at a time, token blocks outermost
	// (bf16Tiled); the tokens past the last four below.
	k4 := 0
	if m.Format == BF16 && (level >= levelAVX2 || haveNEON) {
		k4 = n &^ 3
		t.bf16Tiled(lo, hi, k4)
	}
	for r := lo; r < hi; r++ {
		raw := m.Data[r*rb : (r+1)*rb]
		switch m.Format {
		case F32:
			w := f32s(raw)
			for k := 0; k < n; k++ {
				xt := x[k*cols : (k+1)*cols]
				if level >= levelAVX2 {
					y[k*rows+r] = dotF32Wide(w, xt, level >= levelAVX512)
				} else if haveNEON {
					y[k*rows+r] = f32DotArch(w, xt)
				} else {
					y[k*rows+r] = dotF32(w, xt)
				}
			}
		case BF16:
			w := u16s(raw)
			for k := k4; k < n; k++ {
				xt := x[k*cols : (k+1)*cols]
				if level >= levelAVX2 {
					y[k*rows+r] = dotBF16Wide(w, xt, level >= levelAVX512)
				} else if haveNEON {
					y[k*rows+r] = bf16DotArch(w, xt)
				} else {
					y[k*rows+r] = dotBF16(w, xt)
				}
			}
		case F16:
			if n == 1 {
				y[r] = dotF16(u16s(raw), x)
				continue
			}
			m.Row(buf, r)
			for k := 0; k < n; k++ {
				y[k*rows+r] = dotF32(buf, x[k*cols:(k+1)*cols])
			}
		default:
			panic("cpu: MatMul on matrix of format " + m.Format.String())
		}
	}
}

// bf16TileBytes is how many bytes of a BF16 matrix's rows bf16Tiled meets
// with one four tokens' x: they stay in L2 while the x (32 KB at 2048
// columns) stays in L1.
const bf16TileBytes = 256 << 10

// bf16Tiled computes rows [lo, hi) of a BF16 matrix for tokens [0, k4) (a
// multiple of 4), four tokens per kernel call: per block of rows that fits
// L2, every four tokens meet all the block's rows while their x is in L1.
// With the rows outermost, every 4 KB row streamed all n tokens' x from L3
// (a 512-token prefill's router: 4 MB of x per row); with 16-token blocks
// outermost, x came from L2 at half the kernel's in-L1 rate.
func (t *matTask) bf16Tiled(lo, hi, k4 int) {
	m, x, y, level := t.m, t.x, t.y, t.level
	rows, cols, rb := m.Rows, m.Cols, m.RowBytes()
	block := max(1, bf16TileBytes/rb)
	split := level >= levelAVX512 && bf16Split(cols) && k4 > 0
	var out [4]float32
	var outs [row4SplitRows][4]float32
	var acc []float32
	if split {
		ab := t.p.buf.get(row4AccFloats)
		defer t.p.buf.put(ab)
		acc = *ab
	}
	for r0 := lo; r0 < hi; r0 += block {
		r1 := min(r0+block, hi)
		for k := 0; k < k4; k += 4 {
			xk := x[k*cols : (k+4)*cols]
			if split {
				// Rows wider than L1 holds four tokens' x for, in parts
				// (bf16Rows4Split), eight rows at a time.
				for s0 := r0; s0 < r1; s0 += row4SplitRows {
					s1 := min(s0+row4SplitRows, r1)
					o := outs[:s1-s0]
					bf16Rows4Split(u16s(m.Data[s0*rb:s1*rb]), cols, xk, cols, acc, o)
					for i, v := range o {
						storeTokens4(y, rows, k, s0+i, v)
					}
				}
				continue
			}
			for r := r0; r < r1; r++ {
				w := u16s(m.Data[r*rb : (r+1)*rb])
				switch {
				case level >= levelAVX512:
					bf16Row4Wide(w, xk, cols, &out)
				case level >= levelAVX2:
					bf16Row4SIMD(w, xk, cols, &out)
				default:
					bf16Row4Arch(w, xk, cols, &out)
				}
				storeTokens4(y, rows, k, r, out)
			}
		}
	}
}

// prepAffine prepares MatMul for quantized matrices on the AVX2 or generic
// kernels: per group, s·Σ(q·x) + b·Σx, with the group sums of x computed once.
func (p *Pool) prepAffine(t *matTask) {
	m, x, n := t.m, t.x, t.n
	cols, gs, g := m.Cols, m.GroupSize, m.Groups()
	simd := p.level >= levelAVX2 && gs%32 == 0 && (m.Bits == 2 || m.Bits == 3 || m.Bits == 4 || m.Bits == 8)
	t.simd = simd
	t.gsum = *t.scratch(n * g)
	for k := 0; k < n; k++ {
		groupSums(t.gsum[k*g:(k+1)*g], x[k*cols:(k+1)*cols], gs)
	}
	t.xp = x
	if simd && (m.Bits == 2 || m.Bits == 4) {
		t.xp = *t.scratch(n * cols)
		for k := 0; k < n; k++ {
			permuteX(t.xp[k*cols:(k+1)*cols], x[k*cols:(k+1)*cols], m.Bits, 8)
		}
	}
	// The 4-token kernels want the group sums of each block of four tokens
	// interleaved [group][token].
	if simd && (m.Bits == 4 || m.Bits == 8) && gs%16 == 0 || haveNEON && neonAffine4(m.Bits, gs) {
		t.blocks = n / 4
	}
	if t.blocks > 0 {
		t.gsum4 = *t.scratch(t.blocks * 4 * g)
		for b := 0; b < t.blocks; b++ {
			for j := 0; j < g; j++ {
				for k := 0; k < 4; k++ {
					t.gsum4[(b*g+j)*4+k] = t.gsum[(4*b+k)*g+j]
				}
			}
		}
	}
	t.body = (*matTask).affineRows
}

// affineRows is the body prepAffine sets.
func (t *matTask) affineRows(lo, hi int) {
	m, y, xp, n, simd, blocks := t.m, t.y, t.xp, t.n, t.simd, t.blocks
	rows, cols, gs, g := m.Rows, m.Cols, m.GroupSize, m.Groups()
	rb := m.RowBytes()
	sbBuf := t.p.buf.get(2 * g)
	defer t.p.buf.put(sbBuf)
	scales, biases := (*sbBuf)[:g], (*sbBuf)[g:]
	for r := lo; r < hi; r++ {
		if simd && m.ScaleFormat == BF16 {
			half.DecodeBF16(scales, m.Scales[2*r*g:])
			half.DecodeBF16(biases, m.Biases[2*r*g:])
		} else {
			decodeFloats(scales, m.Scales, m.ScaleFormat, r*g)
			decodeFloats(biases, m.Biases, m.ScaleFormat, r*g)
		}
		raw := m.Data[r*rb : (r+1)*rb]
		var out [4]float32
		for b := 0; b < blocks; b++ {
			k := 4 * b
			if haveNEON {
				affineRow4Arch(m.Bits, raw, xp[k*cols:(k+4)*cols], cols, scales, biases, t.gsum4[b*4*g:(b+1)*4*g], gs, &out)
			} else {
				affineRow4SIMD(m.Bits, raw, xp[k*cols:(k+4)*cols], cols, scales, biases, t.gsum4[b*4*g:(b+1)*4*g], gs, &out)
			}
			storeTokens4(y, rows, k, r, out)
		}
		for k := 4 * blocks; k < n; k++ {
			xt, gt := xp[k*cols:(k+1)*cols], t.gsum[k*g:(k+1)*g]
			// The 3-bit kernel reads one byte past each block: not past
			// the end of the data.
			if simd && (m.Bits != 3 || r < rows-1) {
				y[k*rows+r] = affineRowSIMD(m.Bits, raw, xt, scales, biases, gt, gs)
			} else {
				y[k*rows+r] = affineRowDot(m.Bits, gs, raw, xt, scales, biases, gt)
			}
		}
	}
}

// wideChunk is the number of rows whose scales the AVX-512 path converts to
// float32 at a time: enough to amortize the call, small enough for L1.
const wideChunk = 32

// prepWide is prepAffine for the AVX-512 kernels (wideAffine holds).
// They dequantize w = s·q + b through a per-group table and need no group
// sums; x is permuted for 2 and 4 bits.
func (p *Pool) prepWide(t *matTask) {
	m, x, n := t.m, t.x, t.n
	cols, bits := m.Cols, m.Bits
	t.xp = x
	if bits == 2 || bits == 4 {
		t.xp = *t.scratch(n * cols)
		for k := 0; k < n; k++ {
			permuteX(t.xp[k*cols:(k+1)*cols], x[k*cols:(k+1)*cols], bits, 16)
		}
	}
	t.blocks = n / 4 // every width wideAffine admits has a 4-token kernel
	t.body = (*matTask).wideRows
}

// wideScalePrefetch: wideRows prefetches the next chunk's scales and biases
// in a one-token product (false for A/B measurements).
var wideScalePrefetch = true

// row8Kernels lets wideRows take two blocks of four tokens at once where an
// eight-token kernel exists (row8Wide; false for A/B measurements).
var row8Kernels = true

// row4Parts lets wideRows and bf16Tiled walk rows wider than
// row4WholeMaxCols in parts (row4Split, bf16Split; false for A/B
// measurements and the bit-for-bit tests).
var row4Parts = true

// row4SplitRows is how many rows affineRows4Split walks part by part: their
// accumulators (512 bytes a row) stay in L1 beside the part's x.
const row4SplitRows = 8

// row4AccFloats is the size of the accumulators that affineRows4Split and
// bf16Rows4Split keep between parts, 128 floats a row. The callers take
// them from the pool's scratch once per product: a local array in the
// walkers was cleared (4 KB) on every call, though the kernels never read
// it before writing it.
const row4AccFloats = row4SplitRows * 128

// wideRows is the body prepWide sets. It converts the scales of wideChunk
// rows at a time and hands the whole chunk to one multi-row kernel call per
// token, so the Go loop costs nothing per row; blocks of four tokens go
// through the 4-token kernels row by row, two blocks at a time through the
// 8-token kernel where one exists for the matrix (row8Wide).
func (t *matTask) wideRows(lo, hi int) {
	m, y, xp, n, blocks := t.m, t.y, t.xp, t.n, t.blocks
	rows, cols, gs, g, bits := m.Rows, m.Cols, m.GroupSize, m.Groups(), m.Bits
	rb := m.RowBytes()
	eight := row8Wide(bits, cols)
	split := row4Split(bits, cols) && blocks > 0
	var acc []float32
	if split {
		ab := t.p.buf.get(row4AccFloats)
		defer t.p.buf.put(ab)
		acc = *ab
	}
	sbBuf := t.p.buf.get(2*wideChunk*g + g)
	defer t.p.buf.put(sbBuf)
	sb := len(m.Scales) / (rows * g) // bytes of one scale
	for c := lo; c < hi; c += wideChunk {
		ce := min(c+wideChunk, hi)
		scales, biases := chunkScales(m, *sbBuf, c, ce)
		if n == 1 && wideScalePrefetch {
			// The next chunk's scales and biases, while this one's
			// weights stream: they are read a few KB at a time, between
			// long runs of codes, too seldom for the hardware's prefetcher
			// to run ahead of them.
			nc := min(ce+wideChunk, hi)
			prefetch(m.Scales[ce*g*sb : nc*g*sb])
			prefetch(m.Biases[ce*g*sb : nc*g*sb])
		}
		// The 3-bit kernels read 8 bytes past each row: the matrix's last row
		// runs in Go.
		last := ce
		if bits == 3 && ce == rows {
			last--
		}
		var out [4]float32
		var out8 [8]float32
		var outs [row4SplitRows][4]float32
		for b := 0; b < blocks; b++ {
			k := 4 * b
			if eight && b+1 < blocks {
				// Two blocks at once: the weights decoded once for eight
				// tokens, the same results.
				for r := c; r < last; r++ {
					i := r - c
					affineRow8Wide(m.Data[r*rb:(r+1)*rb], xp[k*cols:(k+8)*cols], cols, scales[i*g:(i+1)*g], biases[i*g:(i+1)*g], gs, &out8)
					for j, v := range out8 {
						y[(k+j)*rows+r] = v
					}
				}
				b++
				continue
			}
			if split {
				for r0 := c; r0 < last; r0 += row4SplitRows {
					r1 := min(r0+row4SplitRows, last)
					o := outs[:r1-r0]
					affineRows4Split(bits, m.Data[r0*rb:r1*rb], rb, xp[k*cols:(k+4)*cols], cols, scales[(r0-c)*g:(r1-c)*g], biases[(r0-c)*g:(r1-c)*g], gs, acc, o)
					for i, v := range o {
						storeTokens4(y, rows, k, r0+i, v)
					}
				}
				continue
			}
			for r := c; r < last; r++ {
				i := r - c
				affineRow4Wide(bits, m.Data[r*rb:(r+1)*rb], xp[k*cols:(k+4)*cols], cols, scales[i*g:(i+1)*g], biases[i*g:(i+1)*g], gs, &out)
				storeTokens4(y, rows, k, r, out)
			}
		}
		for k := 4 * blocks; k < n && last > c; k++ {
			affineRowsWide(bits, m.Data[c*rb:last*rb], xp[k*cols:(k+1)*cols], scales[:(last-c)*g], biases[:(last-c)*g], y[k*rows+c:k*rows+last], gs)
		}
		for k := 0; k < n && last < ce; k++ {
			xt, i := xp[k*cols:(k+1)*cols], last-c
			gsum := groupSums((*sbBuf)[2*wideChunk*g:], xt, gs)
			y[k*rows+last] = affineRowDot(bits, gs, m.Data[last*rb:ce*rb], xt, scales[i*g:(i+1)*g], biases[i*g:(i+1)*g], gsum)
		}
	}
}

// permuteX reorders x for the SIMD kernels, which unpack codes by bit position
// rather than by element, `lanes` codes per vector (8 for AVX2, 16 for
// AVX-512). 4-bit, AVX2: per 16 elements as [even | odd]; 4-bit, AVX-512:
// per 64 elements, entry 16k+j = x[8j+2k] for j < 8 and x[8(j−8)+2k+1] for
// j ≥ 8 (see q4RowsAVX512); 2-bit: per 4·lanes elements with entry
// lanes·k+j = x[4j+k]. Other widths are copied.
func permuteX(dst, x []float32, bits, lanes int) {
	switch {
	case bits == 4 && lanes == 16:
		for b := 0; b+64 <= len(x); b += 64 {
			for k := 0; k < 4; k++ {
				for j := 0; j < 8; j++ {
					dst[b+16*k+j] = x[b+8*j+2*k]
					dst[b+16*k+8+j] = x[b+8*j+2*k+1]
				}
			}
		}
	case bits == 4:
		for b := 0; b+2*lanes <= len(x); b += 2 * lanes {
			for i := 0; i < lanes; i++ {
				dst[b+i] = x[b+2*i]
				dst[b+lanes+i] = x[b+2*i+1]
			}
		}
	case bits == 2:
		for b := 0; b+4*lanes <= len(x); b += 4 * lanes {
			for k := 0; k < 4; k++ {
				for j := 0; j < lanes; j++ {
					dst[b+lanes*k+j] = x[b+4*j+k]
				}
			}
		}
	default:
		copy(dst, x)
	}
}

// groupSums writes Σx over each group of gs consecutive elements.
func groupSums(dst, x []float32, gs int) []float32 {
	for g := range dst {
		var s float32
		for _, v := range x[g*gs : (g+1)*gs] {
			s += v
		}
		dst[g] = s
	}
	return dst
}

// affineRowDot is one affine row (raw codes, decoded scales and biases) dotted
// with x, given the group sums of x.
func affineRowDot(bits, gs int, raw []byte, x, scales, biases, gsum []float32) float32 {
	if haveNEON && neonAffine(bits, gs) {
		return affineRowArch(bits, raw, x, scales, biases, gsum, gs)
	}
	return affineRowGo(bits, gs, raw, x, scales, biases, gsum)
}

// affineRowGo is affineRowDot in Go: the twin of the NEON row kernels.
func affineRowGo(bits, gs int, raw []byte, x, scales, biases, gsum []float32) float32 {
	gb := gs * bits / 8 // bytes per group
	var acc float32
	for j := range scales {
		codes, xg := raw[j*gb:(j+1)*gb], x[j*gs:(j+1)*gs]
		var d float32
		switch bits {
		case 4:
			d = dotQ4(u32s(codes), xg)
		case 8:
			d = dotQ8(codes, xg)
		case 2:
			d = dotQ2(u32s(codes), xg)
		default:
			d = dotQBits(codes, xg, bits)
		}
		acc += scales[j]*d + biases[j]*gsum[j]
	}
	return acc
}

// storeTokens4 puts row r's results for tokens k…k+3 (a four-token kernel's
// out) into y, which holds rows results a token.
func storeTokens4(y []float32, rows, k, r int, v [4]float32) {
	y[k*rows+r], y[(k+1)*rows+r], y[(k+2)*rows+r], y[(k+3)*rows+r] = v[0], v[1], v[2], v[3]
}
