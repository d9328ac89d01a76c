package cpu

import (
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// scratch recycles float32 buffers between kernel calls, so that a decode step
// (hundreds of small products) does not allocate. Buffers are kept by size
// class (powers of two): from one pool of mixed sizes a prefill's 8 MB
// request often drew a small buffer and allocated afresh, and the first
// writes to fresh memory fault page by page (~12 µs a page on the development
// VM: half the time of a 512-token prefill's per-head norms, docs/PERF.md,
// round seven).
type scratch struct{ classes [48]sync.Pool }

// scratchClass is the size class of n floats: the smallest c with 2^c ≥ n.
func scratchClass(n int) int { return bits.Len(uint(max(n, 1) - 1)) }

// get returns a buffer of n floats (contents undefined); put it back when done.
func (s *scratch) get(n int) *[]float32 {
	c := scratchClass(n)
	b, _ := s.classes[c].Get().(*[]float32)
	if b == nil {
		b = new([]float32)
	}
	if cap(*b) < n {
		*b = make([]float32, n, 1<<c)
	}
	*b = (*b)[:n]
	return b
}

// put returns a buffer from get.
func (s *scratch) put(b *[]float32) { s.classes[scratchClass(cap(*b))].Put(b) }

// minWorkPerGoroutine is the amount of work (roughly multiply-adds) below which
// handing a part to another worker costs more than it saves: a hand-off to a
// spinning helper is well under a microsecond, waking a parked one a few
// microseconds, about what 64K multiply-adds take.
const minWorkPerGoroutine = 1 << 16

// Pool splits loops over workers: the calling goroutine and workers-1
// persistent helpers. A helper spins for a while after each part, so the
// back-to-back products of a decode step hand off in well under a
// microsecond, then parks, so an idle pool costs nothing. One For at a time
// owns the helpers; a concurrent or nested For falls back to fresh goroutines,
// so a Pool can be shared by every caller.
type Pool struct {
	workers int
	// level selects the kernels: levelGeneric runs the pure-Go ones, higher
	// levels the assembly ones up to what the CPU has (the tests compare them).
	level int
	// int8 selects int8-activation products for affine matrices (int8.go);
	// false computes them exactly in float32.
	int8 bool
	buf  scratch
	team *team // nil for one worker
}

// NewPool returns a pool of the given width; workers <= 0 means GOMAXPROCS.
func NewPool(workers int) *Pool { return newPool(workers, simdLevel) }

func newPool(workers, level int) *Pool {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	p := &Pool{workers: workers, level: min(level, simdLevel)}
	if workers > 1 {
		p.team = newTeam(workers - 1)
		// The helpers reference the team, not the pool: once the pool is
		// unreachable they are told to exit.
		runtime.AddCleanup(p, (*team).stop, p.team)
	}
	return p
}

// Workers is the pool's width.
func (p *Pool) Workers() int { return p.workers }

// ranger is a loop body over [lo, hi).
type ranger interface{ run(lo, hi int) }

type funcRanger func(lo, hi int)

func (f funcRanger) run(lo, hi int) { f(lo, hi) }

// For runs fn over [0, n) split into contiguous ranges, one per worker. cost
// estimates the work of one item; small loops run on the calling goroutine.
func (p *Pool) For(n, cost int, fn func(lo, hi int)) {
	p.forRanger(n, cost, funcRanger(fn))
}

func (p *Pool) forRanger(n, cost int, r ranger) {
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
		r.run(0, n)
		return
	}
	if t := p.team; t != nil && t.mu.TryLock() {
		t.run(n, parts, r)
		t.mu.Unlock()
		return
	}
	var wg sync.WaitGroup
	wg.Add(parts - 1)
	for i := 1; i < parts; i++ {
		lo, hi := i*n/parts, (i+1)*n/parts
		go func() {
			defer wg.Done()
			r.run(lo, hi)
		}()
	}
	r.run(0, n/parts)
	wg.Wait()
}

