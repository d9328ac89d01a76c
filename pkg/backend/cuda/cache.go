//go:build cuda && linux

package cuda

import (
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/fm-moe/fm/pkg/backend"
	"github.com/fm-moe/fm/pkg/experts"
)

// expertCache keeps routed experts in VRAM between steps (backend.ExpertCache).
// Every expert file of a model has one size, so the cache is a set of equal
// slots, each one device allocation holding a whole file; an expert's
// matrices point into its slot at the layout's offsets. The budget is
// Options.ExpertCacheBytes, by default the device's free memory at the first
// bind less a reserve for KV caches and activations.
//
// Which experts stay is decided by a pkg/experts replacement policy
// (Options.ExpertCachePolicy: LRU, LFUDA or ARC, the RAM cache's measured
// rules) over budget/slot-size entries. The policy decides membership; the
// slots follow: an evicted expert's slot becomes free at once, or, while a
// caller still holds the expert, when the last holder releases it. A new
// upload into a slot goes on the device's copy stream, where it overlaps the
// kernels queued before it (the previous expert's product), and the compute
// stream waits for it before the kernels queued after. The copy itself waits
// for the compute stream only when the slot may still be read by a queued
// kernel: when its last release is less than two synchronizations old
// (Device.Epoch). When every
// slot is held (a prefill chunk using more experts than fit), the expert is
// bound uncached for that use.
type expertCache struct {
	mu       sync.Mutex
	budget   int64 // bytes; < 0: no caching
	decided  bool
	policy   experts.Policy
	slotSize int
	slots    int // allocated
	maxSlots int // budget / slotSize, the policy's capacity
	byKey    map[backend.ExpertKey]*slot
	free     []*slot // allocated, holding no expert
	all      []*slot // every allocated slot, for Close
	rep      *experts.Replacement[backend.ExpertKey]

	// Statistics (CacheStats).
	hits, misses, evictions, uploadBytes int64
}

type slot struct {
	buf            Buffer
	key            backend.ExpertKey
	gate, up, down Matrix
	refs           int   // Experts handed out and not yet released
	evicted        bool  // the policy pushed it out while held: free it at the last release
	released       int64 // Device.Epoch when refs last dropped to 0 (a new slot: far in the past)
}

// CacheStats are the expert cache's counters since the device was opened.
type CacheStats struct {
	Budget, SlotBytes       int64
	Slots                   int
	Policy                  string
	Hits, Misses, Evictions int64
	UploadBytes             int64 // host-to-device bytes of experts (cached or not)
}

// cacheReserve is device memory left free for what is allocated after the
// first expert (KV caches, activations, the pool) when the budget is the
// default.
const cacheReserve = 4 << 30

func newExpertCache(budget int64, policy string) (*expertCache, error) {
	c := &expertCache{byKey: map[backend.ExpertKey]*slot{}, policy: experts.Policy(policy)}
	if c.policy == "" {
		c.policy = experts.DefaultPolicy
	}
	if _, err := experts.NewReplacement[backend.ExpertKey](c.policy, 1); err != nil {
		return nil, fmt.Errorf("cuda: expert cache: %w", err)
	}
	if budget < 0 {
		c.budget, c.decided = -1, true
	} else if budget > 0 {
		c.budget, c.decided = budget, true
	}
	return c, nil
}

// cachedExpert is a handed-out use of a slot (or, uncached, of a slab).
type cachedExpert struct {
	g      *gpu
	s      *slot
	copied Event
	once   sync.Once
}

func (e *cachedExpert) Release() {
	// No flush of the deferred expert batch: the slot stays resident, and
	// the only reuse of a slot (BindExpertCached's eviction) flushes first.
	// So a decode step's batch is still pending when the residual add that
	// follows it arrives (pendingEpi).
	e.once.Do(func() {
		e.g.d.WaitEvent(e.copied)
		e.s.releaseLocked(e.g)
	})
}

// CachedExpert implements backend.ExpertCache.
func (g *gpu) CachedExpert(key backend.ExpertKey) (backend.Expert, bool) {
	c := g.cache
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.byKey[key]
	if !ok {
		return nil, false
	}
	c.hits++
	s.refs++
	c.rep.Use(key, c.evict) // a hit: the policy evicts nothing
	return &cachedExpert{g: g, s: s}, true
}

// evict is the policy's callback for an expert it pushes out. Caller holds
// c.mu.
func (c *expertCache) evict(k backend.ExpertKey) {
	s, ok := c.byKey[k]
	if !ok {
		return // admitted while no slot was free: it never had one
	}
	delete(c.byKey, k)
	c.evictions++
	if s.refs > 0 {
		s.evicted = true
		return
	}
	c.free = append(c.free, s)
}

