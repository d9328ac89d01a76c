//go:build cuda && linux

package cuda

import (
	"container/list"
	"fmt"
	"sync"

	"github.com/fm-moe/fm/pkg/backend"
)

// expertCache keeps routed experts in VRAM between steps (backend.ExpertCache).
// Every expert file of a model has one size, so the cache is a set of equal
// slots, each one device allocation holding a whole file; an expert's
// matrices point into its slot at the layout's offsets. The budget is
// Options.ExpertCacheBytes, by default the device's free memory at the first
// bind less a reserve for KV caches and activations. When the slots are all
// allocated, a miss reuses the least recently used slot that no caller holds:
// its new upload is queued on the compute stream after every kernel that read
// the old contents, so no synchronization is needed.
type expertCache struct {
	mu       sync.Mutex
	budget   int64 // bytes; < 0: no caching
	decided  bool
	slotSize int
	slots    int
	byKey    map[backend.ExpertKey]*slot
	lru      *list.List // *slot, most recent at the front

	// Statistics (CacheStats).
	hits, misses, evictions, uploadBytes int64
}

type slot struct {
	buf            Buffer
	key            backend.ExpertKey
	gate, up, down Matrix
	refs           int // Experts handed out and not yet released
	elem           *list.Element
}

// CacheStats are the expert cache's counters since the device was opened.
type CacheStats struct {
	Budget, SlotBytes       int64
	Slots                   int
	Hits, Misses, Evictions int64
	UploadBytes             int64 // host-to-device bytes of experts (cached or not)
}

// cacheReserve is device memory left free for what is allocated after the
// first expert (KV caches, activations, the pool) when the budget is the
// default.
const cacheReserve = 4 << 30

func newExpertCache(budget int64) *expertCache {
	c := &expertCache{byKey: map[backend.ExpertKey]*slot{}, lru: list.New()}
	if budget < 0 {
		c.budget, c.decided = -1, true
	} else if budget > 0 {
		c.budget, c.decided = budget, true
	}
	return c
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
		c := e.g.cache
		c.mu.Lock()
		e.s.refs--
		c.mu.Unlock()
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
	c.lru.MoveToFront(s.elem)
	return &cachedExpert{g: g, s: s}, true
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
		c.lru.MoveToFront(s.elem)
		c.mu.Unlock()
		return &cachedExpert{g: g, s: s}, nil
	}
	c.misses++
	c.uploadBytes += int64(l.FileSize)
	s, err := c.takeSlot(g, pl.size)
	if err != nil || s == nil {
		c.mu.Unlock()
		if err != nil {
			return nil, err
		}
		return g.BindExpert(l, buf) // not cacheable: plain binding
	}
	if s.elem != nil {
		delete(c.byKey, s.key)
		c.evictions++
	} else {
		s.elem = c.lru.PushFront(s)
	}
	c.lru.MoveToFront(s.elem)
	s.key = key
	c.byKey[key] = s
	s.gate, s.up, s.down = pl.matrices(l, s.buf.Ptr)
	s.refs++
	c.mu.Unlock()

	pl.upload(g.d, s.buf, buf, l.FileSize)
	ev, err := g.d.Record()
	if err != nil {
		// The slot's contents are unknown: forget the key.
		c.mu.Lock()
		delete(c.byKey, key)
		s.key = backend.ExpertKey{}
		s.refs--
		c.mu.Unlock()
		return nil, err
	}
	return &cachedExpert{g: g, s: s, copied: ev}, nil
}

// takeSlot returns a new slot while the budget allows, else the least
// recently used free one; nil when the expert cannot be cached (no budget,
// another file size, every slot in use). Caller holds c.mu.
func (c *expertCache) takeSlot(g *gpu, size int) (*slot, error) {
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
	}
	if size != c.slotSize {
		return nil, nil
	}
	if int64(c.slots+1)*int64(size) <= c.budget {
		b, err := g.d.AllocExact(size)
		if err == nil {
			c.slots++
			return &slot{buf: b}, nil
		}
		// Out of device memory before the budget: stop growing.
		c.budget = int64(c.slots) * int64(size)
	}
	for e := c.lru.Back(); e != nil; e = e.Prev() {
		if s := e.Value.(*slot); s.refs == 0 {
			return s, nil
		}
	}
	return nil, nil
}

// CacheStats returns the expert cache's counters.
func (g *gpu) CacheStats() CacheStats {
	c := g.cache
	c.mu.Lock()
	defer c.mu.Unlock()
	return CacheStats{Budget: c.budget, SlotBytes: int64(c.slotSize), Slots: c.slots, Hits: c.hits, Misses: c.misses,
		Evictions: c.evictions, UploadBytes: c.uploadBytes}
}

// String formats the counters for a report line.
func (s CacheStats) String() string {
	rate := 0.0
	if n := s.Hits + s.Misses; n > 0 {
		rate = float64(s.Hits) / float64(n)
	}
	return fmt.Sprintf("VRAM expert cache: %d slots of %d bytes (budget %.1f GiB), hit rate %.3f (%d hits, %d misses, %d evictions), %.2f GiB uploaded",
		s.Slots, s.SlotBytes, float64(s.Budget)/(1<<30), rate, s.Hits, s.Misses, s.Evictions, float64(s.UploadBytes)/(1<<30))
}

// CacheReport is the cache's counters as one line (fm-infer bench prints it).
func (g *gpu) CacheReport() string { return g.CacheStats().String() }
