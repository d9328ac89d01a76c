package kernelcmp

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/fm-moe/fm/pkg/backend/cpu"
)

// The benchmarks run every variant on the same data, one worker, in turn
// within each iteration (the starting variant rotates), so that on a shared
// machine all of them see the same interference. They report, per variant,
// the median GB/s of the weights it read and the median of its per-iteration
// ratio to the hand assembly ("NAME/asm"); on the matrices larger than the
// L3 also the median ratio to a memory-read ceiling (cpu.ReadSum, one core)
// measured in the same iteration ("NAME-roof"). Run with -benchtime=Nx; the
// archsimd variant needs GOEXPERIMENT=simd (`make kernelcmp`).

// ceilingBytes is the read-ceiling buffer: far larger than any L3.
const ceilingBytes = 128 << 20

var (
	ceilingBuf  []byte
	ceilingSink uint64
)

func ceiling() []byte {
	if ceilingBuf == nil {
		ceilingBuf = make([]byte, ceilingBytes)
		for i := range ceilingBuf {
			ceilingBuf[i] = byte(i)
		}
	}
	return ceilingBuf
}

// timedOp is one variant's kernel over the whole matrix.
type timedOp struct {
	name string
	run  func()
}

// compare runs ops in turn b.N times (and the ceiling when roof is set) and
// reports the metrics described above; bytes is what one op reads.
func compare(b *testing.B, bytes int64, ops []timedOp, roof bool) {
	if len(ops) == 0 {
		b.Skip("no variant")
	}
	for _, op := range ops { // warm: first-touch, caches
		op.run()
	}
	gbs := make([][]float64, len(ops))
	vsAsm := make([][]float64, len(ops))
	roofs := make([][]float64, len(ops))
	var ceil []float64
	asm := slices.IndexFunc(ops, func(o timedOp) bool { return o.name == "asm" })
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rate := make([]float64, len(ops))
		for j := range ops {
			k := (i + j) % len(ops)
			start := time.Now()
			ops[k].run()
			rate[k] = float64(bytes) / time.Since(start).Seconds() / 1e9
		}
		var c float64
		if roof {
			buf := ceiling()
			start := time.Now()
			ceilingSink += cpu.ReadSum(buf)
			c = float64(len(buf)) / time.Since(start).Seconds() / 1e9
			ceil = append(ceil, c)
		}
		for k := range ops {
			gbs[k] = append(gbs[k], rate[k])
			if asm >= 0 {
				vsAsm[k] = append(vsAsm[k], rate[k]/rate[asm])
			}
			if roof {
				roofs[k] = append(roofs[k], rate[k]/c)
			}
		}
	}
	b.StopTimer()
	for k, op := range ops {
		b.ReportMetric(median(gbs[k]), op.name+"-GB/s")
		if asm >= 0 && k != asm {
			b.ReportMetric(median(vsAsm[k]), op.name+"/asm")
		}
		if roof {
			b.ReportMetric(median(roofs[k]), op.name+"-roof")
		}
	}
	if roof {
		b.ReportMetric(median(ceil), "ceiling-GB/s")
	}
}

