package cpu

// MatVec computes y = M·x: len(x) >= Cols, y[:Rows] is overwritten. Rows are
// split across the pool. For quantized matrices the dequantization is fused:
// per group, s·Σ(q·x) + b·Σx, with the group sums of x computed once.
func (p *Pool) MatVec(y []float32, m *Matrix, x []float32) {
	p.MatMul(y, m, x, 1)
}

// MatMul computes y[t] = M·x[t] for n tokens: x is [n, Cols] and y [n, Rows],
// both row-major. Each worker takes a range of rows and, row by row, computes
// the row's product with every token while the row is in cache, so a prefill
// chunk reads the weights from memory once instead of n times.
func (p *Pool) MatMul(y []float32, m *Matrix, x []float32, n int) {
	rows, cols := m.Rows, m.Cols
	y = y[:n*rows]
	x = x[:n*cols]
	if m.Format == Affine {
		p.affineMatMul(y, m, x, n)
		return
	}
	level := p.level
	rb := m.RowBytes()
	p.For(rows, cols*n, func(lo, hi int) {
		var buf []float32
		if m.Format == F16 {
			buf = make([]float32, cols)
		}
		for r := lo; r < hi; r++ {
			raw := m.Data[r*rb : (r+1)*rb]
			switch m.Format {
			case F32:
				w := f32s(raw)
				for t := 0; t < n; t++ {
					xt := x[t*cols : (t+1)*cols]
					switch {
					case level >= levelAVX512:
						y[t*rows+r] = dotF32AVX512Slice(w, xt)
					case level >= levelAVX2:
						y[t*rows+r] = dotF32SIMD(w, xt)
					default:
						y[t*rows+r] = dotF32(w, xt)
					}
				}
			case BF16:
				w := u16s(raw)
				t := 0
				if level >= levelAVX2 {
					var out [4]float32
					for ; t+4 <= n; t += 4 {
						if level >= levelAVX512 {
							bf16Row4Wide(w, x[t*cols:(t+4)*cols], cols, &out)
						} else {
							bf16Row4SIMD(w, x[t*cols:(t+4)*cols], cols, &out)
						}
						y[t*rows+r], y[(t+1)*rows+r], y[(t+2)*rows+r], y[(t+3)*rows+r] = out[0], out[1], out[2], out[3]
					}
				}
				for ; t < n; t++ {
					xt := x[t*cols : (t+1)*cols]
					switch {
					case level >= levelAVX512:
						y[t*rows+r] = dotBF16AVX512Slice(w, xt)
					case level >= levelAVX2:
						y[t*rows+r] = dotBF16SIMD(w, xt)
					default:
						y[t*rows+r] = dotBF16(w, xt)
					}
				}
			case F16:
				if n == 1 {
					y[r] = dotF16(u16s(raw), x)
					continue
				}
				m.Row(buf, r)
				for t := 0; t < n; t++ {
					y[t*rows+r] = dotF32(buf, x[t*cols:(t+1)*cols])
				}
			default:
				panic("cpu: MatMul on matrix of format " + m.Format.String())
			}
		}
	})
}

// affineMatMul is MatMul for quantized matrices.
func (p *Pool) affineMatMul(y []float32, m *Matrix, x []float32, n int) {
	rows, cols, gs, g := m.Rows, m.Cols, m.GroupSize, m.Groups()
	if p.level >= levelAVX512 && wideAffine(m.Bits, gs) {
		p.affineMatMulWide(y, m, x, n)
		return
	}
	simd := p.level >= levelAVX2 && gs%32 == 0 && (m.Bits == 2 || m.Bits == 3 || m.Bits == 4 || m.Bits == 8)
	gsumBuf := p.buf.get(n * g)
	defer p.buf.put(gsumBuf)
	gsum := *gsumBuf
	for t := 0; t < n; t++ {
		groupSums(gsum[t*g:(t+1)*g], x[t*cols:(t+1)*cols], gs)
	}
	xp := x
	if simd && (m.Bits == 2 || m.Bits == 4) {
		xpBuf := p.buf.get(n * cols)
		defer p.buf.put(xpBuf)
		xp = *xpBuf
		for t := 0; t < n; t++ {
			permuteX(xp[t*cols:(t+1)*cols], x[t*cols:(t+1)*cols], m.Bits, 8)
		}
	}
	// The 4-token kernels want the group sums of each block of four tokens
	// interleaved [group][token].
	blocks := 0
	if simd && (m.Bits == 4 || m.Bits == 8) && gs%16 == 0 {
		blocks = n / 4
	}
	var gsum4 []float32
	if blocks > 0 {
		g4Buf := p.buf.get(blocks * 4 * g)
		defer p.buf.put(g4Buf)
		gsum4 = *g4Buf
		for b := 0; b < blocks; b++ {
			for j := 0; j < g; j++ {
				for k := 0; k < 4; k++ {
					gsum4[(b*g+j)*4+k] = gsum[(4*b+k)*g+j]
				}
			}
		}
	}
	rb := m.RowBytes()
	p.For(rows, cols*n, func(lo, hi int) {
		sbBuf := p.buf.get(2 * g)
		defer p.buf.put(sbBuf)
		scales, biases := (*sbBuf)[:g], (*sbBuf)[g:]
		for r := lo; r < hi; r++ {
			if simd && m.ScaleFormat == BF16 {
				cvtBF16SIMD(scales, u16s(m.Scales)[r*g:(r+1)*g])
				cvtBF16SIMD(biases, u16s(m.Biases)[r*g:(r+1)*g])
			} else {
				decodeFloats(scales, m.Scales, m.ScaleFormat, r*g)
				decodeFloats(biases, m.Biases, m.ScaleFormat, r*g)
			}
			raw := m.Data[r*rb : (r+1)*rb]
			var out [4]float32
			for b := 0; b < blocks; b++ {
				t := 4 * b
				affineRow4SIMD(m.Bits, raw, xp[t*cols:(t+4)*cols], cols, scales, biases, gsum4[b*4*g:(b+1)*4*g], gs, &out)
				y[t*rows+r], y[(t+1)*rows+r], y[(t+2)*rows+r], y[(t+3)*rows+r] = out[0], out[1], out[2], out[3]
			}
			for t := 4 * blocks; t < n; t++ {
				xt, gt := xp[t*cols:(t+1)*cols], gsum[t*g:(t+1)*g]
				// The 3-bit kernel reads one byte past each block: not past
				// the end of the data.
				if simd && (m.Bits != 3 || r < rows-1) {
					y[t*rows+r] = affineRowSIMD(m.Bits, raw, xt, scales, biases, gt, gs)
				} else {
					y[t*rows+r] = affineRowDot(m.Bits, gs, raw, xt, scales, biases, gt)
				}
			}
		}
	})
}

