package cpu

import (
	"fmt"

	"github.com/fm-moe/fm/pkg/backend"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestBindDensePacksAtFirstProduct: in int8 mode on a VNNI CPU, a 4-bit
// dense matrix gets its row-interleaved copy at its first product (not for
// Embed), the product matches the int8 reference, and Embed still reads the
// original rows; in exact mode, or with FM_ROWPACK=0, no copy is made.
func TestBindDensePacksAtFirstProduct(t *testing.T) {
	rng := rand.New(rand.NewPCG(35, 36))
	src := randomMatrix(rng, 37, 256, Affine, 4, 64, BF16)
	for _, mode := range []backend.Matmul{backend.MatmulExact, backend.MatmulInt8} {
		d, err := OpenDevice(backend.Options{Threads: 2, Matmul: mode})
		if err != nil {
			t.Fatal(err)
		}
		w, err := d.BindDense(src.Desc(), src.Data, src.Scales, src.Biases)
		if err != nil {
			t.Fatal(err)
		}
		row, _ := d.NewTensor(1, src.Cols)
		d.Embed(row, w, []int{36})
		want := make([]float32, src.Cols)
		src.Row(want, 36)
		if got := row.(*Tensor).data; !slices.Equal(got, want) || bound(w).m.packed != nil {
			t.Fatalf("%s: Embed gave another row or built the copy (%v)", mode, bound(w).m.packed != nil)
		}
		x, _ := d.NewTensor(1, src.Cols)
		xv := randomVector(rng, src.Cols)
		d.Upload(x, xv)
		y, _ := d.NewTensor(1, src.Rows)
		d.MatMul(y, w, x)
		wantPacked := mode == backend.MatmulInt8 && haveVNNI && !rowPackOff
		if got := bound(w).m.packed != nil; got != wantPacked {
			t.Fatalf("%s: copy built %v, want %v", mode, got, wantPacked)
		}
		if mode == backend.MatmulInt8 {
			ref, mag, _ := refInt8(src, xv)
			for r, v := range y.(*Tensor).data {
				if d := math.Abs(float64(v) - ref[r]); d > 1e-5*mag[r]+1e-6 {
					t.Fatalf("row %d: %g, int8 reference %g", r, v, ref[r])
				}
			}
		}
	}
}

// rowPackCases: 2-, 3-, 4- and 8-bit bf16 matrices of every packable group size, row
// counts below, at and past multiples of 16, and group counts from 1 to 33.
func rowPackCases() []matCase {
	var cs []matCase
	for _, bits := range []int{2, 3, 4, 8} {
		for _, gs := range []int{32, 64, 128} {
			for _, rows := range []int{1, 15, 16, 17, 31, 32, 48, 70} {
				for _, groups := range []int{1, 2, 3, 5, 17, 33} {
					if gs == 128 && groups > 5 || gs == 32 && rows > 32 && groups > 5 || bits != 4 && groups > 17 {
						continue // enough of these; keep the test short
					}
					cs = append(cs, matCase{rows: rows, cols: gs * groups, f: Affine, bits: bits, gs: gs, sf: BF16})
				}
			}
		}
	}
	return cs
}

// TestRowPackMatchesReference: a matrix with a rowPack computes, in int8
// mode at every kernel level (the packed VNNI kernels where they run, the
// row kernels and Go twin elsewhere), the int8 product of refInt8 to
// float32 accuracy, for 1–9, 12, 13, 17 and 37 tokens (the 8-token kernel,
// the 4-token one for four of the rest, the 1-token one for the others; 37
// tokens prepare x over the workers, splitPrep) and rows past the last block.
func TestRowPackMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	pools := int8Pools()
	for _, c := range rowPackCases() {
		m := randomMatrix(rng, c.rows, c.cols, c.f, c.bits, c.gs, c.sf)
		if rowPackable(m) {
			m.packed = packRows(m, nil)
		}
		tokens := []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 17, 37}
		if testing.Short() { // the arm64 run under qemu: no packed kernels there
			tokens = []int{1, 9}
		}
		for _, n := range tokens {
			x := randomVector(rng, n*c.cols)
			type refs struct{ ref, mag []float64 }
			want := make([]refs, n)
			for tok := range want {
				want[tok].ref, want[tok].mag, _ = refInt8(m, x[tok*c.cols:(tok+1)*c.cols])
			}
			for _, p := range pools {
				y := make([]float32, n*c.rows)
				p.MatMul(y, m, x, n)
				for tok := 0; tok < n; tok++ {
					for r, ref := range want[tok].ref {
						got := float64(y[tok*c.rows+r])
						if d := math.Abs(got - ref); d > 1e-5*want[tok].mag[r]+1e-6 || math.IsNaN(got) {
							t.Fatalf("%v packed %v n=%d token %d row %d workers %d level %d: %g, int8 reference %g (|Δ| %g)",
								c, m.packed != nil, n, tok, r, p.Workers(), p.level, got, ref, d)
						}
					}
				}
			}
		}
	}
}

