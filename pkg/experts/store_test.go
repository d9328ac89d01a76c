package experts

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fm-moe/fm/pkg/layout"
)

const testSize = 2 * Alignment

func openStore(t testing.TB, fx *fixture, fs *fakeFS, opts Options) *Store {
	t.Helper()
	opts.FS = fs
	s, err := Open(fakeDir, fx.set, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestFetchReadsWholeFiles(t *testing.T) {
	fx := newFixture(3, 16, testSize)
	for _, tc := range []struct {
		name string
		opts Options
		fs   func(*fakeFS)
	}{
		{"page-cache", Options{}, nil},
		{"one-thread", Options{IOThreads: 1}, nil},
		{"direct+cache", Options{DirectIO: true, CacheBytes: 4 * testSize}, nil},
		{"verify", Options{VerifyChecksums: true}, nil},
		{"short-reads", Options{VerifyChecksums: true}, func(f *fakeFS) { f.short = true }},
		// Files read as two chunks each, in parallel, then verified whole.
		{"chunked", Options{ChunkBytes: Alignment, VerifyChecksums: true}, nil},
		{"chunked-short-reads", Options{ChunkBytes: Alignment, VerifyChecksums: true}, func(f *fakeFS) { f.short = true }},
		{"chunked-direct+cache", Options{ChunkBytes: 1, DirectIO: true, CacheBytes: 4 * testSize}, nil}, // rounded up to Alignment
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := fx.fs()
			if tc.fs != nil {
				tc.fs(fs)
			}
			s := openStore(t, fx, fs, tc.opts)
			ids := []int{3, 0, 15, 7, 3} // a repeat shares one read
			for layer := range 3 {
				ex, err := s.Fetch(context.Background(), layer, ids)
				if err != nil {
					t.Fatal(err)
				}
				if len(ex) != len(ids) {
					t.Fatalf("got %d experts, want %d", len(ex), len(ids))
				}
				for i, x := range ex {
					if x.Layer != layer || x.ID != ids[i] {
						t.Fatalf("result %d is layer %d expert %d, want layer %d expert %d", i, x.Layer, x.ID, layer, ids[i])
					}
				}
				fx.check(t, ex)
				s.Release(ex)
				for _, x := range ex {
					if x.Data != nil {
						t.Fatal("Release left Data set")
					}
				}
				s.Release(ex) // twice is harmless
			}
			st := s.Stats()
			if st.Misses != 12 || st.Shared != 3 || st.Experts != 15 || st.Fetches != 3 {
				t.Errorf("stats %+v, want 12 misses, 3 shared of 15 experts in 3 fetches", st)
			}
			if st.Bytes != 12*testSize {
				t.Errorf("read %d bytes, want %d", st.Bytes, 12*testSize)
			}
			chunk := testSize
			if tc.opts.ChunkBytes > 0 {
				chunk = Alignment
			}
			perChunk := int64(1)
			if fs.short {
				// Halving the chunk down to 1 byte, then the last byte:
				// 8192 bytes take 14 calls, 4096 take 13.
				perChunk = int64(bits.Len(uint(chunk)))
			}
			wantReads := st.Misses * int64(testSize/chunk) * perChunk
			if st.Reads != wantReads {
				t.Errorf("%d ReadAt calls, want %d", st.Reads, wantReads)
			}
			if st.IOTime <= 0 || st.WaitTime <= 0 {
				t.Errorf("IOTime %v, WaitTime %v: want both positive", st.IOTime, st.WaitTime)
			}
		})
	}
}