// spinTime is how long an idle helper polls for its next part before it
// parks, while the owner computes. Waking a parked helper costs 10–20 µs on
// the development VM (an OS thread wake-up) and 100–600 µs on a 16-vCPU host
// (the hypervisor wakes an idle vCPU), a hand-off to a polling one under
// 1 µs. The products of a decode step come tens of microseconds apart, but a
// worker left out of a product with fewer parts than workers (an attention
// core over a few KV heads, a router) idles through it and the owner's serial
// work around it: with 100 µs, 16 workers parked 5–13 of their 15 helpers on
// every product of a decode step, each late start stretched the product, and
// the longer wait parked more (docs/PERF.md, round fourteen). 1 ms keeps them
// hot through a step and between tokens, and still lets an idle pool sleep.
const spinTime = time.Millisecond

// restSpinTime is spinTime after Rest, while the owner waits for something
// else (an expert file's read): the helpers park sooner and leave the CPUs to
// the goroutines that read and verify the files. A streaming decode on 16
// threads whose helpers polled 1 ms into every wait ran 0.7× (round
// fourteen); 100 µs still covers a read that the page cache serves.
const restSpinTime = 100 * time.Microsecond

// yieldPerHelper sets how often a polling helper gives its thread to other
// goroutines (runtime.Gosched), so that the expert reads among them still
// run while the helpers are hot: every helpers² × yieldPerHelper, so that the
// team as a whole yields every helpers × yieldPerHelper. Between yields a
// poll is an atomic load and a PAUSE (cpuRelax). A yield queues the goroutine
// on the scheduler's global run queue under its one lock, and a helper in the
// scheduler is not polling: yielding on every poll, as the pool first did,
// cost a 16-thread decode 55 % of its CPU in that lock; one team-wide yield
// every 2 µs (each of 15 helpers every 30 µs) still started the last helper
// of a product 70–110 µs after the owner posted it, one every 20 µs (each
// helper every 300 µs) 7–18 µs. With one helper (two threads) it yields about
// every 2 µs, which the two-core decode needs: a fixed 25 µs cost it ~7 %
// (docs/PERF.md, "The pool's helpers on many cores" and round fourteen).
const yieldPerHelper = 2 * time.Microsecond

// pollsPerClock is how many polls a helper makes between looks at the clock
// (a poll took 19 ns on the development VM, ~1.2 µs for 64; time.Now is
// dearer than a poll).
const pollsPerClock = 64

// team is a pool's persistent helpers.
type team struct {
	mu      sync.Mutex // held by the For that owns the helpers
	helpers []*helper
	// resting is set by Rest and cleared by the next hand-off: idle helpers
	// then poll restSpinTime instead of spinTime.
	resting atomic.Bool
}

// helper is one persistent worker. The owner writes r, lo, hi, then bumps
// gen; the helper runs the part and stores gen into done.
type helper struct {
	gen    atomic.Uint32
	done   atomic.Uint32
	parked atomic.Bool
	quit   atomic.Bool
	wake   chan struct{} // capacity 1: a wake-up is never lost, at worst spurious
	r      ranger
	lo, hi int
	team   *team

	yieldEvery time.Duration // set once: see yieldPerHelper

	// The owner's side of the same protocol, for waiting on done.
	ownerParked atomic.Bool
	finished    chan struct{} // capacity 1
}

func newTeam(n int) *team {
	t := &team{helpers: make([]*helper, n)}
	for i := range t.helpers {
		h := &helper{team: t, wake: make(chan struct{}, 1), finished: make(chan struct{}, 1),
			yieldEvery: time.Duration(n*n) * yieldPerHelper}
		t.helpers[i] = h
		go h.loop()
	}
	return t
}

// run splits [0, n) into parts ranges: the owner takes the first, helpers the
// rest.
func (t *team) run(n, parts int, r ranger) {
	if t.resting.Load() {
		t.resting.Store(false)
	}
	hs := t.helpers[:parts-1]
	woke := false
	for i, h := range hs {
		h.r, h.lo, h.hi = r, (i+1)*n/parts, (i+2)*n/parts
		h.gen.Add(1)
		if h.parked.Load() {
			woke = true
			select {
			case h.wake <- struct{}{}:
			default:
			}
		}
	}
	r.run(0, n/parts)
	polls := ownerPolls
	if woke {
		polls = 0
	}
	for _, h := range hs {
		h.await(h.gen.Load(), polls)
		h.r = nil // do not keep the caller's data reachable
	}
}

