package cpu

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkPoolConcurrent runs products from several sequences at once on one
// pool, as `fm-infer serve --parallel N` does: each sequence alternates a
// little serial work (a step's glue) with a product split over every worker,
// each part ~25 µs of arithmetic (no memory traffic, so that the cores, not
// the bandwidth, are what the sequences share). One sequence owns the
// helpers at a time; the others' products run on fresh goroutines. With the
// cores well shared, parts/s stays about the same for any number of
// sequences; "ns/op" is per product, over all sequences.
func BenchmarkPoolConcurrent(b *testing.B) {
	for _, seqs := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("seqs=%d", seqs), func(b *testing.B) {
			p := NewPool(0)
			w := p.Workers()
			sinks := make([]float64, 8*w) // a cache line per part
			work := func(lo, hi int) {
				for i := lo; i < hi; i++ {
					x := sinks[8*i]
					for k := 0; k < 6000; k++ {
						x = x*0.999999 + 1e-7
					}
					sinks[8*i] = x
				}
			}
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for s := 0; s < seqs; s++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for next.Add(1) <= int64(b.N) {
						for end := time.Now().Add(5 * time.Microsecond); time.Now().Before(end); {
						}
						p.For(w, 1<<20, work)
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)*float64(w)/b.Elapsed().Seconds(), "parts/s")
		})
	}
}
