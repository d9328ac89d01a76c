package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// TestRow8MatchesRow4 holds the eight-token exact kernels to the four-token
// ones bit for bit (and rows wider than row8MaxCols to the four-token path):
// the same MatMul with row8Kernels on and off, token
// counts that leave zero to three whole four-token blocks unpaired and a
// one-token remainder, two group sizes, one and three workers.
func TestRow8MatchesRow4(t *testing.T) {
	if !haveAVX512 {
		t.Skip("no AVX-512: no eight-token kernel")
	}
	t.Cleanup(func() { row8Kernels = true })
	rng := rand.New(rand.NewPCG(8, 4))
	for _, gs := range []int{64, 128} {
		for _, shape := range []struct{ rows, cols int }{{67, 256}, {40, 1024}, {9, 2048}} {
			m := randomMatrix(rng, shape.rows, shape.cols, Affine, 4, gs, BF16)
			for _, n := range []int{8, 9, 12, 16, 23, 64} {
				x := randomVector(rng, n*shape.cols)
				for _, workers := range []int{1, 3} {
					name := fmt.Sprintf("gs %d, %dx%d, %d tokens, %d workers", gs, shape.rows, shape.cols, n, workers)
					sameBitsToggled(t, name, "with the eight-token kernel", "without", &row8Kernels, newPool(workers, levelAVX512), m, x, n)
				}
			}
		}
	}
}

// BenchmarkRow8AB is the eight-token kernels against the four-token ones in
// exact 4-bit products of many tokens (a prefill chunk's dense and expert
// shapes), alternating; "speedup" is the median of off time / on time.
func BenchmarkRow8AB(b *testing.B) {
	p := NewPool(0)
	defer func() { row8Kernels = true }()
	for _, sh := range []struct{ r, c, n int }{{2048, 2048, 16}, {2048, 768, 32}, {4096, 1024, 32}, {2048, 1536, 32}, {2048, 512, 64}} {
		m := benchMatrix(sh.r, sh.c, Affine, 4)
		x := randomVector(rand.New(rand.NewPCG(2, 2)), sh.n*sh.c)
		y := make([]float32, sh.n*sh.r)
		b.Run(fmt.Sprintf("%dx%d/n%d", sh.r, sh.c, sh.n), func(b *testing.B) {
			alternatedSpeedup(b, func(on bool) { row8Kernels = on }, func(int) { p.MatMul(y, m, x, sh.n) })
		})
	}
}

// TestRow4SplitMatchesWhole: exact 2-, 3-, 4- and 8-bit products of rows
// wider than row4WholeMaxCols, walked in parts (affineRows4Split), are the
// whole-row four-token kernels' bit for bit: two and three parts, even and
// uneven group counts, two group sizes, row counts around row4SplitRows and
// wideChunk, token counts with and without a remainder, 1 and 3 workers.
func TestRow4SplitMatchesWhole(t *testing.T) {
	if !haveAVX512 {
		t.Skip("no AVX-512: no four-token kernel")
	}
	t.Cleanup(func() { row4Parts = true })
	rng := rand.New(rand.NewPCG(8, 5))
	for _, c := range []struct{ bits, gs int }{{4, 64}, {4, 128}, {8, 64}, {2, 64}, {3, 64}, {3, 128}} {
		bits, gs := c.bits, c.gs
		if bits == 3 && !haveVBMI {
			continue
		}
		for _, shape := range []struct{ rows, cols int }{{9, 4096}, {37, 3136}, {70, 6144}, {5, 4160}} {
			if shape.cols%gs != 0 {
				continue
			}
			m := randomMatrix(rng, shape.rows, shape.cols, Affine, bits, gs, BF16)
			if !row4Split(bits, shape.cols) {
				t.Fatalf("%d-bit, %d columns: not split", bits, shape.cols)
			}
			for _, n := range []int{4, 7, 12} {
				x := randomVector(rng, n*shape.cols)
				for _, workers := range []int{1, 3} {
					name := fmt.Sprintf("%d-bit, gs %d, %dx%d, %d tokens, %d workers", bits, gs, shape.rows, shape.cols, n, workers)
					sameBitsToggled(t, name, "in parts", "whole", &row4Parts, newPool(workers, levelAVX512), m, x, n)
				}
			}
		}
	}
}