// storeLoad: the park/wake hand-shakes above and below are Dekker's pattern
// (each side writes its flag, then reads the other's), which needs the write
// ordered before the read. Go's atomics are sequentially consistent, but
// qemu-user on an x86 host (which runs the arm64 tests in make test)
// evidently lets an arm64 store-release pass a later load-acquire, so both
// sides could miss each other and sleep forever ("all goroutines are asleep"
// in 2 of 6 qemu runs of the pool-heavy tests with Stores, 0 of 10 with
// Swaps). The flag writes are
// therefore Swaps, read-modify-writes that every host orders fully; on amd64
// an atomic Store already is an XCHG, on arm64 a SWPAL costs about as much as
// an STLR.
//
// ownerPolls and ownerYields bound how long the owner waits for a
// helper's part before it sleeps: first plain polls (cpuRelax), then polls
// that yield (runtime.Gosched). Parts are split evenly, so the wait is
// usually short; but when the machine is oversubscribed the helper may not
// even be running, and an owner that never yielded would keep its CPU from
// it. An owner that had to wake a parked helper yields from the first poll:
// the woken goroutine usually waits on the owner's own P, and polling there
// left it to an idle P's OS-thread wake-up (BenchmarkPoolHandoff with 200 µs
// between parts: 9 µs a hand-off with yields, 33 µs with 1,024 polls first).
const (
	ownerPolls  = 1024
	ownerYields = 64
)

// await waits until the helper has finished part gen, polling polls times
// before it yields.
func (h *helper) await(gen uint32, polls int) {
	for spins := 0; h.done.Load() != gen; spins++ {
		if spins < polls {
			cpuRelax()
			continue
		}
		if spins < polls+ownerYields {
			runtime.Gosched()
			continue
		}
		h.ownerParked.Swap(true) // Swap, not Store: see storeLoad
		if h.done.Load() != gen {
			<-h.finished
		}
		h.ownerParked.Store(false)
	}
}

func (t *team) stop() {
	for _, h := range t.helpers {
		h.quit.Store(true)
		select {
		case h.wake <- struct{}{}:
		default:
		}
	}
}

// spinLimit is how long the helper polls before it parks: see spinTime and
// restSpinTime.
func (h *helper) spinLimit() time.Duration {
	if h.team.resting.Load() {
		return restSpinTime
	}
	return spinTime
}

// Rest tells the pool that its caller is about to wait for something other
// than the pool's work (an expert file's read): its idle helpers park after
// restSpinTime instead of spinTime, so that the goroutines doing that work
// get the CPUs. The next For ends the rest. It changes no result; calling it
// from any goroutine is safe.
func (p *Pool) Rest() {
	if p.team != nil {
		p.team.resting.Store(true)
	}
}

func (h *helper) loop() {
	var seen uint32
	for {
		idle := time.Now()
		yielded := idle
		for spins := 1; h.gen.Load() == seen; spins++ {
			if h.quit.Load() {
				return
			}
			cpuRelax()
			if spins%pollsPerClock != 0 {
				continue
			}
			if now := time.Now(); now.Sub(idle) < h.spinLimit() {
				if now.Sub(yielded) >= h.yieldEvery {
					runtime.Gosched()
					yielded = time.Now()
				}
				continue
			}
			// Park. The owner bumps gen before reading parked, and we set
			// parked before re-reading gen, so one of us sees the other.
			h.parked.Swap(true) // Swap, not Store: see storeLoad
			if h.gen.Load() == seen && !h.quit.Load() {
				<-h.wake
			}
			h.parked.Store(false)
			idle = time.Now()
			yielded = idle
		}
		seen = h.gen.Load()
		h.r.run(h.lo, h.hi)
		h.done.Swap(seen) // Swap, not Store: see storeLoad
		if h.ownerParked.Load() {
			select {
			case h.finished <- struct{}{}:
			default:
			}
		}
	}
}
