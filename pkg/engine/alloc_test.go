package engine

import (
	"context"
	"os"
	"sort"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/fm-moe/fm/pkg/backend"
	"github.com/fm-moe/fm/pkg/backend/cpu"
	"github.com/fm-moe/fm/pkg/experts"
	"github.com/fm-moe/fm/pkg/internal/prepare"
	"github.com/fm-moe/fm/pkg/model"
)

const tinyCode = "../../testdata/models/tiny-code"

var (
	tinyOnce sync.Once
	tinyDir  string
	tinyErr  error
)

// TestMain removes the shared prepared directory after the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if tinyDir != "" {
		os.RemoveAll(tinyDir)
	}
	os.Exit(code)
}

// tinyCodePrepared converts the trained tiny-code model to a 4-bit prepared
// directory once per test binary (shared by the tests and benchmarks below).
func tinyCodePrepared(tb testing.TB) string {
	tb.Helper()
	tinyOnce.Do(func() {
		if tinyDir, tinyErr = os.MkdirTemp("", "fm-tiny-code-"); tinyErr == nil {
			tinyErr = prepare.Into(tinyCode, tinyDir, 4)
		}
	})
	if tinyErr != nil {
		tb.Fatal(tinyErr)
	}
	return tinyDir
}

// storeCases are the expert store's read paths: buffered preads from the page
// cache (the default), O_DIRECT without a cache, and O_DIRECT with a RAM cache
// holding about a third of the experts (hits, misses, admissions and
// evictions every token) — --direct-io and --expert-cache-mb — or holding
// them all, and mapped files (--mmap).
func storeCases(expertBytes int64) []struct {
	name string
	opts experts.Options
} {
	return []struct {
		name string
		opts experts.Options
	}{
		{"pread", experts.Options{}},
		{"direct-io", experts.Options{DirectIO: true}},
		{"direct-io+cache", experts.Options{DirectIO: true, CacheBytes: expertBytes / 3}},
		{"pread+cache-all", experts.Options{CacheBytes: 2 * expertBytes}},
		// Mapped files: no read at all, the decode speed's ceiling.
		{"mmap", experts.Options{Mmap: true}},
	}
}

// openTinyAfterPrompt opens the prepared tiny-code with the store options and
// returns it with a state that has read an 8-token prompt.
func openTinyAfterPrompt(tb testing.TB, opts Options) (*Engine, *model.State) {
	tb.Helper()
	opts.Dir = tinyCodePrepared(tb)
	e, err := Open(context.Background(), opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { e.Close() })
	st := e.Model.NewState()
	tb.Cleanup(st.Release)
	if _, err := e.Model.Forward(context.Background(), st, []int{1, 2, 3, 4, 5, 6, 7, 8}, false); err != nil {
		tb.Fatal(err)
	}
	return e, st
}

// totalExpertBytes is the size of every routed expert file of the set.
func totalExpertBytes(e *Engine) int64 {
	n := int64(0)
	for _, cs := range e.Set.Checksums {
		n += int64(len(cs))
	}
	return n * e.Set.FileSize
}

// TestDecodeAllocationsFromFiles is pkg/model's TestDecodeAllocations with
// the experts read from their files by the expert store, on each of its read
// paths: a decode step allocates nothing once the state's workspace, the
// store's entries, buffers and open files are warm — no goroutine, channel,
// closure or result slice per fetched expert.
func TestDecodeAllocationsFromFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("converts and loads the tiny-code model")
	}
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop recycled objects")
	}
	e0, _ := openTinyAfterPrompt(t, Options{})
	all := totalExpertBytes(e0)
	for _, c := range storeCases(all) {
		t.Run(c.name, func(t *testing.T) {
			e, st := openTinyAfterPrompt(t, Options{Store: c.opts})
			if c.opts.DirectIO && !e.Store.DirectIO() {
				t.Logf("the filesystem refused O_DIRECT; buffered reads: %v", e.Store.Warnings())
			}
			ctx := context.Background()
			logits := make([]float32, e.Model.Config().VocabSize)
			tok := 100
			step := func() {
				if err := e.Model.Decode(ctx, st, tok, logits); err != nil {
					t.Fatal(err)
				}
				tok = 100 + (tok+7)%50
			}
			// First uses are not per token: every expert file opened and its
			// checksum verified once, the workspace, the store's entries and
			// buffers grown by a few steps.
			readEveryExpert(t, e)
			for range 20 {
				step()
			}
			before := e.Store.Stats()
			n := testing.AllocsPerRun(50, step)
			io := e.Store.Stats().Sub(before)
			if io.Experts == 0 {
				t.Fatal("no expert fetched: the test does not exercise the store")
			}
			if c.opts.CacheBytes == 0 && !c.opts.Mmap && io.Misses == 0 {
				t.Fatal("no expert read from its file")
			}
			if n != 0 {
				t.Errorf("decode step: %.1f allocations, want 0 (%d experts, %d read, %d cache hits, %d evictions over the run; go test -bench DecodeFromFiles -memprofile mem.out -memprofilerate 1 shows where)",
					n, io.Experts, io.Misses, io.Hits, io.Evictions)
			}
		})
	}
}