// TestBF16SplitMatchesWhole: BF16 products of rows wider than
// row4WholeMaxCols, walked in parts (bf16Rows4Split), are the whole-row
// kernel's bit for bit (two and three parts, row counts around
// row4SplitRows and the tile, token counts with and without a remainder).
func TestBF16SplitMatchesWhole(t *testing.T) {
	if !haveAVX512 {
		t.Skip("no AVX-512: no four-token kernel")
	}
	t.Cleanup(func() { row4Parts = true })
	rng := rand.New(rand.NewPCG(8, 6))
	for _, shape := range []struct{ rows, cols int }{{9, 4096}, {37, 3136}, {70, 6144}, {5, 4160}} {
		m := randomMatrix(rng, shape.rows, shape.cols, BF16, 0, 0, BF16)
		if !bf16Split(shape.cols) {
			t.Fatalf("%d columns: not split", shape.cols)
		}
		for _, n := range []int{4, 7, 12} {
			x := randomVector(rng, n*shape.cols)
			for _, workers := range []int{1, 3} {
				name := fmt.Sprintf("bf16, %dx%d, %d tokens, %d workers", shape.rows, shape.cols, n, workers)
				sameBitsToggled(t, name, "in parts", "whole", &row4Parts, newPool(workers, levelAVX512), m, x, n)
			}
		}
	}
}

// BenchmarkRow4SplitAB alternates exact products of wide rows (an
// o-projection of Qwen3-30B-A3B, and Qwen3.5-397B's 4,096-column dense and
// expert matrices; 4-bit, and 8-, 2- and 3-bit at 4,096 columns) walked
// whole and in parts; "speedup" is the median of whole time / parts time.
func BenchmarkRow4SplitAB(b *testing.B) {
	p := NewPool(0)
	defer func() { row4Parts = true }()
	for _, sh := range []struct{ bits, r, c, n int }{{4, 2048, 4096, 16}, {4, 1024, 4096, 32}, {4, 4096, 4096, 16}, {4, 1024, 6144, 16},
		{8, 2048, 4096, 16}, {2, 2048, 4096, 16}, {3, 2048, 4096, 16}, {16, 1024, 4096, 16}} {
		if sh.bits == 3 && !haveVBMI {
			continue
		}
		m := benchMatrix(sh.r, sh.c, Affine, sh.bits)
		if sh.bits == 16 {
			m = benchMatrix(sh.r, sh.c, BF16, 0)
		}
		x := randomVector(rand.New(rand.NewPCG(2, 2)), sh.n*sh.c)
		y := make([]float32, sh.n*sh.r)
		b.Run(fmt.Sprintf("q%d/%dx%d/n%d", sh.bits, sh.r, sh.c, sh.n), func(b *testing.B) {
			alternatedSpeedup(b, func(on bool) { row4Parts = on }, func(int) { p.MatMul(y, m, x, sh.n) })
		})
	}
}

// sameBitsToggled runs p.MatMul of n tokens with *flag false, then true, and
// fails unless both give the same bits (on and off name the two sides).
func sameBitsToggled(t *testing.T, name, on, off string, flag *bool, p *Pool, m *Matrix, x []float32, n int) {
	t.Helper()
	want, got := make([]float32, n*m.Rows), make([]float32, n*m.Rows)
	*flag = false
	p.MatMul(want, m, x, n)
	*flag = true
	p.MatMul(got, m, x, n)
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s: y[%d] (token %d, row %d) = %g %s, %g %s", name, i, i/m.Rows, i%m.Rows, got[i], on, want[i], off)
		}
	}
}