// Files are read as chunks queued in the order of the request, so the first
// expert asked for is complete first (the model computes on it while the rest
// arrive); with one worker the reads are exactly that sequence.
func TestChunksInRequestOrder(t *testing.T) {
	fx := newFixture(1, 16, 3*Alignment)
	fs := fx.fs()
	s := openStore(t, fx, fs, Options{IOThreads: 1, ChunkBytes: Alignment, VerifyChecksums: true})
	ids := []int{5, 2, 9}
	ex, err := s.Fetch(context.Background(), 0, ids)
	if err != nil {
		t.Fatal(err)
	}
	fx.check(t, ex)
	s.Release(ex)
	var want []readAt
	for _, id := range ids {
		for off := int64(0); off < 3*Alignment; off += Alignment {
			want = append(want, readAt{fx.path(0, id), off})
		}
	}
	if fmt.Sprint(fs.readLog) != fmt.Sprint(want) {
		t.Errorf("reads %v, want %v", fs.readLog, want)
	}
}

func TestReadErrorsNameTheFile(t *testing.T) {
	for _, chunk := range []int{0, Alignment} {
		t.Run(fmt.Sprintf("chunk=%d", chunk), func(t *testing.T) { testReadErrorsNameTheFile(t, chunk) })
	}
}

func testReadErrorsNameTheFile(t *testing.T, chunk int) {
	fx := newFixture(2, 8, testSize)
	truncated := fx.path(1, 5)
	for _, tc := range []struct {
		name   string
		inject func(*fakeFS)
		want   []string
		is     error
	}{
		{"eio", func(f *fakeFS) { f.setReadErr(truncated, syscall.EIO) },
			[]string{truncated, "read at offset ", "input/output error"}, syscall.EIO},
		{"short-file", func(f *fakeFS) { f.files[truncated] = f.files[truncated][:testSize-100] },
			[]string{truncated, fmt.Sprintf("short read: got %d of %d bytes", testSize-100, testSize)}, nil},
		{"short-file-half-reads", func(f *fakeFS) {
			f.short = true
			f.files[truncated] = f.files[truncated][:Alignment]
		}, []string{truncated, fmt.Sprintf("short read: got %d of %d bytes", Alignment, testSize)}, nil},
		{"missing", func(f *fakeFS) { delete(f.files, truncated) },
			[]string{truncated, "open", "no such file"}, syscall.ENOENT},
		{"checksum", func(f *fakeFS) {
			b := append([]byte(nil), f.files[truncated]...)
			b[testSize-1]++
			f.files[truncated] = b
		}, []string{truncated, "checksum", fx.set.Checksums[1][5]}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := fx.fs()
			tc.inject(fs)
			s := openStore(t, fx, fs, Options{VerifyChecksums: true, CacheBytes: 4 * testSize, ChunkBytes: chunk})
			ex, err := s.Fetch(context.Background(), 1, []int{0, 5, 2})
			if err == nil {
				s.Release(ex)
				t.Fatal("Fetch succeeded, want an error")
			}
			if ex != nil {
				t.Error("Fetch returned experts along with an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %q is not %v", err, tc.is)
			}
			if strings.Count(err.Error(), truncated) != 1 {
				t.Errorf("error %q should name the file exactly once", err)
			}
			// A failed read is neither cached nor kept: the good experts still work,
			// and the bad one fails again rather than returning stale bytes.
			ex, err = s.Fetch(context.Background(), 1, []int{0, 2})
			if err != nil {
				t.Fatal(err)
			}
			fx.check(t, ex)
			s.Release(ex)
			if _, err := s.Fetch(context.Background(), 1, []int{5}); err == nil {
				t.Error("second Fetch of the bad expert succeeded")
			}
		})
	}
}

// An error aborts the Fetch: the reads it had not started are not made.
func TestErrorCancelsOtherReads(t *testing.T) {
	fx := newFixture(1, 16, testSize)
	fs := fx.fs()
	fs.latency = 5 * time.Millisecond
	fs.setReadErr(fx.path(0, 0), syscall.EIO)
	s := openStore(t, fx, fs, Options{IOThreads: 1})
	ids := make([]int, 16)
	for i := range ids {
		ids[i] = i
	}
	if _, err := s.Fetch(context.Background(), 0, ids); !errors.Is(err, syscall.EIO) {
		t.Fatalf("got %v, want EIO", err)
	}
	s.Close() // drains the queue
	if _, _, _, calls := fs.counts(); calls > 2 {
		t.Errorf("%d reads after the first failed; the rest should have been cancelled", calls-1)
	}
	if st := s.Stats(); st.BufferBytes > int64(s.pool.maxIdle)*testSize {
		t.Errorf("%d buffer bytes after an aborted fetch", st.BufferBytes)
	}
}