// TestRowPackTwins: the Go twins of the packed layout agree with the int8
// reference, and the VNNI kernels with the twins (same integer dots; the
// float sums to 1e-5 of their magnitude).
func TestRowPackTwins(t *testing.T) {
	rng := rand.New(rand.NewPCG(33, 34))
	for _, c := range rowPackCases() {
		if c.rows < rowPackRows {
			continue
		}
		t.Run(fmt.Sprint(c), func(t *testing.T) {
			m := randomMatrix(rng, c.rows, c.cols, c.f, c.bits, c.gs, c.sf)
			pk := packRows(m, nil)
			if pp := packRows(m, newPool(3, levelGeneric)); string(pp.data) != string(pk.data) || pp.blocks != pk.blocks {
				t.Fatal("packing on three workers differs from packing on one")
			}
			checkRowPackLayout(t, m, pk)
			g, gs, cols := m.Groups(), m.GroupSize, m.Cols
			rows := pk.blocks * rowPackRows
			x := randomVector(rng, rowPackTokens*cols)
			xq := make([]int8, rowPackTokens*cols)
			sx, gsum := make([]float32, rowPackTokens*g), make([]float32, rowPackTokens*g)
			ref := make([][]float64, rowPackTokens)
			mag := make([][]float64, rowPackTokens)
			for k := 0; k < rowPackTokens; k++ {
				quantizeX(xq[k*cols:(k+1)*cols], sx[k*g:(k+1)*g], gsum[k*g:(k+1)*g], x[k*cols:(k+1)*cols], gs)
				ref[k], mag[k], _ = refInt8(m, x[k*cols:(k+1)*cols])
			}
			x8 := make([]int8, rowPackTokens*cols)
			sx8, gs8 := make([]float32, rowPackTokens*g), make([]float32, rowPackTokens*g)
			rowPackX8(x8, sx8, gs8, xq, sx, gsum, nil, cols, g)

			check := func(what string, y []float32, k int) {
				t.Helper()
				for r := 0; r < rows; r++ {
					if d := math.Abs(float64(y[r]) - ref[k][r]); d > 1e-5*mag[k][r]+1e-6 || math.IsNaN(float64(y[r])) {
						t.Fatalf("%s token %d row %d: %g, int8 reference %g", what, k, r, y[r], ref[k][r])
					}
				}
			}
			// checkKernel checks the first n tokens of a kernel's results
			// (rows apart) against the reference and its Go twin's.
			checkKernel := func(what string, ya, twin []float32, n int) {
				t.Helper()
				for k := 0; k < n; k++ {
					check(what, ya[k*rows:(k+1)*rows], k)
					for r := 0; r < rows; r++ {
						if d := math.Abs(float64(ya[k*rows+r] - twin[k*rows+r])); d > 1e-5*mag[k][r]+1e-6 {
							t.Fatalf("token %d row %d: %s %g, Go twin %g", k, r, what, ya[k*rows+r], twin[k*rows+r])
						}
					}
				}
			}
			y8 := make([]float32, rowPackTokens*rows)
			rowPack8Go(pk.data, x8, sx8, gs8, y8, pk.blocks, gs, pk.bits, rows)
			for k := 0; k < rowPackTokens; k++ {
				y := make([]float32, rows)
				rowPackGo(pk.data, xq[k*cols:(k+1)*cols], sx[k*g:(k+1)*g], gsum[k*g:(k+1)*g], y, pk.blocks, gs, pk.bits)
				check("rowPackGo", y, k)
				check("rowPack8Go", y8[k*rows:(k+1)*rows], k)
				if !haveVNNI {
					continue
				}
				ya := make([]float32, rows)
				rowPack1(pk.data, xq[k*cols:(k+1)*cols], sx[k*g:(k+1)*g], gsum[k*g:(k+1)*g], ya, gs, pk.bits)
				check("rowPack1VNNI", ya, k)
				for r := range ya {
					if d := math.Abs(float64(ya[r] - y[r])); d > 1e-5*mag[k][r]+1e-6 {
						t.Fatalf("token %d row %d: rowPack1VNNI %g, Go twin %g", k, r, ya[r], y[r])
					}
				}
			}
			// The first four tokens through the four-token layout and kernel:
			// the twin is rowPack8Go bit for bit, the kernel its twin's
			// integer dots with float sums to 1e-5.
			x4 := make([]int8, rowPackTail*cols)
			sx4, gs4 := make([]float32, rowPackTail*g), make([]float32, rowPackTail*g)
			rowPackXN(x4, sx4, gs4, xq, sx, gsum, nil, cols, g, rowPackTail)
			y4 := make([]float32, rowPackTail*rows)
			rowPack4Go(pk.data, x4, sx4, gs4, y4, pk.blocks, gs, pk.bits, rows)
			for i := range y4 {
				if math.Float32bits(y4[i]) != math.Float32bits(y8[i]) {
					t.Fatalf("token %d row %d: rowPack4Go %g, rowPack8Go %g", i/rows, i%rows, y4[i], y8[i])
				}
			}
			// Plain and prefetching (PF) eight-token kernels: the
			// prefetch, here past the end of pk, changes no result.
			for _, ahead := range []int{0, len(pk.data)} {
				if !haveVNNI {
					break
				}
				if ahead == 0 {
					ya := make([]float32, rowPackTail*rows)
					rowPack4(pk.data, x4, sx4, gs4, ya, pk.blocks, gs, pk.bits, rows)
					checkKernel("rowPack4VNNI", ya, y4, rowPackTail)
				}
				ya := make([]float32, rowPackTokens*rows)
				rowPack8(pk.data, x8, sx8, gs8, ya, pk.blocks, gs, pk.bits, rows, ahead)
				checkKernel(fmt.Sprintf("rowPack8VNNI ahead %d", ahead), ya, y8, rowPackTokens)
			}
		})
	}
}

