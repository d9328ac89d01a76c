package cpu

import (
	"runtime"
	"sync"
)

// scratch recycles float32 buffers between kernel calls, so that a decode step
// (hundreds of small products) does not allocate.
type scratch struct{ p sync.Pool }

// get returns a buffer of n floats (contents undefined); put it back when done.
func (s *scratch) get(n int) *[]float32 {
	b, _ := s.p.Get().(*[]float32)
	if b == nil {
		b = new([]float32)
	}
	if cap(*b) < n {
		*b = make([]float32, n)
	}
	*b = (*b)[:n]
	return b
}

func (s *scratch) put(b *[]float32) { s.p.Put(b) }

// minWorkPerGoroutine is the amount of work (roughly multiply-adds) below which
// starting another goroutine costs more than it saves: waking an idle thread
// takes a few microseconds, about what 64K multiply-adds take.
const minWorkPerGoroutine = 1 << 16

// Pool splits loops over goroutines. It holds no mutable state: every call starts
// its own goroutines (cheap in Go) and waits for them.
type Pool struct {
	workers int
	// level selects the kernels: levelGeneric runs the pure-Go ones, higher
	// levels the assembly ones up to what the CPU has (the tests compare them).
	level int
	buf  scratch
}

// NewPool returns a pool of the given width; workers <= 0 means GOMAXPROCS.
func NewPool(workers int) *Pool { return newPool(workers, simdLevel) }

func newPool(workers, level int) *Pool {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	return &Pool{workers: workers, level: min(level, simdLevel)}
}

// Workers is the pool's width.
func (p *Pool) Workers() int { return p.workers }

// For runs fn over [0, n) split into contiguous ranges, one per goroutine. cost
// estimates the work of one item; small loops run on the calling goroutine.
func (p *Pool) For(n, cost int, fn func(lo, hi int)) {
	if n <= 0 {
		return
	}
	parts := p.Workers()
	if cost < 1 {
		cost = 1
	}
	if maxParts := n * cost / minWorkPerGoroutine; maxParts < parts {
		parts = maxParts
	}
	if parts > n {
		parts = n
	}
	if parts <= 1 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	wg.Add(parts - 1)
	for i := 1; i < parts; i++ {
		lo, hi := i*n/parts, (i+1)*n/parts
		go func() {
			defer wg.Done()
			fn(lo, hi)
		}()
	}
	fn(0, n/parts)
	wg.Wait()
}