// K reads with latency run concurrently up to IOThreads.
func TestReadsRunInParallel(t *testing.T) {
	fx := newFixture(1, 16, testSize)
	ids := []int{1, 3, 5, 7, 9, 11, 13, 15}
	for _, threads := range []int{1, 2, 8, 16} {
		t.Run(fmt.Sprintf("threads=%d", threads), func(t *testing.T) {
			fs := fx.fs()
			fs.latency = 20 * time.Millisecond
			s := openStore(t, fx, fs, Options{IOThreads: threads})
			ex, err := s.Fetch(context.Background(), 0, ids)
			if err != nil {
				t.Fatal(err)
			}
			fx.check(t, ex)
			s.Release(ex)
			maxInFlight, _, _, _ := fs.counts()
			if want := min(threads, len(ids)); maxInFlight != want {
				t.Errorf("at most %d reads in flight, want %d", maxInFlight, want)
			}
			st := s.Stats()
			// Summed read time over wall time estimates the parallelism; loosely.
			if par := float64(st.IOTime) / float64(st.WaitTime); threads >= 8 && par < 2 {
				t.Errorf("IOTime/WaitTime = %.1f with %d threads, want well above 1", par, threads)
			}
		})
	}
}

func TestCancellation(t *testing.T) {
	fx := newFixture(1, 8, testSize)
	fs := fx.fs()
	fs.gate = make(chan struct{})
	s := openStore(t, fx, fs, Options{IOThreads: 2, CacheBytes: 2 * testSize})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := s.Fetch(ctx, 0, []int{0, 1, 2, 3})
		errc <- err
	}()
	// Wait until both workers are blocked inside a read, then cancel.
	for {
		if m, _, _, _ := fs.counts(); m == 2 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Fetch did not return after cancellation while reads were blocked")
	}
	close(fs.gate) // the blocked reads complete after their caller left
	ex, err := s.Fetch(context.Background(), 0, []int{0, 1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	fx.check(t, ex)
	s.Release(ex)
	if _, _, _, calls := fs.counts(); calls > 6 {
		t.Errorf("%d reads: the cancelled, never-started reads were made anyway", calls)
	}
}

// fetchBlocked opens a one-worker store on a 4-expert fixture whose reads
// wait for fs.gate, and starts caller A's Fetch of experts 0 and 1 (its
// context, cancelA; its error, errA); it returns once A's first read is
// blocked, the second queued behind it.
func fetchBlocked(t *testing.T) (fx *fixture, fs *fakeFS, s *Store, cancelA context.CancelFunc, errA chan error) {
	t.Helper()
	fx = newFixture(1, 4, testSize)
	fs = fx.fs()
	fs.gate = make(chan struct{})
	s = openStore(t, fx, fs, Options{IOThreads: 1})
	ctxA, cancelA := context.WithCancel(context.Background())
	t.Cleanup(cancelA)
	errA = make(chan error, 1)
	go func() { _, err := s.Fetch(ctxA, 0, []int{0, 1}); errA <- err }()
	fs.waitInFlight(1)
	return fx, fs, s, cancelA, errA
}

// A caller joining a read that another caller then cancels gets the expert
// anyway.
func TestJoinedReadSurvivesOtherCallersCancellation(t *testing.T) {
	fx, fs, s, cancelA, errA := fetchBlocked(t)
	type result struct {
		ex  []*Expert
		err error
	}
	resB := make(chan result, 1)
	go func() { ex, err := s.Fetch(context.Background(), 0, []int{1, 0}); resB <- result{ex, err} }()
	for s.Stats().Shared < 2 {
		time.Sleep(time.Millisecond)
	}
	cancelA()
	if err := <-errA; !errors.Is(err, context.Canceled) {
		t.Fatalf("A: got %v, want context.Canceled", err)
	}
	close(fs.gate)
	r := <-resB
	if r.err != nil {
		t.Fatalf("B: %v", r.err)
	}
	fx.check(t, r.ex)
	s.Release(r.ex)
}

func TestCacheHitsAndLRUOrder(t *testing.T) {
	fx := newFixture(2, 8, testSize)
	fs := fx.fs()
	s := openStore(t, fx, fs, Options{DirectIO: true, CacheBytes: 3*testSize + testSize/2, CachePolicy: PolicyLRU})
	fetch := func(layer int, ids ...int) {
		t.Helper()
		ex, err := s.Fetch(context.Background(), layer, ids)
		if err != nil {
			t.Fatal(err)
		}
		fx.check(t, ex)
		s.Release(ex)
	}
	// 3 misses, cache full (3 fit in 3.5 files' worth). One fetch each: the
	// reads of one Fetch complete, and enter the cache, in any order.
	fetch(0, 0)
	fetch(0, 1)
	fetch(0, 2)
	fetch(0, 0)    // hit; 0 is now most recent
	fetch(1, 0)    // miss; evicts layer 0 expert 1
	fetch(0, 2, 0) // 2 hits
	fetch(0, 1)    // miss
	st := s.Stats()
	if st.Hits != 3 || st.Misses != 5 || st.Evictions != 2 {
		t.Errorf("hits %d misses %d evictions %d, want 3 5 2", st.Hits, st.Misses, st.Evictions)
	}
	if st.CachedExperts != 3 || st.CachedBytes != 3*testSize {
		t.Errorf("cache holds %d experts, %d bytes; want 3, %d", st.CachedExperts, st.CachedBytes, 3*testSize)
	}
	if got := fs.reads(fx.path(0, 2)); got != 1 {
		t.Errorf("layer 0 expert 2 read %d times, want 1", got)
	}
	s.ResetStats()
	if st := s.Stats(); st.Hits != 0 || st.Misses != 0 || st.CachedExperts != 3 {
		t.Errorf("after ResetStats: %+v", st)
	}
}

// The cache never holds more than its budget, and the store never holds all
// the expert bytes: the memory requirement of the issue.
func TestCacheBudgetRespected(t *testing.T) {
	const layers, experts = 4, 32
	fx := newFixture(layers, experts, testSize)
	total := int64(layers * experts * testSize)
	for _, p := range Policies {
		t.Run(string(p), func(t *testing.T) {
			fs := fx.fs()
			budget := total / 8
			s := openStore(t, fx, fs, Options{DirectIO: true, IOThreads: 4, CacheBytes: budget + testSize - 1, CachePolicy: p})
			r := rand.New(rand.NewPCG(1, 2))
			var held [][]*Expert
			for step := range 400 {
				layer := r.IntN(layers)
				ids := []int{r.IntN(experts), r.IntN(experts), r.IntN(experts), r.IntN(experts)}
				ex, err := s.Fetch(context.Background(), layer, ids)
				if err != nil {
					t.Fatal(err)
				}
				fx.check(t, ex)
				held = append(held, ex)
				if len(held) > 2 { // hold a couple of fetches, like a pipelined engine
					s.Release(held[0])
					held = held[1:]
				}
				st := s.Stats()
				if st.CachedBytes > budget {
					t.Fatalf("step %d: cache holds %d bytes, budget %d", step, st.CachedBytes, budget)
				}
				// Cached + held (≤ 3 fetches of 4) + idle pool: well under the whole set.
				limit := budget + int64(12+s.pool.maxIdle)*testSize
				if st.BufferBytes > limit || st.BufferBytes >= total {
					t.Fatalf("step %d: %d bytes of expert buffers, limit %d, all experts %d", step, st.BufferBytes, limit, total)
				}
			}
			st := s.Stats()
			if st.Hits == 0 || st.Evictions == 0 {
				t.Errorf("hits %d evictions %d: the trace should exercise both", st.Hits, st.Evictions)
			}
			if st.PeakBufferBytes >= total {
				t.Errorf("peak %d bytes of buffers: every expert was resident", st.PeakBufferBytes)
			}
		})
	}
}

// A buffer handed out stays intact until released, even when its expert is
// evicted and many other experts are read into recycled buffers meanwhile.
func TestEvictedBuffersStayValidUntilRelease(t *testing.T) {
	fx := newFixture(1, 16, testSize)
	fs := fx.fs()
	s := openStore(t, fx, fs, Options{DirectIO: true, CacheBytes: testSize, IOThreads: 2})
	held, err := s.Fetch(context.Background(), 0, []int{7})
	if err != nil {
		t.Fatal(err)
	}
	for id := range 16 {
		ex, err := s.Fetch(context.Background(), 0, []int{id, (id + 1) % 16})
		if err != nil {
			t.Fatal(err)
		}
		fx.check(t, ex)
		s.Release(ex)
	}
	fx.check(t, held) // still layer 0 expert 7's bytes
	if st := s.Stats(); st.CachedBytes > testSize {
		t.Errorf("cache %d bytes over its %d budget", st.CachedBytes, testSize)
	}
	s.Release(held)
	// Released: its buffer goes back to the pool and serves the next reads.
	ex, err := s.Fetch(context.Background(), 0, []int{3, 4, 5})
	if err != nil {
		t.Fatal(err)
	}
	fx.check(t, ex)
	s.Release(ex)
	if st := s.Stats(); st.PeakBufferBytes > int64(2+s.pool.maxIdle)*testSize {
		t.Errorf("peak %d buffer bytes: buffers were not reused", st.PeakBufferBytes)
	}
}

// Many goroutines fetch, check and release with a tiny cache; run with -race.
func TestConcurrentFetchStress(t *testing.T) {
	stress(t, 7, func(s *Store, fx *fixture, r *rand.Rand, _ int) error {
		layers, experts := len(fx.set.Checksums), len(fx.set.Checksums[0])
		for range 150 {
			ctx, cancel := stressContext(r)
			ids := []int{r.IntN(8), r.IntN(experts), r.IntN(experts)}
			ex, err := s.Fetch(ctx, r.IntN(layers), ids)
			cancel()
			if err != nil {
				if isContextErr(err) {
					continue
				}
				return err
			}
			for _, x := range ex {
				if layout.Checksum(x.Data) != fx.set.Checksums[x.Layer][x.ID] {
					return fmt.Errorf("layer %d expert %d: corrupted buffer", x.Layer, x.ID)
				}
			}
			s.Release(ex)
		}
		return nil
	})
}

// stress runs body on 6 goroutines (g = 0..5, each with its own random
// source) against each of the stressOptions stores, with 50 µs reads from
// a 2-layer, 24-expert fixture, then checks the store settled.
func stress(t *testing.T, seed uint64, body func(s *Store, fx *fixture, r *rand.Rand, g int) error) {
	fx := newFixture(2, 24, testSize)
	for _, opts := range stressOptions {
		t.Run(fmt.Sprintf("cache=%d/%s", opts.CacheBytes/testSize, opts.CachePolicy), func(t *testing.T) {
			fs := fx.fs()
			fs.latency = 50 * time.Microsecond
			s := openStore(t, fx, fs, opts)
			var wg sync.WaitGroup
			errc := make(chan error, 6)
			for g := range 6 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := body(s, fx, rand.New(rand.NewPCG(uint64(g), seed)), g); err != nil {
						errc <- err
					}
				}()
			}
			wg.Wait()
			close(errc)
			for err := range errc {
				t.Fatal(err)
			}
			checkSettled(t, s, opts)
		})
	}
}