// BindExpertCached implements backend.ExpertCache.
func (g *gpu) BindExpertCached(key backend.ExpertKey, l *backend.ExpertLayout, buf []byte) (backend.Expert, error) {
	g.flushExperts()
	if err := g.checkLayout(l); err != nil {
		return nil, err
	}
	if len(buf) < l.FileSize {
		return nil, fmt.Errorf("cuda: expert buffer of %d bytes, the layout needs %d", len(buf), l.FileSize)
	}
	pl := g.placement(l) // before c.mu: Close takes g.mu, then c.mu
	c := g.cache
	c.mu.Lock()
	if s, ok := c.byKey[key]; ok {
		c.hits++
		s.refs++
		c.rep.Use(key, c.evict)
		c.mu.Unlock()
		return &cachedExpert{g: g, s: s}, nil
	}
	c.misses++
	c.uploadBytes += int64(l.FileSize)
	s, err := c.takeSlot(g, key, pl.size)
	if err != nil || s == nil {
		c.mu.Unlock()
		if err != nil {
			return nil, err
		}
		return g.BindExpert(l, buf) // not cacheable now: plain binding
	}
	s.key = key
	c.byKey[key] = s
	s.gate, s.up, s.down = pl.matrices(l, s.buf.Ptr)
	s.refs++
	afterKernels := s.released+2 > g.d.Epoch()
	c.mu.Unlock()
	var room [9]HostPiece // gate, up, down: data, scales, biases
	pieces := pl.pieces(buf, l.FileSize, room[:0])

	ev, err := g.d.UploadOnCopyStream(s.buf, pieces, afterKernels)
	if err != nil {
		// The slot's contents are unknown: forget the key, free the slot.
		c.mu.Lock()
		delete(c.byKey, key)
		s.key = backend.ExpertKey{}
		s.evicted = true
		c.mu.Unlock()
		(&cachedExpert{g: g, s: s}).releaseNoWait()
		return nil, err
	}
	return &cachedExpert{g: g, s: s, copied: ev}, nil
}

// releaseNoWait drops a use of a slot whose upload never completed.
func (e *cachedExpert) releaseNoWait() { e.s.releaseLocked(e.g) }

// releaseLocked drops one use of the slot, noting the epoch of its last use
// and freeing it if the policy evicted it meanwhile. It takes c.mu.
func (s *slot) releaseLocked(g *gpu) {
	c := g.cache
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.refs--; s.refs == 0 {
		s.released = g.d.Epoch()
		if s.evicted {
			s.evicted = false
			c.free = append(c.free, s)
		}
	}
}

// takeSlot admits key into the policy (evicting as it says) and returns a
// slot for it: a free one, else a new one while the budget allows; nil when
// the expert cannot be cached now (no budget, another file size, every slot
// held). Caller holds c.mu.
func (c *expertCache) takeSlot(g *gpu, key backend.ExpertKey, size int) (*slot, error) {
	if !c.decided {
		free, _, err := g.d.MemInfo()
		if err != nil {
			return nil, err
		}
		c.budget = max(0, free-cacheReserve)
		c.decided = true
	}
	if c.budget <= 0 {
		return nil, nil
	}
	if c.slotSize == 0 {
		c.slotSize = size
		c.maxSlots = int(c.budget / int64(size))
		if c.maxSlots == 0 {
			c.budget = 0
			return nil, nil
		}
		rep, err := experts.NewReplacement[backend.ExpertKey](c.policy, c.maxSlots)
		if err != nil {
			return nil, err
		}
		c.rep = rep
	}
	if size != c.slotSize {
		return nil, nil
	}
	c.rep.Use(key, c.evict)
	if n := len(c.free); n > 0 {
		s := c.free[n-1]
		c.free = c.free[:n-1]
		return s, nil
	}
	if c.slots < c.maxSlots {
		b, err := g.d.AllocExact(size)
		if err == nil {
			c.slots++
			s := &slot{buf: b, released: math.MinInt64 / 2}
			c.all = append(c.all, s)
			return s, nil
		}
		// Out of device memory before the budget: stop growing (the policy
		// keeps its capacity; experts it admits beyond the slots run
		// uncached).
		c.maxSlots = c.slots
	}
	return nil, nil
}

// CacheStats returns the expert cache's counters.
func (g *gpu) CacheStats() CacheStats {
	c := g.cache
	c.mu.Lock()
	defer c.mu.Unlock()
	return CacheStats{Budget: c.budget, SlotBytes: int64(c.slotSize), Slots: c.slots, Policy: string(c.policy), Hits: c.hits,
		Misses: c.misses, Evictions: c.evictions, UploadBytes: c.uploadBytes}
}

// String formats the counters for a report line.
func (s CacheStats) String() string {
	rate := 0.0
	if n := s.Hits + s.Misses; n > 0 {
		rate = float64(s.Hits) / float64(n)
	}
	return fmt.Sprintf("VRAM expert cache (%s): %d slots of %d bytes (budget %.1f GiB), hit rate %.3f (%d hits, %d misses, %d evictions), %.2f GiB uploaded",
		s.Policy, s.Slots, s.SlotBytes, float64(s.Budget)/(1<<30), rate, s.Hits, s.Misses, s.Evictions, float64(s.UploadBytes)/(1<<30))
}

// ExpertCacheStats implements backend.ExpertCache.
func (g *gpu) ExpertCacheStats() backend.ExpertCacheStats {
	s := g.CacheStats()
	return backend.ExpertCacheStats{Hits: s.Hits, Misses: s.Misses, Evictions: s.Evictions, UploadBytes: s.UploadBytes, Budget: max(0, s.Budget)}
}

// CacheReport is the cache's counters as one line (fm-infer bench prints it).
func (g *gpu) CacheReport() string { return g.CacheStats().String() }

// MeasureUpload implements backend.UploadMeter: the best of three
// synchronous copies of n bytes from pinned host memory into the device.
func (g *gpu) MeasureUpload(n int) (float64, error) {
	if n <= 0 {
		return 0, fmt.Errorf("cuda: upload measurement of %d bytes", n)
	}
	host, err := g.d.HostAlloc(n)
	if err != nil {
		return 0, err
	}
	defer g.d.FreeHost(host)
	dev, err := g.d.AllocExact(n)
	if err != nil {
		return 0, err
	}
	defer g.d.FreeExact(dev)
	best := time.Duration(math.MaxInt64)
	for range 3 {
		start := time.Now()
		if err := g.d.Upload(dev, 0, host); err != nil {
			return 0, err
		}
		best = min(best, time.Since(start))
	}
	return float64(n) / best.Seconds(), nil
}
