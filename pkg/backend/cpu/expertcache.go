package cpu

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/fm-moe/fm/pkg/backend"
	"github.com/fm-moe/fm/pkg/experts"
)

// Row-interleaved routed experts (backend.ExpertCache on the CPU).
//
// In int8 mode on an AVX-512 VNNI CPU the dense 2-, 3-, 4- and 8-bit matrices get a
// row-interleaved copy at their first product (rowpack.go). A routed expert
// cannot get one per use: its file is read (or taken from the expert store's
// RAM cache) for every token that routes to it, and packing costs about as
// much as reading the bytes a few times. So the device keeps packed experts
// itself, between steps, within a RAM budget: a routed expert is packed once
// when it misses, and every later use finds the packed copy (CachedExpert)
// and skips the store altogether.
//
// The budget is the expert store's RAM budget (--expert-cache-mb), which
// the engine hands to this cache instead of the store when the cache serves
// the model's expert layout (TakeRAMBudget) and every expert fits in it, so
// an expert is never held twice, once as its file and once packed, and is
// packed once for good; or Options.ExpertCacheBytes for callers that open
// the device themselves. Packing a miss costs some 30 times computing the
// expert for one token and saves about a quarter of each later use, so a
// cache that evicts (a model larger than the budget) loses: measured,
// decode at half the speed of the store's cache of files (docs/PERF.md). Without a budget, outside
// int8 mode, without VNNI (arm64, -tags noasm), with FM_ROWPACK=0, or for a
// layout the packed kernels do not take (not 2-, 3-, 4- or 8-bit with bf16 scales, groups
// not a multiple of 32 elements, a matrix of fewer than 16 rows), the cache is
// off: CachedExpert misses, BindExpertCached is BindExpert, no memory is
// held and the counters stay 0.
//
// A packed expert is one slot: one allocation of the layout's packed size
// (the three matrices' interleaved blocks plus a copy of the rows past each
// one's last block of 16, in the original layout), the same size as the
// expert's file. Which experts stay is decided by a pkg/experts replacement
// policy (Options.ExpertCachePolicy, as the store's RAM cache and a GPU's
// VRAM cache) over budget/slot-size entries; the slots follow it: an evicted
// expert's slot is reused at once, or, while a caller still holds the
// expert, at its last Release. When every slot is held (a prefill chunk
// using more experts than fit), the expert is bound unpacked for that use.
//
// Concurrency: every method may be called from any goroutine. c.mu guards
// the map, the policy, the free list, the reference counts and the counters;
// a slot's bytes are written only by the binder that took it, before the
// slot is published in byKey, under the slot's fill lock, which a
// concurrent CachedExpert of the same key waits on (so a hit never sees a
// half-packed slot). Packing runs outside c.mu, on the device's pool.
type expertCache struct {
	mu       sync.Mutex
	budget   int64 // bytes; 0: off
	on       bool  // the device computes with packed experts (int8, VNNI, FM_ROWPACK)
	policy   experts.Policy
	layout   *backend.ExpertLayout // the layout the slots are cut for (nil: not decided)
	refused  atomic.Bool           // no budget or not packable at the first bind: off for good
	slotSize int
	slots    int    // allocated
	slab     []byte // unused rest of the last slab (carve)
	maxSlots int
	byKey    map[backend.ExpertKey]*xslot
	free     []*xslot
	rep      *experts.Replacement[backend.ExpertKey]

	hits, misses, evictions, packedBytes int64
}

// xslot is one packed expert's memory and its matrices (views into buf, set
// once when the slot is made; a reuse repacks the same places).
type xslot struct {
	buf     []byte
	key     backend.ExpertKey
	ms      [3]Matrix // gate, up, down: packed, Data/Scales/Biases nil
	refs    int       // experts handed out and not yet released
	evicted bool      // the policy pushed it out while held: free at the last release
	fill    sync.Mutex
}

func newExpertCache(budget int64, policy string, on bool) *expertCache {
	c := &expertCache{budget: max(0, budget), on: on, policy: experts.Policy(policy), byKey: map[backend.ExpertKey]*xslot{}}
	if c.policy == "" {
		c.policy = experts.DefaultPolicy
	}
	return c
}

// expertPackable reports whether the packed kernels take every matrix of l.
func expertPackable(l *backend.ExpertLayout) bool {
	for _, em := range [3]*backend.ExpertMatrix{&l.Gate, &l.Up, &l.Down} {
		d := em.Desc
		m := Matrix{Rows: d.Rows, Cols: d.Cols, Format: d.Format, Bits: d.Bits, GroupSize: d.GroupSize, ScaleFormat: d.ScaleFormat}
		if !rowPackable(&m) {
			return false
		}
	}
	return true
}

// slotBytes is the size of one packed expert of layout l: per matrix, its
// packed blocks and its tail rows (codes, bf16 scales and biases).
func slotBytes(l *backend.ExpertLayout) int {
	n := 0
	for _, em := range [3]*backend.ExpertMatrix{&l.Gate, &l.Up, &l.Down} {
		d := em.Desc
		m := Matrix{Rows: d.Rows, Cols: d.Cols, Format: d.Format, Bits: d.Bits, GroupSize: d.GroupSize, ScaleFormat: d.ScaleFormat}
		tail := d.Rows % rowPackRows
		n += rowPackBytes(&m) + tail*(m.RowBytes()+4*m.Groups())
	}
	return n
}

