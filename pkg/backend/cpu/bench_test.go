package cpu

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
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
// faces (weights are only read): ReadSum over a 256 MiB buffer, split over
// every core.
func BenchmarkReadCeiling(b *testing.B) {
	p := NewPool(0)
	buf := ceilingBuffer()
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		readAll(p, buf)
	}
}

var (
	ceilingBuf  []byte
	ceilingSink uint64
)

func ceilingBuffer() []byte {
	if ceilingBuf == nil {
		ceilingBuf = make([]byte, 256<<20)
		for i := range ceilingBuf {
			ceilingBuf[i] = byte(i)
		}
	}
	return ceilingBuf
}

// readAll reads buf once with ReadSum, in one contiguous part per worker.
func readAll(p *Pool, buf []byte) {
	const page = 1 << 12
	var sums [64]uint64
	p.For(len(buf)/page, 1<<20, func(lo, hi int) {
		sums[lo*len(sums)/(len(buf)/page)] += ReadSum(buf[lo*page : hi*page])
	})
	ceilingSink += sums[0]
}

// pairedRatio runs op b.N times, each run followed by one read-ceiling pass
// with the same workers, and reports the best kernel bandwidth ("GB/s-best")
// and the median over the pairs of kernel bandwidth / ceiling bandwidth
// ("ratio"). On a machine shared with other jobs both halves of a pair see
// about the same interference, so the median ratio is stable where averages
// over separate runs are not.
func pairedRatio(b *testing.B, p *Pool, bytesPerOp int64, op func()) {
	buf := ceilingBuffer()
	ratios := make([]float64, 0, b.N)
	best := 0.0
	var kernel time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		op()
		d := time.Since(start)
		kernel += d
		start = time.Now()
		readAll(p, buf)
		c := time.Since(start)
		bw := float64(bytesPerOp) / d.Seconds()
		best = max(best, bw)
		ratios = append(ratios, bw/(float64(len(buf))/c.Seconds()))
	}
	b.StopTimer()
	slices.Sort(ratios)
	b.ReportMetric(float64(bytesPerOp)*float64(b.N)/kernel.Seconds()/1e9, "GB/s")
	b.ReportMetric(best/1e9, "GB/s-best")
	b.ReportMetric(ratios[len(ratios)/2], "ratio")
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
					bytes := int64(len(m.Data) + len(m.Scales) + len(m.Biases))
					pairedRatio(b, p, bytes, func() { p.MatVec(y, m, x) })
				})
			}
		}
	}
}

// BenchmarkMatVecInt8 is BenchmarkMatVec's affine products in int8 mode
// (--matmul int8): x quantized per group, integer dot products.
func BenchmarkMatVecInt8(b *testing.B) {
	for _, workers := range []int{1, 0} {
		p := NewPool(workers)
		p.int8 = true
		for _, sh := range append(benchShapes, struct{ rows, cols int }{4096, 2048}) {
			for _, f := range []struct {
				name string
				bits int
			}{{"q8", 8}, {"q8rp", 8}, {"q4", 4}, {"q4rp", 4}, {"q3", 3}, {"q3rp", 3}, {"q2", 2}, {"q2rp", 2}} {
				m := benchMatrix(sh.rows, sh.cols, Affine, f.bits)
				if strings.HasSuffix(f.name, "rp") { // the row-interleaved copy BindDense makes (rowpack.go)
					if !haveVNNI {
						continue
					}
					m.packed = packRows(m, nil)
				}
				x := randomVector(rand.New(rand.NewPCG(2, 2)), sh.cols)
				y := make([]float32, sh.rows)
				b.Run(fmt.Sprintf("%s/%dx%d/w%d", f.name, sh.rows, sh.cols, p.Workers()), func(b *testing.B) {
					bytes := int64(len(m.Data) + len(m.Scales) + len(m.Biases))
					pairedRatio(b, p, bytes, func() { p.MatVec(y, m, x) })
				})
			}
		}
	}
}

func BenchmarkMatMul(b *testing.B) {
	for _, mode := range []string{"exact", "int8"} {
		p := NewPool(0)
		p.int8 = mode == "int8"
		b.Run(mode, func(b *testing.B) { benchMatMul(b, p) })
	}
}