// checkRowPackLayout checks every byte of pk against the layout rowpack.go
// documents, from the codes (refCode) and scales of m.
func checkRowPackLayout(t *testing.T, m *Matrix, pk *rowPack) {
	t.Helper()
	gs, g := m.GroupSize, m.Groups()
	rec := rowPackRecord(gs, m.Bits)
	if pk.blocks != m.Rows/rowPackRows || pk.bits != m.Bits || len(pk.data) != pk.blocks*g*rec {
		t.Fatalf("%d blocks in %d bytes for %d rows", pk.blocks, len(pk.data), m.Rows)
	}
	for b := 0; b < pk.blocks; b++ {
		for j := 0; j < g; j++ {
			r0 := pk.data[(b*g+j)*rec:]
			for r := 0; r < rowPackRows; r++ {
				row := b*rowPackRows + r
				for k := 0; k < gs/16 && m.Bits == 2; k++ {
					for i := 0; i < 4; i++ {
						c := j*gs + 16*k + i
						want := byte(refCode(m, row, c) | refCode(m, row, c+4)<<2 | refCode(m, row, c+8)<<4 | refCode(m, row, c+12)<<6)
						if got := r0[64*k+4*r+i]; got != want {
							t.Fatalf("block %d group %d step %d row %d byte %d: %#x, want %#x", b, j, k, r, i, got, want)
						}
					}
				}
				for k := 0; k < gs/32 && m.Bits == 3; k++ {
					for i := 0; i < 4; i++ {
						var lo [2]byte
						var hi byte
						for q := 0; q < 8; q++ {
							code := refCode(m, row, j*gs+32*k+4*q+i)
							lo[q/4] |= byte(code&3) << (2 * (q % 4))
							hi |= byte(code>>2) << q
						}
						got := []byte{r0[192*k+4*r+i], r0[192*k+64+4*r+i], r0[192*k+128+4*r+i]}
						if want := []byte{lo[0], lo[1], hi}; !slices.Equal(got, want) {
							t.Fatalf("block %d group %d step %d row %d byte %d: %#x, want %#x", b, j, k, r, i, got, want)
						}
					}
				}
				for k := 0; k < gs/8 && m.Bits != 2 && m.Bits != 3; k++ {
					for i := 0; i < 4; i++ {
						c := j*gs + 8*k + i
						step := r0[16*m.Bits*k:]
						got, want := []byte{step[4*r+i]}, []byte{byte(refCode(m, row, c) | refCode(m, row, c+4)<<4)}
						if m.Bits == 8 {
							got = append(got[:1], step[64+4*r+i])
							want = []byte{byte(refCode(m, row, c)), byte(refCode(m, row, c+4))}
						}
						if !slices.Equal(got, want) {
							t.Fatalf("block %d group %d step %d row %d byte %d: %#x, want %#x", b, j, k, r, i, got, want)
						}
					}
				}
				sb := u16s(r0[rec-64:])
				if sb[r] != u16s(m.Scales)[row*g+j] || sb[16+r] != u16s(m.Biases)[row*g+j] {
					t.Fatalf("block %d group %d row %d: scale/bias %#x/%#x", b, j, r, sb[r], sb[16+r])
				}
			}
		}
	}
}

