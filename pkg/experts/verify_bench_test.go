//go:build linux

package experts

import (
	"context"
	"testing"
	"time"

	"github.com/fm-moe/fm/pkg/layout"
)

// BenchmarkFirstReadVerify measures what run-time checksum verification
// costs where it costs most: every read is the expert's first in the process
// (a fresh store per pass), so every file is hashed. Each iteration reads all
// benchmark experts in rounds of K twice, once with and once without
// verification, in alternating order (so that load from other processes hits
// both alike), page cache warm or cold (pages dropped before each pass,
// outside the timing). It reports both times per pass and their ratio, the
// cost of verification against the plain read measured in the same run.
//
//	go test -run XXX -bench FirstReadVerify -benchtime 20x ./pkg/experts
func BenchmarkFirstReadVerify(b *testing.B) {
	dir, set := benchSet(b)
	buf := make([]byte, benchExpertSize)
	ids := make([]int, benchExperts)
	for id := range ids {
		ids[id] = id
		f, err := OS().Open(set.Path(dir, 0, id), false)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := f.ReadAt(buf, 0); err != nil {
			b.Fatal(err)
		}
		f.Close()
		set.Checksums[0][id] = layout.Checksum(buf)
	}
	pass := func(b *testing.B, cold, verify bool) (elapsed, hashed time.Duration) {
		if cold {
			dropCache(b, dir, set, ids)
		}
		s, err := Open(dir, set, Options{IOThreads: 16, VerifyChecksums: verify})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		start := time.Now()
		for r := 0; r < benchExperts; r += benchK {
			ex, err := s.Fetch(context.Background(), 0, ids[r:r+benchK])
			if err != nil {
				b.Fatal(err)
			}
			s.Release(ex)
		}
		return time.Since(start), s.Stats().VerifyTime
	}
	for _, temp := range []string{"warm", "cold"} {
		b.Run(temp, func(b *testing.B) {
			var plain, verified, hashed time.Duration
			for i := range b.N {
				for _, verify := range []bool{i%2 == 0, i%2 != 0} {
					d, h := pass(b, temp == "cold", verify)
					if verify {
						verified, hashed = verified+d, hashed+h
					} else {
						plain += d
					}
				}
			}
			n := float64(b.N)
			b.ReportMetric(float64(plain.Nanoseconds())/n, "plain-ns/pass")
			b.ReportMetric(float64(verified.Nanoseconds())/n, "verify-ns/pass")
			b.ReportMetric(float64(hashed.Nanoseconds())/n, "hash-ns/pass")
			b.ReportMetric(float64(verified)/float64(plain), "verify/plain")
			b.ReportMetric(float64(benchExperts*benchExpertSize)/plain.Seconds()*n/1e9, "plain-GB/s")
		})
	}
}
