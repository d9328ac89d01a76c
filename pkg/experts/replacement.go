package experts

// Replacement runs one of the Store's cache policies over keys of the
// caller's choosing, for caches kept outside the Store: the CUDA backend's
// VRAM expert slots use it, so both tiers evict by the same measured rules
// (the policy study in doc.go and docs/PERF.md). It decides membership only;
// the caller keeps the cached bytes. Not safe for concurrent use: callers
// hold their own lock.
type Replacement[K comparable] struct {
	p    policy
	ids  map[K]int // a small id per key ever used: ARC remembers evicted keys
	keys []K       // id → key
	live map[int]*entry
}

// NewReplacement returns an empty cache of capacity entries under policy p
// ("" is DefaultPolicy).
func NewReplacement[K comparable](p Policy, capacity int) (*Replacement[K], error) {
	pol, err := newPolicy(p, max(capacity, 1))
	if err != nil {
		return nil, err
	}
	return &Replacement[K]{p: pol, ids: map[K]int{}, live: map[int]*entry{}}, nil
}

// Use records a use of k and reports whether k was cached. On a miss k is
// admitted, and evict is first called for each key the policy pushes out.
func (r *Replacement[K]) Use(k K, evict func(K)) bool {
	id, ok := r.ids[k]
	if !ok {
		id = len(r.keys)
		r.ids[k] = id
		r.keys = append(r.keys, k)
	}
	if e := r.live[id]; e != nil {
		r.p.hit(e)
		return true
	}
	e := &entry{key: key{layer: id}, heapIndex: -1}
	r.p.admit(e, func(v *entry) {
		delete(r.live, v.key.layer)
		evict(r.keys[v.key.layer])
	})
	r.live[id] = e
	return false
}

// has reports whether k is cached without counting a use.
func (r *Replacement[K]) has(k K) bool {
	id, ok := r.ids[k]
	return ok && r.live[id] != nil
}