// TestPackBlocksTwin: the packer's AVX-512 path writes the same bytes as its
// Go twin, for every packable case and for block ranges that start and end
// inside the matrix (the pool's split).
func TestPackBlocksTwin(t *testing.T) {
	if !haveAVX512 {
		t.Skip("no AVX-512: packBlocks is the Go twin")
	}
	rng := rand.New(rand.NewPCG(37, 38))
	for _, c := range rowPackCases() {
		m := randomMatrix(rng, c.rows, c.cols, c.f, c.bits, c.gs, c.sf)
		if !rowPackable(m) {
			continue
		}
		nb := m.Rows / rowPackRows
		size := nb * m.Groups() * rowPackRecord(m.GroupSize, m.Bits)
		for _, r := range [][2]int{{0, nb}, {nb / 2, nb}, {0, (nb + 1) / 2}} {
			want, got := make([]byte, size), make([]byte, size)
			packBlocksGo(want, m, r[0], r[1])
			packBlocks(got, m, r[0], r[1])
			if i := slices.Compare(got, want); i != 0 {
				for j := range got {
					if got[j] != want[j] {
						t.Fatalf("%v blocks %v: byte %d is %#x, the Go twin wrote %#x", c, r, j, got[j], want[j])
					}
				}
			}
		}
	}
}

// BenchmarkRowPackWarm is the packer alone (one worker, the output already
// faulted in), in GB/s of the matrix's bytes: what a reused buffer costs.
// "simd" is packBlocks (the AVX-512 path for 4-bit codes, else the Go one).
func BenchmarkRowPackWarm(b *testing.B) {
	for _, bits := range []int{2, 3, 4, 8} {
		m := benchMatrix(16384, 4096, Affine, bits)
		nb := m.Rows / rowPackRows
		out := make([]byte, nb*m.Groups()*rowPackRecord(m.GroupSize, bits))
		for _, k := range []struct {
			name string
			pack func(out []byte, m *Matrix, lo, hi int)
		}{{"go", packBlocksGo}, {"simd", packBlocks}} {
			b.Run(fmt.Sprintf("q%d/%s", bits, k.name), func(b *testing.B) {
				b.SetBytes(int64(len(m.Data) + len(m.Scales) + len(m.Biases)))
				k.pack(out, m, 0, nb)
				for i := 0; i < b.N; i++ {
					k.pack(out, m, 0, nb)
				}
			})
		}
	}
}

// BenchmarkRowPack is the bind-time cost of the row-interleaved copy, in
// GB/s of the matrix's bytes (all workers).
func BenchmarkRowPack(b *testing.B) {
	p := NewPool(0)
	m := benchMatrix(16384, 4096, Affine, 4)
	b.SetBytes(int64(len(m.Data) + len(m.Scales) + len(m.Biases)))
	for i := 0; i < b.N; i++ {
		packRows(m, p)
	}
}