// newSlot makes a slot for layout l in buf (slotBytes(l) long) and cuts its
// matrices.
func newSlot(l *backend.ExpertLayout, buf []byte) *xslot {
	s := &xslot{buf: buf}
	off := 0
	take := func(n int) []byte { b := s.buf[off : off+n : off+n]; off += n; return b }
	for i, em := range [3]*backend.ExpertMatrix{&l.Gate, &l.Up, &l.Down} {
		d := em.Desc
		m := Matrix{Rows: d.Rows, Cols: d.Cols, Format: d.Format, Bits: d.Bits, GroupSize: d.GroupSize, ScaleFormat: d.ScaleFormat}
		nb := d.Rows / rowPackRows
		pk := &rowPack{data: take(rowPackBytes(&m)), blocks: nb, bits: d.Bits, tail: m}
		tr := d.Rows - nb*rowPackRows
		pk.tail.Rows = tr
		pk.tail.Data, pk.tail.Scales, pk.tail.Biases = take(tr*m.RowBytes()), take(2*tr*m.Groups()), take(2*tr*m.Groups())
		m.packed = pk
		s.ms[i] = m
	}
	return s
}

// fillSlot packs the expert file in buf (layout l, checked) into s, blocks
// split over p's workers.
func fillSlot(s *xslot, l *backend.ExpertLayout, buf []byte, p *Pool) error {
	for i, em := range [3]*backend.ExpertMatrix{&l.Gate, &l.Up, &l.Down} {
		data, scales, biases := em.Bytes(buf)
		src, err := View(em.Desc, data, scales, biases)
		if err != nil {
			return err
		}
		pk := s.ms[i].packed
		packInto(pk.data, &src, p)
		t := tailRows(&src, pk.blocks*rowPackRows)
		copy(pk.tail.Data, t.Data)
		copy(pk.tail.Scales, t.Scales)
		copy(pk.tail.Biases, t.Biases)
	}
	return nil
}

// setBudget sets the budget before the first expert is cached; it reports
// whether the cache will keep experts of layout l.
func (c *expertCache) setBudget(l *backend.ExpertLayout, bytes int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.on || bytes <= 0 || !expertPackable(l) || c.layout != nil || c.refused.Load() {
		return false
	}
	c.budget = bytes
	return true
}

// active reports whether the cache may hold experts at all (no lock: on is
// fixed at open, and
// refused only ever turns true).
func (c *expertCache) active() bool { return c != nil && c.on && !c.refused.Load() }

// decide fixes the slots for layout l at the first bind; it reports whether
// experts of l are cached. Caller holds c.mu.
func (c *expertCache) decide(l *backend.ExpertLayout) (bool, error) {
	if c.refused.Load() {
		return false, nil
	}
	if c.layout == nil {
		if c.budget <= 0 || !expertPackable(l) {
			c.refused.Store(true)
			return false, nil
		}
		c.layout, c.slotSize = l, slotBytes(l)
		c.maxSlots = int(c.budget / int64(c.slotSize))
		if c.maxSlots == 0 {
			c.refused.Store(true)
			return false, nil
		}
		rep, err := experts.NewReplacement[backend.ExpertKey](c.policy, c.maxSlots)
		if err != nil {
			return false, fmt.Errorf("cpu: expert cache: %w", err)
		}
		c.rep = rep
	}
	// Another model's experts on the same device are cached only when their
	// matrices have the slots' shapes.
	return sameShapes(l, c.layout), nil
}

// sameShapes reports whether two layouts describe the same matrices (the
// offsets in the file may differ; the slots only depend on the shapes).
func sameShapes(a, b *backend.ExpertLayout) bool {
	return a.Gate.Desc == b.Gate.Desc && a.Up.Desc == b.Up.Desc && a.Down.Desc == b.Down.Desc
}

// evict is the policy's callback for an expert it pushes out. Caller holds
// c.mu.
func (c *expertCache) evict(k backend.ExpertKey) {
	s, ok := c.byKey[k]
	if !ok {
		return // admitted while every slot was held: it never had one
	}
	delete(c.byKey, k)
	c.evictions++
	if s.refs > 0 {
		s.evicted = true
		return
	}
	c.free = append(c.free, s)
}

// release drops one use of s. It takes c.mu.
func (c *expertCache) release(s *xslot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.refs--; s.refs == 0 && s.evicted {
		s.evicted = false
		c.free = append(c.free, s)
	}
}

// takeSlot returns a slot for a missed key (admitting it into the policy,
// which may evict others): a free one, else a new one while the budget
// allows; nil when every slot is held. Caller holds c.mu.
func (c *expertCache) takeSlot(key backend.ExpertKey) *xslot {
	c.rep.Use(key, c.evict)
	if n := len(c.free); n > 0 {
		s := c.free[n-1]
		c.free = c.free[:n-1]
		return s
	}
	if c.slots < c.maxSlots {
		c.slots++
		return newSlot(c.layout, c.carve())
	}
	return nil
}

