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
					p := newPool(workers, levelAVX512)
					want, got := make([]float32, n*shape.rows), make([]float32, n*shape.rows)
					row8Kernels = false
					p.MatMul(want, m, x, n)
					row8Kernels = true
					p.MatMul(got, m, x, n)
					name := fmt.Sprintf("gs %d, %dx%d, %d tokens, %d workers", gs, shape.rows, shape.cols, n, workers)
					for i := range want {
						if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
							t.Fatalf("%s: y[%d] (token %d, row %d) = %g with the eight-token kernel, %g without", name, i, i/shape.rows, i%shape.rows, got[i], want[i])
						}
					}
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