// BenchmarkRowPackAB alternates the row kernels and the row-interleaved
// ones on the same matrix and x in int8 mode, product by product (decode
// n=1, an 8-token block, a prefill chunk of 128; dense shapes of Qwen3-30B-A3B
// and its LM head): "speedup" is the median of old time / new time over the
// pairs, which a machine shared with other jobs moves far less than either.
func BenchmarkRowPackAB(b *testing.B) {
	if !haveVNNI {
		b.Skip("no AVX-512 VNNI")
	}
	p := NewPool(0)
	p.int8 = true
	for _, sh := range []struct{ r, c, n int }{{4096, 2048, 128}, {2048, 4096, 128}, {512, 2048, 128}, {4096, 2048, 1}, {2048, 4096, 1}, {151936, 2048, 1}, {151936, 2048, 8}} {
		m := benchMatrix(sh.r, sh.c, Affine, 4)
		pm := *m
		pm.packed = packRows(&pm, p)
		x := randomVector(rand.New(rand.NewPCG(2, 2)), sh.n*sh.c)
		y := make([]float32, sh.n*sh.r)
		b.Run(fmt.Sprintf("%dx%d/n%d", sh.r, sh.c, sh.n), func(b *testing.B) {
			var rs []float64
			var to, tn time.Duration
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				p.MatMul(y, m, x, sh.n)
				t1 := time.Now()
				p.MatMul(y, &pm, x, sh.n)
				t2 := time.Now()
				rs = append(rs, float64(t1.Sub(t0))/float64(t2.Sub(t1)))
				to += t1.Sub(t0)
				tn += t2.Sub(t1)
			}
			slices.Sort(rs)
			b.ReportMetric(rs[len(rs)/2], "speedup")
			b.ReportMetric(float64(to)/float64(b.N)/1e3, "us-old")
			b.ReportMetric(float64(tn)/float64(b.N)/1e3, "us-new")
		})
	}
}

// BenchmarkRowPackPrefetchAB alternates int8Packed without and with the PF
// kernels (a chunk's first multi-token pass prefetching the next chunk) on
// one worker, over 200 packed 768×2048 4-bit matrices (Qwen3-30B-A3B's
// expert shape, 180 MB: every product streams its matrix from DRAM), for
// the token counts a prefill gives an expert. "speedup" is the median of
// plain time / PF time over the pairs; GOPS-* the best of each in int8
// operations per second.
func BenchmarkRowPackPrefetchAB(b *testing.B) {
	if !haveVNNI {
		b.Skip("no AVX-512 VNNI")
	}
	const R, C, M = 768, 2048, 200
	p := NewPool(1)
	p.int8 = true
	ms := make([]*Matrix, M)
	for i := range ms {
		ms[i] = benchMatrix(R, C, Affine, 4)
		ms[i].packed = packRows(ms[i], nil)
	}
	defer func() { rowPackPrefetch = true }()
	for _, n := range []int{4, 8, 32, 64} {
		x := randomVector(rand.New(rand.NewPCG(2, 2)), n*C)
		y := make([]float32, n*R)
		run := func(pf bool, i int) {
			rowPackPrefetch = pf
			p.MatMul(y, ms[i%M], x, n)
		}
		b.Run(fmt.Sprintf("n%d", n), func(b *testing.B) {
			// pairedAB's "bytes" are the product's int8 operations here.
			pairedAB(b, float64(2*R*C*n), "GOPS-plain", "GOPS-PF", "speedup",
				func(i int) { run(false, 2*i) }, func(i int) { run(true, 2*i+1) })
		})
	}
}

// BenchmarkRowPackPrefetchAllAB alternates int8Packed with only a chunk's
// first eight-token pass prefetching the next chunk and with every pass
// doing so, on one worker: 200 packed 768×2048 matrices (Qwen3-30B-A3B's
// expert shape, 180 MB, streamed from DRAM) at the token counts a prefill
// gives an expert, and 8 of its 4096×2048 q projection at a prefill chunk's
// 128 tokens. "speedup" is the median of first-only time / every-pass time
// over the pairs; GOPS-* the best of each.
func BenchmarkRowPackPrefetchAllAB(b *testing.B) {
	if !haveVNNI {
		b.Skip("no AVX-512 VNNI")
	}
	p := NewPool(1)
	p.int8 = true
	defer func() { rowPackPrefetchAll = true }()
	for _, sh := range []struct{ r, c, m int }{{768, 2048, 200}, {4096, 2048, 8}} {
		ms := make([]*Matrix, sh.m)
		for i := range ms {
			ms[i] = benchMatrix(sh.r, sh.c, Affine, 4)
			ms[i].packed = packRows(ms[i], nil)
		}
		ns := []int{16, 24, 32, 40, 64}
		if sh.r == 4096 {
			ns = []int{128}
		}
		for _, n := range ns {
			x := randomVector(rand.New(rand.NewPCG(2, 2)), n*sh.c)
			y := make([]float32, n*sh.r)
			run := func(all bool, i int) {
				rowPackPrefetchAll = all
				p.MatMul(y, ms[i%sh.m], x, n)
			}
			b.Run(fmt.Sprintf("%dx%d/n%d", sh.r, sh.c, n), func(b *testing.B) {
				pairedAB(b, float64(2*sh.r*sh.c*n), "GOPS-first", "GOPS-all", "speedup",
					func(i int) { run(false, 2*i) }, func(i int) { run(true, 2*i+1) })
			})
		}
	}
}

