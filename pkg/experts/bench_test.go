// The cold-cache ceiling drops pages with fadvise, which is Linux only.

//go:build linux

package experts

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/fm-moe/fm/pkg/layout"
	"golang.org/x/sys/unix"
)

// Benchmark geometry: 4 MiB experts (between Qwen3.5-397B's 3.75 MiB 2-bit and
// 6.75 MiB 4-bit experts), K = 8 per Fetch, 64 files (256 MiB) cycled through.
const (
	benchExpertSize = 4 << 20
	benchExperts    = 64
	benchK          = 8
)

// benchSet writes the benchmark's expert files (synced, so that their pages
// can be dropped) and returns the prepared directory.
func benchSet(b *testing.B) (string, *layout.ExpertSet) {
	dir := b.TempDir()
	set := &layout.ExpertSet{Dir: layout.ExpertsDir, NameFormat: "layer_%02d_expert_%04d.bin", FileSize: benchExpertSize,
		Checksums: [][]string{make([]string, benchExperts)}}
	if err := os.MkdirAll(filepath.Join(dir, set.Dir), 0o755); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, benchExpertSize)
	for id := range benchExperts {
		for i := range buf {
			buf[i] = byte(i*31 + id)
		}
		f, err := os.Create(set.Path(dir, 0, id))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
	return dir, set
}

// dropCache asks the kernel to forget the files' cached pages
// (POSIX_FADV_DONTNEED works on clean pages without privileges), so the next
// read comes from the disk.
func dropCache(b *testing.B, dir string, set *layout.ExpertSet, ids []int) {
	for _, id := range ids {
		f, err := os.Open(set.Path(dir, 0, id))
		if err != nil {
			b.Fatal(err)
		}
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

// rawReadGBs is the ceiling for one case: the same rounds of K files read
// into K buffers by the same number of goroutines with plain open + ReadAt +
// close and no store, in GB/s (best of 3 passes over all files).
func rawReadGBs(b *testing.B, dir string, set *layout.ExpertSet, threads int, direct, cold bool) float64 {
	bufs := make([][]byte, benchK)
	for i := range bufs {
		bufs[i] = AlignedBuffer(benchExpertSize)
	}
	flag := os.O_RDONLY
	if direct {
		flag |= unix.O_DIRECT
	}
	best := 0.0
	for range 3 {
		var elapsed time.Duration
		for round := 0; round < benchExperts; round += benchK {
			ids := make(chan int, benchK)
			for i := range benchK {
				ids <- round + i
			}
			close(ids)
			if cold {
				dropCache(b, dir, set, []int{round, round + 1, round + 2, round + 3, round + 4, round + 5, round + 6, round + 7})
			}
			start := time.Now()
			var wg sync.WaitGroup
			for range min(threads, benchK) {
				wg.Go(func() {
					for id := range ids {
						f, err := os.OpenFile(set.Path(dir, 0, id), flag, 0)
						if err != nil {
							panic(err)
						}
						if _, err := f.ReadAt(bufs[id%benchK], 0); err != nil {
							panic(err)
						}
						f.Close()
					}
				})
			}
			wg.Wait()
			elapsed += time.Since(start)
		}
		best = max(best, float64(benchExperts*benchExpertSize)/elapsed.Seconds()/1e9)
	}
	return best
}

// copyGBs is memory bandwidth: all expert-sized source regions (more than the
// last-level cache) copied into K rotating buffers, the work page-cache hits
// cost at best.
func copyGBs() float64 {
	src := make([][]byte, benchExperts)
	for i := range src {
		src[i] = AlignedBuffer(benchExpertSize)
		for j := range src[i] {
			src[i][j] = byte(j)
		}
	}
	dst := make([][]byte, benchK)
	for i := range dst {
		dst[i] = AlignedBuffer(benchExpertSize)
	}
	best := 0.0
	for range 3 {
		start := time.Now()
		for i, s := range src {
			copy(dst[i%benchK], s)
		}
		best = max(best, float64(benchExperts*benchExpertSize)/time.Since(start).Seconds()/1e9)
	}
	return best
}

// BenchmarkFetch measures Fetch of K experts per op and reports, besides
// MB/s, its ratio to a ceiling measured in the same run (x-raw): the same
// files read in the same rounds by the same number of goroutines with bare
// open/ReadAt/close, no store. Warm cases also report the ratio to memory copy
// bandwidth (x-copy). Cold cases drop the files' pages before each op
// (untimed); direct cases use O_DIRECT.
func BenchmarkFetch(b *testing.B) {
	dir, set := benchSet(b)
	copyCeil := copyGBs()
	b.Logf("memory copy %.1f GB/s", copyCeil)
	for _, tc := range []struct {
		name string
		opts Options
		cold bool
	}{
		{"warm/threads=1", Options{IOThreads: 1}, false},
		{"warm/threads=2", Options{IOThreads: 2}, false},
		{"warm/threads=16", Options{IOThreads: 16}, false},
		{"warm/mmap/threads=16", Options{IOThreads: 16, Mmap: true}, false},
		{"cold/threads=1", Options{IOThreads: 1}, true},
		{"cold/threads=16", Options{IOThreads: 16}, true},
		{"direct/threads=1", Options{IOThreads: 1, DirectIO: true}, false},
		{"direct/threads=16", Options{IOThreads: 16, DirectIO: true}, false},
	} {
		b.Run(tc.name, func(b *testing.B) {
			raw := rawReadGBs(b, dir, set, max(1, tc.opts.IOThreads), tc.opts.DirectIO, tc.cold)
			s, err := Open(dir, set, tc.opts)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			ids := make([]int, benchK)
			next := 0
			b.SetBytes(benchK * benchExpertSize)
			for b.Loop() {
				for i := range ids {
					ids[i] = next % benchExperts
					next++
				}
				if tc.cold {
					b.StopTimer()
					dropCache(b, dir, set, ids)
					b.StartTimer()
				}
				ex, err := s.Fetch(context.Background(), 0, ids)
				if err != nil {
					b.Fatal(err)
				}
				s.Release(ex)
			}
			gbs := float64(b.N*benchK*benchExpertSize) / b.Elapsed().Seconds() / 1e9
			b.ReportMetric(raw, "raw-GB/s")
			b.ReportMetric(gbs/raw, "x-raw")
			if !tc.cold && !tc.opts.DirectIO {
				b.ReportMetric(gbs/copyCeil, "x-copy")
			}
			if tc.opts.DirectIO && !s.DirectIO() {
				b.Logf("direct I/O fell back: %q", s.Warnings())
			}
		})
	}
}

// BenchmarkFetchCacheHit is the cost of a Fetch served entirely from the RAM
// cache: bookkeeping only, no copy.
func BenchmarkFetchCacheHit(b *testing.B) {
	fx := newFixture(1, benchK, Alignment)
	s, err := Open(fakeDir, fx.set, Options{CacheBytes: benchK * Alignment, FS: fx.fs()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ids := make([]int, benchK)
	for i := range ids {
		ids[i] = i
	}
	for b.Loop() {
		ex, err := s.Fetch(context.Background(), 0, ids)
		if err != nil {
			b.Fatal(err)
		}
		s.Release(ex)
	}
	if st := s.Stats(); st.Misses != benchK {
		b.Fatalf("%d misses, want %d", st.Misses, benchK)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchK), "ns/expert")
}
