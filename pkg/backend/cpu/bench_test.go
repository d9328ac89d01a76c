package cpu

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// The ceiling: copying a buffer far larger than the caches. Kernel throughput
// (b.SetBytes = weight bytes read) is reported as a ratio to this bandwidth
// measured in the same run, not as absolute numbers.
func BenchmarkCopyCeiling(b *testing.B) {
	const n = 256 << 20
	src := make([]byte, n)
	dst := make([]byte, n)
	for i := range src {
		src[i] = byte(i)
	}
	b.SetBytes(n)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		copy(dst, src)
	}
}

// BenchmarkReadCeiling is the read-only ceiling a matrix-vector product
// faces (weights are only read): a 256 MiB buffer read once per iteration with
// AVX2 loads (the f32 dot kernel against itself), split over every core.
func BenchmarkReadCeiling(b *testing.B) {
	const n = 256 << 20
	buf := make([]float32, n/4)
	for i := range buf {
		buf[i] = float32(i & 7)
	}
	p := NewPool(0)
	b.SetBytes(n)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.For(len(buf), 1<<10, func(lo, hi int) {
			if Dot(buf[lo:hi], buf[lo:hi]) == -1 {
				b.Fatal("impossible")
			}
		})
	}
}

// benchShapes: a cache-resident square, an expert-sized pair, and one larger
// than the 32 MiB L3 of the development machine (memory-bound).
var benchShapes = []struct{ rows, cols int }{{2048, 2048}, {512, 2048}, {2048, 512}, {16384, 4096}}

func benchMatrix(rows, cols int, f Format, bits int) *Matrix {
	rng := rand.New(rand.NewPCG(1, 1))
	return randomMatrix(rng, rows, cols, f, bits, 64, BF16)
}

func BenchmarkMatVec(b *testing.B) {
	for _, workers := range []int{1, 0} {
		p := NewPool(workers)
		for _, sh := range benchShapes {
			for _, f := range []struct {
				name string
				f    Format
				bits int
			}{{"bf16", BF16, 0}, {"f32", F32, 0}, {"q8", Affine, 8}, {"q4", Affine, 4}, {"q3", Affine, 3}, {"q2", Affine, 2}} {
				m := benchMatrix(sh.rows, sh.cols, f.f, f.bits)
				x := randomVector(rand.New(rand.NewPCG(2, 2)), sh.cols)
				y := make([]float32, sh.rows)
				b.Run(fmt.Sprintf("%s/%dx%d/w%d", f.name, sh.rows, sh.cols, p.Workers()), func(b *testing.B) {
					b.SetBytes(int64(len(m.Data) + len(m.Scales) + len(m.Biases)))
					for i := 0; i < b.N; i++ {
						p.MatVec(y, m, x)
					}
				})
			}
		}
	}
}

func BenchmarkMatMul(b *testing.B) {
	p := NewPool(0)
	for _, n := range []int{16, 64} {
		for _, f := range []struct {
			name string
			f    Format
			bits int
		}{{"bf16", BF16, 0}, {"q4", Affine, 4}} {
			m := benchMatrix(2048, 2048, f.f, f.bits)
			x := randomVector(rand.New(rand.NewPCG(2, 2)), n*2048)
			y := make([]float32, n*2048)
			b.Run(fmt.Sprintf("%s/2048x2048/n%d", f.name, n), func(b *testing.B) {
				// Bytes: weights once per call; report flops via the custom metric.
				b.SetBytes(int64(len(m.Data) + len(m.Scales) + len(m.Biases)))
				for i := 0; i < b.N; i++ {
					p.MatMul(y, m, x, n)
				}
				b.ReportMetric(float64(2*2048*2048*n)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

// BenchmarkSmallMatVec is an expert-sized product of a small model, where
// per-call overhead (scratch, goroutines) rather than bandwidth dominates.
func BenchmarkSmallMatVec(b *testing.B) {
	for _, workers := range []int{1, 0} {
		p := NewPool(workers)
		m := benchMatrix(128, 256, Affine, 4)
		x := randomVector(rand.New(rand.NewPCG(2, 2)), 256)
		y := make([]float32, 128)
		b.Run(fmt.Sprintf("q4/128x256/w%d", p.Workers()), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				p.MatVec(y, m, x)
			}
		})
	}
}
