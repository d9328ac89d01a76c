package cpu

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// The attention kernels on one key block of a [keys × 2 heads × 64] cache,
// against the per-key Dot/Axpy calls they replace.
const benchKeys, benchD, benchStride = 128, 64, 128

func BenchmarkAttnScores(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	q, k := attnRandFloats(r, benchD), attnRandFloats(r, benchKeys*benchStride)
	sc := make([]float32, benchKeys)
	b.Run("Dot", func(b *testing.B) {
		for range b.N {
			for s := range sc {
				sc[s] = Dot(q, k[s*benchStride:s*benchStride+benchD])
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchKeys), "ns/key")
	})
	b.Run("DotRows4", func(b *testing.B) {
		var four [4]float32
		for range b.N {
			for s := 0; s < benchKeys; s += 4 {
				DotRows4(q, k[s*benchStride:], benchStride, &four)
				copy(sc[s:], four[:])
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchKeys), "ns/key")
	})
}

func BenchmarkAttnWeightedSum(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	// Head sizes 64 and 128 (Qwen3's; Qwen3.5 and Next have 256): the
	// AVX-512 kernel takes 128 columns at a time, AVX2 64.
	for _, d := range []int{benchD, 2 * benchD} {
		stride := max(benchStride, d)
		p, v := attnRandFloats(r, benchKeys), attnRandFloats(r, benchKeys*stride)
		o := make([]float32, d)
		b.Run(fmt.Sprintf("Axpy/d%d", d), func(b *testing.B) {
			for range b.N {
				for s, w := range p {
					Axpy(o, w, v[s*stride:s*stride+d])
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchKeys), "ns/key")
		})
		b.Run(fmt.Sprintf("WeightedRowSum/d%d", d), func(b *testing.B) {
			for range b.N {
				WeightedRowSum(o, p, v, stride)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchKeys), "ns/key")
		})
	}
}

func BenchmarkAttnSoftmax(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	x := attnRandFloats(r, 2048)
	buf := make([]float32, len(x))
	for _, bc := range []struct {
		name string
		fn   func([]float32)
	}{{"Softmax", softmaxRef}, {"SoftmaxF32", SoftmaxF32}} {
		b.Run(bc.name, func(b *testing.B) {
			for range b.N {
				copy(buf, x)
				bc.fn(buf)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(x)), "ns/elem")
		})
	}
}
