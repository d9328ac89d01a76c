package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/fm-moe/fm/pkg/backend/cpu"
	"github.com/fm-moe/fm/pkg/experts"
	"github.com/fm-moe/fm/pkg/internal/workpool"
	"github.com/fm-moe/fm/pkg/layout"
)

// MemoryReadBandwidth measures how fast every core together reads memory: the
// best of reps passes over a buffer of size bytes (far larger than the
// caches), each core summing its share with cpu.ReadSum, the pure-read kernel
// the matrix benchmarks pair their products with (docs/PERF.md, "The
// ceiling"). It is the ceiling of a decode step, which only reads weights.
// Bytes per second.
func MemoryReadBandwidth(size int, reps int) float64 {
	return NewReadCeiling(size).Sample(reps)
}

// ReadCeiling measures memory read bandwidth again and again on one buffer,
// so that a benchmark can sample its ceiling between its runs: on a shared
// machine the ceiling moves by 2× within minutes, and one sample taken after
// the runs put roofline ratios of 0.99 next to 0.60 for the same decode
// speed (docs/PERF.md, round seven). Not safe for concurrent use.
type ReadCeiling struct {
	buf  []byte
	sums []uint64 // one slot per worker: no shared writes
	best float64
	all  []float64
}

// NewReadCeiling allocates and touches the size-byte buffer.
func NewReadCeiling(size int) *ReadCeiling {
	c := &ReadCeiling{buf: make([]byte, size), sums: make([]uint64, runtime.GOMAXPROCS(0))}
	for i := range c.buf {
		c.buf[i] = byte(i)
	}
	return c
}

// Sample measures the best of reps passes and returns it, in bytes per
// second; Best and Samples keep every call's result.
func (c *ReadCeiling) Sample(reps int) float64 {
	workers := len(c.sums)
	best := time.Duration(1 << 62)
	for r := 0; r < max(1, reps); r++ {
		start := time.Now()
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			lo, hi := w*len(c.buf)/workers, (w+1)*len(c.buf)/workers
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.sums[w] += cpu.ReadSum(c.buf[lo:hi])
			}()
		}
		wg.Wait()
		best = min(best, time.Since(start))
	}
	bw := float64(len(c.buf)) / best.Seconds()
	c.best = max(c.best, bw)
	c.all = append(c.all, bw)
	return bw
}

// Best is the highest bandwidth any Sample measured, in bytes per second.
func (c *ReadCeiling) Best() float64 { return c.best }

// Samples are every Sample's result in bytes per second, in order.
func (c *ReadCeiling) Samples() []float64 { return c.all }

// ComputeCeiling measures the arithmetic ceiling of every core together (and
// of one, which says whether they share vector units): cpu.ComputePeak, the
// best of reps rounds. It is the ceiling of a prefill, which reads each
// weight once for many tokens.
func ComputeCeiling(reps int) (all, one cpu.Peak) {
	return cpu.ComputePeak(0, reps), cpu.ComputePeak(1, reps)
}

// DiskResult is a measured parallel read bandwidth.
type DiskResult struct {
	BytesPerSecond float64
	Direct         bool // O_DIRECT was used (false: the filesystem refused it)
	Threads        int
	BlockSize      int
	Bytes          int64
}

// DiskReadBandwidth measures the parallel read bandwidth of the disk holding
// dir: it writes a file of size bytes there (synced, so it is on the disk),
// reads it back with threads parallel O_DIRECT preads of block bytes (the
// page cache cannot serve them), and removes it. Where the filesystem refuses
// O_DIRECT (tmpfs) the reads are buffered after dropping the file's cached
// pages with posix_fadvise, and Direct is false.
func DiskReadBandwidth(ctx context.Context, dir string, size int64, threads, block int) (DiskResult, error) {
	if threads <= 0 {
		threads = experts.DefaultIOThreads
	}
	if block <= 0 {
		block = 4 << 20
	}
	size = max(int64(block), size/int64(block)*int64(block))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return DiskResult{}, err
	}
	if err := layout.CheckFreeSpace(dir, size+1<<20); err != nil {
		return DiskResult{}, fmt.Errorf("disk bandwidth test: %w", err)
	}
	f, err := os.CreateTemp(dir, ".fm-bench-io-*")
	if err != nil {
		return DiskResult{}, fmt.Errorf("disk bandwidth test: %w", err)
	}
	path := f.Name()
	defer os.Remove(path)
	r := newRNG(uint64(time.Now().UnixNano()))
	chunk := make([]byte, 8<<20)
	for off := int64(0); off < size; off += int64(len(chunk)) {
		if err := ctx.Err(); err != nil {
			f.Close()
			return DiskResult{}, err
		}
		r.fill(chunk)
		n := min(int64(len(chunk)), size-off)
		if _, err := f.Write(chunk[:n]); err != nil {
			f.Close()
			return DiskResult{}, fmt.Errorf("%s: %w", path, err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return DiskResult{}, fmt.Errorf("%s: %w", path, err)
	}
	f.Close()

	res := DiskResult{Direct: true, Threads: threads, BlockSize: block, Bytes: size}
	rf, err := experts.OS().Open(path, true)
	if err != nil {
		if !experts.DirectUnsupported(err) {
			return res, fmt.Errorf("%s: %w", path, err)
		}
		res.Direct = false
		if rf, err = experts.OS().Open(path, false); err != nil {
			return res, fmt.Errorf("%s: %w", path, err)
		}
		dropCache(rf)
	}
	defer rf.Close()
	blocks := int(size / int64(block))
	bufs := sync.Pool{New: func() any { return experts.AlignedBuffer(block) }}
	start := time.Now()
	err = workpool.Run(ctx, min(threads, blocks), blocks, func(ctx context.Context, b int) error {
		buf := bufs.Get().([]byte)
		defer bufs.Put(buf)
		off := int64(b) * int64(block)
		if done, err := experts.ReadFullAt(rf, buf, off); err != nil {
			return fmt.Errorf("%s: read at %d: %w", path, off+int64(done), err)
		}
		return nil
	})
	el := time.Since(start)
	if err != nil {
		return res, err
	}
	res.BytesPerSecond = float64(size) / el.Seconds()
	return res, nil
}

// dropCache asks the kernel to drop a file's cached pages (best effort).
func dropCache(f experts.File) {
	if osf, ok := f.(*os.File); ok {
		fadviseDontNeed(osf)
	}
}

// DefaultIODir is where --io tests the disk when no directory is given.
func DefaultIODir() string { return filepath.Join(os.TempDir(), "fm-bench") }
