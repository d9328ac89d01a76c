package cpu

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkPoolHandoff is the fixed cost of one Pool.For that splits work over
// two workers: handing the second part to a helper and waiting for it, with
// no work in the parts. "gap" runs that long of single-threaded work between
// calls (a decode step's norms and glue between its products), which lets an
// idle helper go to sleep; the gap itself is subtracted ("handoff-ns").
func BenchmarkPoolHandoff(b *testing.B) {
	for _, gap := range []time.Duration{0, 20 * time.Microsecond, 200 * time.Microsecond} {
		b.Run(fmt.Sprintf("gap=%v", gap), func(b *testing.B) {
			p := NewPool(2)
			var sink [2]int
			body := func(lo, hi int) { sink[lo]++ }
			var inFor time.Duration
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if gap > 0 {
					for end := time.Now().Add(gap); time.Now().Before(end); {
					}
				}
				start := time.Now()
				p.For(2, 1<<20, body)
				inFor += time.Since(start)
			}
			b.ReportMetric(float64(inFor.Nanoseconds())/float64(b.N), "handoff-ns")
		})
	}
}