// stressContext is a background context, or for one caller in ten one that
// gives up within 200 µs.
func stressContext(r *rand.Rand) (context.Context, context.CancelFunc) {
	if r.IntN(10) == 0 {
		return context.WithTimeout(context.Background(), time.Duration(r.IntN(200))*time.Microsecond)
	}
	return context.Background(), func() {}
}

// stressOptions are the stores the concurrency stress tests run on: page
// cache, and O_DIRECT with a small cache under every policy.
var stressOptions = []Options{
	{IOThreads: 3},
	{IOThreads: 3, DirectIO: true, CacheBytes: 5 * testSize, CachePolicy: PolicyLRU},
	{IOThreads: 3, DirectIO: true, CacheBytes: 5 * testSize, CachePolicy: PolicyARC},
	{IOThreads: 3, DirectIO: true, CacheBytes: 5 * testSize, CachePolicy: PolicyLFUDA},
}

// checkSettled closes s after a stress run and checks that the cache kept
// its budget and every buffer is back: cached or idle, nothing leaked as in
// use. Reads abandoned by callers that gave up may still be in flight: Close
// waits for them.
func checkSettled(t *testing.T, s *Store, opts Options) {
	t.Helper()
	if st := s.Stats(); st.CachedBytes > opts.CacheBytes {
		t.Errorf("cache %d bytes over budget %d", st.CachedBytes, opts.CacheBytes)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, e := range s.live {
		if e.refs != 0 || !e.cached {
			t.Errorf("layer %d expert %d: %d references left, cached %v", k.layer, k.id, e.refs, e.cached)
		}
	}
}

func TestDirectIOFallback(t *testing.T) {
	fx := newFixture(1, 4, testSize)
	for _, tc := range []struct {
		name string
		fs   func(*fakeFS)
	}{
		{"open-einval", func(f *fakeFS) {
			f.openErr = func(path string, direct bool) error {
				if direct {
					return fmt.Errorf("open %s: %w", path, syscall.EINVAL)
				}
				return nil
			}
		}},
		{"unsupported", func(f *fakeFS) {
			f.openErr = func(path string, direct bool) error {
				if direct {
					return ErrDirectIOUnsupported
				}
				return nil
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := fx.fs()
			tc.fs(fs)
			s := openStore(t, fx, fs, Options{DirectIO: true})
			// Open probes one file, so the fallback is known before any Fetch.
			if s.DirectIO() || len(s.Warnings()) != 1 {
				t.Fatalf("after Open: DirectIO %v, warnings %q; want a fallback with one warning", s.DirectIO(), s.Warnings())
			}
			for range 2 {
				ex, err := s.Fetch(context.Background(), 0, []int{0, 1, 2, 3})
				if err != nil {
					t.Fatal(err)
				}
				fx.check(t, ex)
				s.Release(ex)
			}
			if s.DirectIO() {
				t.Error("DirectIO still true after the filesystem refused it")
			}
			if w := s.Warnings(); len(w) != 1 || !strings.Contains(w[0], "direct I/O") {
				t.Errorf("warnings %q, want exactly one about direct I/O", w)
			}
		})
	}
	t.Run("read-einval", func(t *testing.T) {
		fs := fx.fs()
		s := openStore(t, fx, fs, Options{DirectIO: true})
		if !s.DirectIO() || len(s.Warnings()) != 0 {
			t.Fatalf("after Open: DirectIO %v, warnings %q; the probe should pass", s.DirectIO(), s.Warnings())
		}
		// The first direct read fails with EINVAL, as on filesystems that accept
		// O_DIRECT at open and refuse the read.
		fs.setReadErr(fx.path(0, 2), syscall.EINVAL)
		fs.openErr = func(path string, direct bool) error {
			if !direct {
				fs.setReadErr(path, nil)
			}
			return nil
		}
		ex, err := s.Fetch(context.Background(), 0, []int{2})
		if err != nil {
			t.Fatal(err)
		}
		fx.check(t, ex)
		s.Release(ex)
		if s.DirectIO() || len(s.Warnings()) != 1 {
			t.Errorf("DirectIO %v, warnings %q: want a fallback with one warning", s.DirectIO(), s.Warnings())
		}
	})
}

func TestOpenFilesBounded(t *testing.T) {
	fx := newFixture(2, 40, testSize)
	fs := fx.fs()
	s := openStore(t, fx, fs, Options{IOThreads: 4, MaxOpenFiles: 10})
	for layer := range 2 {
		for id := 0; id < 40; id += 4 {
			ex, err := s.Fetch(context.Background(), layer, []int{id, id + 1, id + 2, id + 3})
			if err != nil {
				t.Fatal(err)
			}
			s.Release(ex)
			if n := s.OpenFiles(); n > 10 {
				t.Fatalf("%d files open, limit 10", n)
			}
		}
	}
	// Files stay open between reads: a second pass over recent experts reopens nothing.
	_, opens, _, _ := fs.counts()
	ex, err := s.Fetch(context.Background(), 1, []int{36, 37, 38, 39})
	if err != nil {
		t.Fatal(err)
	}
	s.Release(ex)
	if _, again, _, _ := fs.counts(); again != opens {
		t.Errorf("re-reading open files opened %d more", again-opens)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, opens, closes, _ := fs.counts(); opens != closes {
		t.Errorf("%d opens, %d closes after Close", opens, closes)
	}
}

func TestInvalidRequests(t *testing.T) {
	fx := newFixture(3, 8, testSize)
	fx.set.Checksums[1] = nil // a dense layer
	s := openStore(t, fx, fx.fs(), Options{})
	for _, tc := range []struct {
		layer int
		ids   []int
		want  string
	}{
		{-1, []int{0}, "layer -1 out of range [0, 3)"},
		{3, []int{0}, "layer 3 out of range [0, 3)"},
		{1, []int{0}, "layer 1 has no routed experts"},
		{0, []int{0, 8}, "layer 0: expert 8 out of range [0, 8)"},
		{2, []int{-2}, "layer 2: expert -2 out of range"},
	} {
		if _, err := s.Fetch(context.Background(), tc.layer, tc.ids); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Fetch(%d, %v): error %v, want %q", tc.layer, tc.ids, err, tc.want)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Fetch(context.Background(), 0, []int{0}); !errors.Is(err, errClosed) {
		t.Errorf("Fetch after Close: %v, want %v", err, errClosed)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	bad := *fx.set
	bad.FileSize = testSize + 100
	if _, err := Open(fakeDir, &bad, Options{DirectIO: true}); err == nil || !strings.Contains(err.Error(), "multiple of 4096") {
		t.Errorf("Open with unaligned file size and direct I/O: %v", err)
	}
	if _, err := Open(fakeDir, fx.set, Options{CachePolicy: "fifo"}); err == nil || !strings.Contains(err.Error(), `"fifo"`) {
		t.Errorf("Open with unknown policy: %v", err)
	}
}

func TestStatsSub(t *testing.T) {
	a := Stats{Fetches: 10, Experts: 40, Hits: 10, Misses: 30, Reads: 31, Bytes: 300, IOTime: 5, WaitTime: 3, CachedBytes: 7}
	b := Stats{Fetches: 12, Experts: 48, Hits: 14, Misses: 34, Reads: 36, Bytes: 340, IOTime: 9, WaitTime: 4, CachedBytes: 9}
	d := b.Sub(a)
	want := Stats{Fetches: 2, Experts: 8, Hits: 4, Misses: 4, Reads: 5, Bytes: 40, IOTime: 4, WaitTime: 1, CachedBytes: 9}
	if d != want {
		t.Errorf("Sub = %+v, want %+v", d, want)
	}
	if r := d.HitRate(); r != 0.5 {
		t.Errorf("HitRate = %v, want 0.5", r)
	}
}