func benchMatMul(b *testing.B, p *Pool) {
	for _, n := range []int{16, 64} {
		for _, f := range []struct {
			name string
			f    Format
			bits int
		}{{"bf16", BF16, 0}, {"q8", Affine, 8}, {"q8rp", Affine, 8}, {"q4", Affine, 4}, {"q4rp", Affine, 4}, {"q3", Affine, 3}, {"q3rp", Affine, 3}, {"q2", Affine, 2}, {"q2rp", Affine, 2}} {
			packed := strings.HasSuffix(f.name, "rp")
			if p.int8 && f.f != Affine || packed && !(p.int8 && haveVNNI) {
				continue
			}
			m := benchMatrix(2048, 2048, f.f, f.bits)
			if packed {
				m.packed = packRows(m, nil)
			}
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

// BenchmarkMatVecCompute is one worker on a matrix that stays in L2
// (512×2048), no ceiling pass in between: the kernels' compute rate, exact
// and int8 mode, in GB/s of weights.
func BenchmarkMatVecCompute(b *testing.B) {
	for _, mode := range []string{"exact", "int8"} {
		p := NewPool(1)
		p.int8 = mode == "int8"
		for _, bits := range []int{8, 4, -4, 3, 2} { // −4: 4-bit, row-interleaved (int8 mode, VNNI)
			if bits < 0 && !(p.int8 && haveVNNI) {
				continue
			}
			m := benchMatrix(512, 2048, Affine, max(bits, -bits))
			name := fmt.Sprintf("%s/q%d", mode, bits)
			if bits < 0 {
				m.packed = packRows(m, nil)
				name = mode + "/q4rp"
			}
			x := randomVector(rand.New(rand.NewPCG(2, 2)), 2048)
			y := make([]float32, 512)
			b.Run(name, func(b *testing.B) {
				b.SetBytes(int64(len(m.Data) + len(m.Scales) + len(m.Biases)))
				for i := 0; i < b.N; i++ {
					p.MatVec(y, m, x)
				}
			})
		}
	}
}

// BenchmarkScalePrefetchAB alternates exact 4-bit one-token products with and
// without wideRows' prefetch of the next chunk's scales and biases, on 24
// matrices of each shape (beyond the caches), both workers, the pair's order
// alternating; "speedup" is the median of without / with.
func BenchmarkScalePrefetchAB(b *testing.B) {
	const M = 24
	p := NewPool(0)
	defer func() { wideScalePrefetch = true }()
	for _, sh := range []struct{ r, c int }{{4096, 2048}, {1024, 4096}, {4096, 1024}, {768, 2048}} {
		ms := make([]*Matrix, M)
		for i := range ms {
			ms[i] = benchMatrix(sh.r, sh.c, Affine, 4)
		}
		x := randomVector(rand.New(rand.NewPCG(2, 2)), sh.c)
		y := make([]float32, sh.r)
		b.Run(fmt.Sprintf("%dx%d", sh.r, sh.c), func(b *testing.B) {
			alternatedSpeedup(b, func(on bool) { wideScalePrefetch = on }, func(i int) { p.MatVec(y, ms[i%M], x) })
		})
	}
}

// alternatedSpeedup times op(2i) and op(2i+1) for pair i, one with set(false)
// and one with set(true), the order alternating from pair to pair (so that
// neither side always runs on the other's leftover cache state), and reports
// the median over the pairs of off time / on time as "speedup".
func alternatedSpeedup(b *testing.B, set func(on bool), op func(i int)) {
	var rs []float64
	for i := 0; b.Loop(); i++ {
		var d [2]time.Duration // [0] off, [1] on
		for j := range 2 {
			k := (i + j) % 2
			set(k == 1)
			t0 := time.Now()
			op(2*i + j)
			d[k] = time.Since(t0)
		}
		rs = append(rs, float64(d[0])/float64(d[1]))
	}
	slices.Sort(rs)
	b.ReportMetric(rs[len(rs)/2], "speedup")
}