// readEveryExpert fetches every expert of the model once (its file opened and
// verified, as the first read of each does).
func readEveryExpert(tb testing.TB, e *Engine) {
	tb.Helper()
	for layer, cs := range e.Set.Checksums {
		if cs == nil {
			continue
		}
		ids := make([]int, len(cs))
		for i := range ids {
			ids[i] = i
		}
		ex, err := e.Store.Fetch(context.Background(), layer, ids)
		if err != nil {
			tb.Fatal(err)
		}
		e.Store.Release(ex)
	}
}

// BenchmarkDecodeFromFiles is Decode on the prepared tiny-code with the
// experts read by the store on each of its read paths, allocations reported
// (-memprofile shows where they come from).
func BenchmarkDecodeFromFiles(b *testing.B) {
	e0, _ := openTinyAfterPrompt(b, Options{})
	all := totalExpertBytes(e0)
	for _, c := range storeCases(all) {
		b.Run(c.name, func(b *testing.B) {
			e, st := openTinyAfterPrompt(b, Options{Store: c.opts})
			readEveryExpert(b, e)
			ctx := context.Background()
			logits := make([]float32, e.Model.Config().VocabSize)
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if err := e.Model.Decode(ctx, st, 100+i%50, logits); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tok/s")
		})
	}
}

// handoffDevice is the CPU device with BindExpert timestamped: the model binds
// an expert file right after it has it, so the time from the read's end (the
// last ReadAt into that buffer returning, stamped by handoffFS) to the bind is
// the hand-off from the store's worker to the model. Only the first expert
// bound after the shared expert is counted per layer: the model is then
// waiting for it (the FS delays every read), so compute does not add to it.
type handoffDevice struct {
	*cpu.Device
	fs *handoffFS

	mu          sync.Mutex
	afterShared bool
	lat         []time.Duration
}

func (d *handoffDevice) MLP(y, x backend.Tensor, gate, up, down backend.Matrix) {
	d.Device.MLP(y, x, gate, up, down)
	d.mu.Lock()
	d.afterShared = true
	d.mu.Unlock()
}

func (d *handoffDevice) BindExpert(l *backend.ExpertLayout, buf []byte) (backend.Expert, error) {
	now := time.Now()
	d.mu.Lock()
	if d.afterShared {
		d.afterShared = false
		if end, ok := d.fs.end(buf); ok {
			d.lat = append(d.lat, now.Sub(end))
		}
	}
	d.mu.Unlock()
	return d.Device.BindExpert(l, buf)
}

// handoffFS delays every read by delay (a disk's latency, so that the model
// is already waiting when the read ends) and stamps when the read into each
// buffer ended.
type handoffFS struct {
	experts.FS
	delay time.Duration
	mu    sync.Mutex
	ends  map[uintptr]time.Time
}

type handoffFile struct {
	experts.File
	fs *handoffFS
}

func (f *handoffFS) Open(path string, direct bool) (experts.File, error) {
	file, err := f.FS.Open(path, direct)
	if err != nil {
		return nil, err
	}
	return handoffFile{file, f}, nil
}

func (f handoffFile) ReadAt(p []byte, off int64) (int, error) {
	time.Sleep(f.fs.delay)
	n, err := f.File.ReadAt(p, off)
	end := time.Now()
	f.fs.mu.Lock()
	f.fs.ends[uintptr(unsafe.Pointer(unsafe.SliceData(p)))-uintptr(off)] = end
	f.fs.mu.Unlock()
	return n, err
}

func (f *handoffFS) end(buf []byte) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.ends[uintptr(unsafe.Pointer(unsafe.SliceData(buf)))]
	return t, ok
}

// BenchmarkExpertHandoff measures, per sparse layer of a decode step, the
// time from the store's worker finishing an expert's read to the model
// binding it (handoffDevice), with every read delayed by 200 µs so the model
// is waiting. Reported: the median and mean per layer in µs.
func BenchmarkExpertHandoff(b *testing.B) {
	fs := &handoffFS{FS: experts.OS(), delay: 200 * time.Microsecond, ends: map[uintptr]time.Time{}}
	dev := &handoffDevice{Device: cpu.NewDevice(0), fs: fs}
	e, st := openTinyAfterPrompt(b, Options{Device: dev, Store: experts.Options{FS: fs}})
	ctx := context.Background()
	logits := make([]float32, e.Model.Config().VocabSize)
	for i := range 5 { // every file opened and verified
		if err := e.Model.Decode(ctx, st, 100+i, logits); err != nil {
			b.Fatal(err)
		}
	}
	dev.mu.Lock()
	dev.lat = dev.lat[:0]
	dev.mu.Unlock()
	for i := 0; b.Loop(); i++ {
		if err := e.Model.Decode(ctx, st, 100+i%50, logits); err != nil {
			b.Fatal(err)
		}
	}
	dev.mu.Lock()
	lat := append([]time.Duration(nil), dev.lat...)
	dev.mu.Unlock()
	if len(lat) == 0 {
		b.Fatal("no hand-off measured")
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1e3, "µs-handoff-median")
	b.ReportMetric(float64(sum.Nanoseconds())/float64(len(lat))/1e3, "µs-handoff-mean")
	b.ReportMetric(float64(lat[len(lat)*9/10].Nanoseconds())/1e3, "µs-handoff-p90")
}