func median(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

// sizes: an L2-resident matrix (compute rate) and one larger than the L3
// (memory-bound; 32 MiB L3 on the development machine).
var sizes = []struct {
	name       string
	rows, cols int
	roof       bool
}{{"L2", 512, 2048, false}, {"DRAM", 32768, 4096, true}}

func BenchmarkQ4Rows(b *testing.B) {
	const gs = 64
	for _, sz := range sizes {
		rng := rand.New(rand.NewPCG(7, 8))
		g := sz.cols / gs
		codes := make([]byte, sz.rows*sz.cols/2)
		for i := range codes {
			codes[i] = byte(rng.Uint32())
		}
		scales, biases := make([]float32, sz.rows*g), make([]float32, sz.rows*g)
		for i := range scales {
			scales[i], biases[i] = 0.01, -0.08
		}
		x, xp := make([]float32, sz.cols), make([]float32, sz.cols)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		PermuteQ4(xp, x)
		y := make([]float32, sz.rows)
		var ops []timedOp
		for _, v := range Variants() {
			if v.Q4Rows != nil {
				ops = append(ops, timedOp{v.Name, func() { v.Q4Rows(codes, xp, scales, biases, y, gs) }})
			}
		}
		b.Run(fmt.Sprintf("%s/%dx%d", sz.name, sz.rows, sz.cols), func(b *testing.B) {
			compare(b, int64(len(codes)+8*len(scales)), ops, sz.roof)
		})
	}
}

// BenchmarkQ4RowAVX2: the AVX2-form 4-bit row kernel, one call per row (as
// production calls it), the level for CPUs without AVX-512.
func BenchmarkQ4RowAVX2(b *testing.B) {
	const gs = 64
	for _, sz := range sizes {
		rng := rand.New(rand.NewPCG(7, 8))
		g, n := sz.cols/gs, sz.cols
		codes := make([]byte, sz.rows*n/2)
		for i := range codes {
			codes[i] = byte(rng.Uint32())
		}
		scales, biases := make([]float32, sz.rows*g), make([]float32, sz.rows*g)
		for i := range scales {
			scales[i], biases[i] = 0.01, -0.08
		}
		x, xp, gsum := make([]float32, n), make([]float32, n), make([]float32, g)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
			gsum[i/gs] += x[i]
		}
		PermuteQ4AVX2(xp, x)
		y := make([]float32, sz.rows)
		var ops []timedOp
		for _, v := range Variants() {
			if v.Q4RowAVX2 != nil {
				ops = append(ops, timedOp{v.Name, func() {
					for r := range y {
						y[r] = v.Q4RowAVX2(codes[r*n/2:(r+1)*n/2], xp, scales[r*g:(r+1)*g], biases[r*g:(r+1)*g], gsum, gs)
					}
				}})
			}
		}
		b.Run(fmt.Sprintf("%s/%dx%d", sz.name, sz.rows, sz.cols), func(b *testing.B) {
			compare(b, int64(len(codes)+8*len(scales)), ops, sz.roof)
		})
	}
}

func BenchmarkDotBF16(b *testing.B) {
	for _, sz := range sizes {
		rows, cols := sz.rows/2, sz.cols // bf16 is 4× the bytes of 4-bit
		rng := rand.New(rand.NewPCG(9, 10))
		w := make([]uint16, rows*cols)
		for i := range w {
			w[i] = uint16(math.Float32bits(float32(rng.NormFloat64())) >> 16)
		}
		x := make([]float32, cols)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		y := make([]float32, rows)
		var ops []timedOp
		for _, v := range Variants() {
			if v.DotBF16 != nil {
				ops = append(ops, timedOp{v.Name, func() {
					for r := range y {
						y[r] = v.DotBF16(w[r*cols:(r+1)*cols], x)
					}
				}})
			}
		}
		b.Run(fmt.Sprintf("%s/%dx%d", sz.name, rows, cols), func(b *testing.B) {
			compare(b, int64(2*len(w)), ops, sz.roof)
		})
	}
}

func BenchmarkDotU8I8(b *testing.B) {
	for _, sz := range sizes {
		rows, cols := sz.rows/2, 2*sz.cols // one byte per weight
		rng := rand.New(rand.NewPCG(11, 12))
		a := make([]uint8, rows*cols)
		for i := range a {
			a[i] = uint8(rng.Uint32())
		}
		xq := make([]int8, cols)
		for i := range xq {
			xq[i] = int8(rng.Uint32())
		}
		y := make([]int32, rows)
		var ops []timedOp
		for _, v := range Variants() {
			if v.DotU8I8 != nil {
				ops = append(ops, timedOp{v.Name, func() {
					for r := range y {
						y[r] = v.DotU8I8(a[r*cols:(r+1)*cols], xq)
					}
				}})
			}
		}
		b.Run(fmt.Sprintf("%s/%dx%d", sz.name, rows, cols), func(b *testing.B) {
			compare(b, int64(len(a)), ops, sz.roof)
		})
	}
}
