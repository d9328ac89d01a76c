package experts

// fetchCached is Fetch's fast path for a call whose experts are all in the
// RAM cache or, with Mmap, all mapped: under one lock, with no context,
// channel or read worker involved. It returns nil, having changed nothing,
// when any expert is missing or still loading.
func (s *Store) fetchCached(layer int, ids []int) []*Expert {
	if s.cache == nil || s.closed.Load() {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if e := s.live[key{layer, id}]; e == nil || !e.cached || e.state != ready {
			return nil
		}
	}
	out := make([]*Expert, len(ids))
	exs := make([]Expert, len(ids))
	for i, id := range ids {
		e, _ := s.acquireLocked(key{layer, id})
		exs[i] = Expert{Layer: layer, ID: id, Data: e.buf, entry: e}
		out[i] = &exs[i]
	}
	return out
}