// BenchmarkRowPackOneCallAB alternates a one-token int8 product (decode)
// walking each worker's rows in one kernel call and in rowPackChunk-block
// calls, on 60 packed matrices of each shape (beyond the caches), both
// workers; the pair's order alternates too. "speedup" is the median of
// chunked time / one-call time.
func BenchmarkRowPackOneCallAB(b *testing.B) {
	if !haveVNNI {
		b.Skip("no AVX-512 VNNI")
	}
	const M = 60
	p := NewPool(0)
	p.int8 = true
	defer func() { rowPackOneCall = true }()
	for _, sh := range []struct{ r, c int }{{2048, 2048}, {768, 2048}, {2048, 768}} {
		ms := make([]*Matrix, M)
		for i := range ms {
			ms[i] = benchMatrix(sh.r, sh.c, Affine, 4)
			ms[i].packed = packRows(ms[i], nil)
		}
		x := randomVector(rand.New(rand.NewPCG(2, 2)), sh.c)
		y := make([]float32, sh.r)
		b.Run(fmt.Sprintf("%dx%d", sh.r, sh.c), func(b *testing.B) {
			alternatedSpeedup(b, func(on bool) { rowPackOneCall = on }, func(i int) { p.MatVec(y, ms[i%M], x) })
		})
	}
}

// TestPackedRowsMatchGathered: a packed product that takes its tokens as
// rows of x quantized once (matBatch.addRows: the multi-token kernels' blocks
// laid out from those rows, the one-token rest copied) gives bit for bit
// MatMul's results on the same rows gathered, for token counts that reach
// every kernel, rows in any order and repeated, and matrices with rows past
// their last block (every token copied for the row kernels).
func TestPackedRowsMatchGathered(t *testing.T) {
	if !haveVNNI {
		t.Skip("no AVX-512 VNNI: no row-interleaved kernels")
	}
	rng := rand.New(rand.NewPCG(39, 40))
	p := newPool(1, simdLevel)
	p.int8 = true
	const T, cols = 30, 256
	x := randomVector(rng, T*cols)
	for _, rowsM := range []int{48, 40} {
		m := randomMatrix(rng, rowsM, cols, Affine, 4, 64, BF16)
		m.packed = packRows(m, nil)
		var q quantRows
		p.quantizeRows(&q, x, T, cols, m.GroupSize)
		if !p.packedFrom(&q, m) {
			t.Fatal("the quantized rows do not fit the packed product")
		}
		for _, n := range []int{1, 3, 5, 9, 13, 21, 29} {
			rows := make([]int, n)
			for k := range rows {
				rows[k] = rng.IntN(T)
			}
			xs := make([]float32, n*cols)
			for k, r := range rows {
				copy(xs[k*cols:(k+1)*cols], x[r*cols:(r+1)*cols])
			}
			// The rows' product first: MatMul's scratch, recycled, would
			// hold the gathered tokens where a copy left out should be.
			want, got := make([]float32, n*rowsM), make([]float32, n*rowsM)
			b := p.newBatch()
			b.addRows(got, m, &q, rows)
			b.compute()
			p.MatMul(want, m, xs, n)
			for i := range got {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("%d rows, n=%d: token %d row %d: %g from the quantized rows, %g gathered",
						rowsM, n, i/rowsM, i%rowsM, got[i], want[i])
				}
			}
		}
		p.putRows(&q)
	}
}