// permuteX reorders x for the SIMD kernels, which unpack codes by bit position
// rather than by element, `lanes` codes per vector (8 for AVX2, 16 for
// AVX-512): 4-bit codes per 2·lanes elements as [even | odd], 2-bit codes per
// 4·lanes elements with entry lanes·k+j = x[4j+k]. Other widths are copied.
func permuteX(dst, x []float32, bits, lanes int) {
	switch bits {
	case 4:
		for b := 0; b+2*lanes <= len(x); b += 2 * lanes {
			for i := 0; i < lanes; i++ {
				dst[b+i] = x[b+2*i]
				dst[b+lanes+i] = x[b+2*i+1]
			}
		}
	case 2:
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

// wideChunk is the number of rows whose scales the AVX-512 path converts to
// float32 at a time: enough to amortize the call, small enough for L1.
const wideChunk = 32

// affineMatMulWide is affineMatMul on the AVX-512 kernels (wideAffine holds).
// Each worker converts the scales of wideChunk rows at a time and hands the
// whole chunk to one multi-row kernel call per token, so the Go loop costs
// nothing per row; four tokens at a time share each decoded weight (4 and 8
// bits).
func (p *Pool) affineMatMulWide(y []float32, m *Matrix, x []float32, n int) {
	rows, cols, gs, g, bits := m.Rows, m.Cols, m.GroupSize, m.Groups(), m.Bits
	xp := x
	if bits == 2 || bits == 4 {
		xpBuf := p.buf.get(n * cols)
		defer p.buf.put(xpBuf)
		xp = *xpBuf
		for t := 0; t < n; t++ {
			permuteX(xp[t*cols:(t+1)*cols], x[t*cols:(t+1)*cols], bits, 16)
		}
	}
	blocks := 0
	if bits == 4 || bits == 8 {
		blocks = n / 4
	}
	rb := m.RowBytes()
	p.For(rows, cols*n, func(lo, hi int) {
		sbBuf := p.buf.get(2*wideChunk*g + g)
		defer p.buf.put(sbBuf)
		for c := lo; c < hi; c += wideChunk {
			ce := min(c+wideChunk, hi)
			k := ce - c
			scales, biases := (*sbBuf)[:k*g], (*sbBuf)[wideChunk*g:wideChunk*g+k*g]
			if m.ScaleFormat == BF16 && haveAVX2 {
				cvtBF16SIMD(scales, u16s(m.Scales)[c*g:ce*g])
				cvtBF16SIMD(biases, u16s(m.Biases)[c*g:ce*g])
			} else {
				decodeFloats(scales, m.Scales, m.ScaleFormat, c*g)
				decodeFloats(biases, m.Biases, m.ScaleFormat, c*g)
			}
			var out [4]float32
			for b := 0; b < blocks; b++ {
				t := 4 * b
				for r := c; r < ce; r++ {
					i := r - c
					affineRow4Wide(bits, m.Data[r*rb:(r+1)*rb], xp[t*cols:(t+4)*cols], cols, scales[i*g:(i+1)*g], biases[i*g:(i+1)*g], gs, &out)
					y[t*rows+r], y[(t+1)*rows+r], y[(t+2)*rows+r], y[(t+3)*rows+r] = out[0], out[1], out[2], out[3]
				}
			}
			// The 3-bit kernel reads 8 bytes past each row: the matrix's last
			// row runs in Go.
			last := ce
			if bits == 3 && ce == rows {
				last--
			}
			for t := 4 * blocks; t < n; t++ {
				xt := xp[t*cols : (t+1)*cols]
				if last > c {
					affineRowsWide(bits, m.Data[c*rb:last*rb], xt, scales[:(last-c)*g], biases[:(last-c)*g], y[t*rows+c:t*rows+last], gs)
				}
				if last < ce {
					i := last - c
					gsum := groupSums((*sbBuf)[2*wideChunk*g:], xt, gs)
					y[t*rows+last] = affineRowDot(bits, gs, m.Data[last*rb:ce*rb], xt, scales[i*g:(i+1)*g], biases[i*g:(i+1)*g], gsum)
				}
			}
		}
	})
}