// slabSlots is how many slots one allocation holds: enough that most of it
// lies on huge pages (hugepages.go; a single 2.5 MiB slot would rarely hold
// an aligned one), few enough that a budget never filled reserves little.
const slabSlots = 32

// carve returns the next slot's memory from the current slab, allocating a
// slab for up to slabSlots of the slots still allowed when it is used up.
// Caller holds c.mu and has counted the slot in c.slots.
func (c *expertCache) carve() []byte {
	if len(c.slab) < c.slotSize {
		c.slab = hugeBytes(min(slabSlots, c.maxSlots-c.slots+1) * c.slotSize)
	}
	b := c.slab[:c.slotSize:c.slotSize]
	c.slab = c.slab[c.slotSize:]
	return b
}

// CachedExpert implements backend.ExpertCache: the packed expert under key,
// if the cache holds it. The caller Releases it after its last ExpertFFN(s);
// the packed copy stays.
func (d *Device) CachedExpert(key backend.ExpertKey) (backend.Expert, bool) {
	c := d.xc
	if !c.active() {
		return nil, false
	}
	c.mu.Lock()
	s, ok := c.byKey[key]
	if !ok {
		c.mu.Unlock()
		return nil, false
	}
	c.hits++
	s.refs++
	c.rep.Use(key, c.evict) // a hit: the policy evicts nothing
	c.mu.Unlock()
	return d.slotExpert(s), true
}

// slotExpert hands out a use of s, once its packing (by a concurrent
// binder) is done.
func (d *Device) slotExpert(s *xslot) backend.Expert {
	s.fill.Lock()
	s.fill.Unlock() //nolint:staticcheck // an empty critical section: waits for the binder's fill
	e := d.newExpert()
	e.gate, e.up, e.down, e.slot = s.ms[0], s.ms[1], s.ms[2], s
	return e
}

// BindExpertCached implements backend.ExpertCache: a miss is packed into a
// slot (on the device's pool, once per expert while it stays cached) and
// bound from there; buf is only read during the call, so its rules are
// BindExpert's. When the cache is off, or every slot is held, it is
// BindExpert.
func (d *Device) BindExpertCached(key backend.ExpertKey, l *backend.ExpertLayout, buf []byte) (backend.Expert, error) {
	c := d.xc
	if !c.active() {
		return d.BindExpert(l, buf)
	}
	if len(buf) < l.FileSize {
		return nil, fmt.Errorf("cpu: expert buffer of %d bytes, the layout needs %d", len(buf), l.FileSize)
	}
	c.mu.Lock()
	ok, err := c.decide(l)
	if err != nil || !ok {
		c.mu.Unlock()
		if err != nil {
			return nil, err
		}
		return d.BindExpert(l, buf)
	}
	if s, ok := c.byKey[key]; ok { // packed meanwhile by another caller
		c.hits++
		s.refs++
		c.rep.Use(key, c.evict)
		c.mu.Unlock()
		return d.slotExpert(s), nil
	}
	c.misses++
	s := c.takeSlot(key)
	if s == nil {
		c.mu.Unlock()
		return d.BindExpert(l, buf)
	}
	s.key, s.refs = key, 1
	s.fill.Lock()
	c.byKey[key] = s
	c.packedBytes += int64(c.slotSize)
	c.mu.Unlock()
	err = fillSlot(s, l, buf, d.pool)
	s.fill.Unlock()
	if err != nil {
		// Never hand out what was not packed: forget the key; the slot is
		// free at the last release (a concurrent hit may hold it).
		c.mu.Lock()
		if c.byKey[key] == s {
			delete(c.byKey, key)
			s.evicted = true
		}
		c.mu.Unlock()
		c.release(s)
		return nil, err
	}
	e := d.newExpert()
	e.gate, e.up, e.down, e.slot = s.ms[0], s.ms[1], s.ms[2], s
	return e, nil
}

// ExpertCacheStats implements backend.ExpertCache. UploadBytes counts the
// bytes packed into the cache (one slot per miss cached); Host is set: the
// cache is in RAM, the tier the expert store's cache would otherwise be.
func (d *Device) ExpertCacheStats() backend.ExpertCacheStats {
	c := d.xc
	if c == nil {
		return backend.ExpertCacheStats{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s := backend.ExpertCacheStats{Hits: c.hits, Misses: c.misses, Evictions: c.evictions, UploadBytes: c.packedBytes, Host: true}
	if c.active() {
		s.Budget = c.budget
	}
	return s
}

// TakeRAMBudget implements backend.RAMExpertCache: when the device packs
// experts of layout l (int8 mode, AVX-512 VNNI, FM_ROWPACK not 0, a 2-, 3-, 4- or 8-bit
// bf16 layout), bytes becomes the packed cache's budget and it reports true;
// the engine then gives the expert store no RAM cache of its own.
func (d *Device) TakeRAMBudget(l *backend.ExpertLayout, bytes int64) bool {
	return d.xc != nil && d.xc.setBudget(l, bytes)
}
