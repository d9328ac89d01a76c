package cpu

import (
	"math"
	"slices"
	"sync"
	"testing"
)

// recycler keeps the memory of released tensors and KV caches for the next
// request's. Every request gets a fresh State: its workspace (a prefill
// chunk's activations, ~40 MB for a 512-token chunk of Qwen3-30B-A3B) and
// its KV caches were new allocations, and new memory faults page by page on
// its first touch (~12 µs a 4 KiB page on the development VM, where a
// 512-token prefill spent ~0.1 s of its ~1.2 s in such faults: appending to
// the fresh caches and clearing the fresh attention output; docs/PERF.md,
// round eight). Released buffers are handed out again, cleared, to a request
// of 1/2 to 1 times their size.
//
// Only buffers of recycleMinFloats or more are kept (the Go allocator reuses
// smaller ones well), at most recycleMaxBytes in all: past it the oldest go
// to the garbage collector. The memory a server keeps this way is at most
// what it already held during its largest requests. Concurrency: safe for
// concurrent use.
type recycler struct {
	mu    sync.Mutex
	free  [][]float32 // released buffers, oldest first, each at full capacity
	bytes int64
}

const (
	recycleMinFloats = 1 << 18 // 1 MiB
	recycleMaxBytes  = 1 << 30
)

// poisonReleased fills released buffers with NaN under `go test`, so that a
// use after Release (which with recycling reads another request's memory)
// surfaces as non-finite values in the goldens and the engine's checks.
var poisonReleased = testing.Testing()

// get returns n zeroed floats from the smallest free buffer of capacity n to
// 2n, or nil when there is none (or n is below recycleMinFloats).
func (r *recycler) get(n int) []float32 {
	if n < recycleMinFloats {
		return nil
	}
	r.mu.Lock()
	best := -1
	for i, b := range r.free {
		if c := cap(b); c >= n && c <= 2*n && (best < 0 || c < cap(r.free[best])) {
			best = i
		}
	}
	if best < 0 {
		r.mu.Unlock()
		return nil
	}
	b := r.free[best]
	r.free = slices.Delete(r.free, best, best+1)
	r.bytes -= 4 * int64(cap(b))
	r.mu.Unlock()
	b = b[:n]
	clear(b)
	return b
}

// put takes back a buffer no one uses any more (nothing below
// recycleMinFloats).
func (r *recycler) put(b []float32) {
	if cap(b) < recycleMinFloats {
		return
	}
	b = b[:cap(b)]
	if poisonReleased {
		nan := float32(math.NaN())
		for i := range b {
			b[i] = nan
		}
	}
	r.mu.Lock()
	r.free = append(r.free, b)
	r.bytes += 4 * int64(cap(b))
	for r.bytes > recycleMaxBytes {
		r.bytes -= 4 * int64(cap(r.free[0]))
		r.free[0] = nil
		r.free = r.free[1:]
	}
	r.mu.Unlock()
}

// floats returns n zeroed floats, recycled or new (on huge pages where they
// span one, hugeFloats).
func (r *recycler) floats(n int) []float32 {
	if b := r.get(n); b != nil {
		return b
	}
	return hugeFloats(n)
}
