package engine

import (
	"context"
	"slices"
	"sync"

	"github.com/fm-moe/fm/pkg/model"
)

// PrefixCache lets independent requests share work: it keeps model states
// taken at turn boundaries of earlier generations (the end of each prompt,
// given marks inside it, and the end of each generation), each labelled with
// the exact token sequence it has consumed, and starts a new generation from
// the longest one whose tokens are a prefix of the new prompt.
//
// The GatedDeltaNet layers' recurrent state cannot be rewound to an earlier
// position, so a state is reused only when its whole token sequence matches:
// a conversation that diverges from a snapshot one token before its end
// starts from an earlier snapshot (or from scratch), never from a state that
// has seen other tokens. Snapshots are immutable once stored; a request
// continues from a private copy. Memory is bounded: the least recently used
// snapshots are dropped once their total size passes the budget.
//
// Every state the cache makes is released (pkg/backend: on a GPU it is
// device memory): a request's private copy when the request ends, unless
// the cache keeps it as a snapshot; a snapshot when it is evicted, declined,
// or the cache is cleared.
//
// It is safe for concurrent use; the model's forward pass must then be safe
// for concurrent use on distinct states, as the CPU model is.
type PrefixCache struct {
	e        *Engine
	maxBytes int64

	mu      sync.Mutex
	entries []*prefixEntry // least recently used first
	bytes   int64
	hits    int64
}

type prefixEntry struct {
	ids   []int
	st    *model.State
	bytes int64
}

// NewPrefixCache returns a cache holding at most maxBytes of snapshots
// (KV cache plus recurrent state); maxBytes <= 0 disables reuse.
func (e *Engine) NewPrefixCache(maxBytes int64) *PrefixCache {
	return &PrefixCache{e: e, maxBytes: maxBytes}
}

// CacheStats describe a PrefixCache.
type CacheStats struct {
	Entries int
	Bytes   int64
	// Hits counts generations that started from a snapshot.
	Hits int64
}

// Stats returns the cache's current size and hit count.
func (c *PrefixCache) Stats() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return CacheStats{Entries: len(c.entries), Bytes: c.bytes, Hits: c.hits}
}

// Clear releases every snapshot; the cache stays usable.
func (c *PrefixCache) Clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.entries {
		e.st.Release()
	}
	c.entries, c.bytes = nil, 0
}

// Generate runs ids (the whole conversation, rendered and tokenized) like
// Engine.Generate on a fresh state, but starts from the longest cached
// snapshot whose tokens are a proper prefix of ids; Result.CachedTokens says
// how many prompt tokens it skipped. marks are positions inside ids (turn
// boundaries, e.g. the end of the last message before the generation
// prompt) at which to keep extra snapshots; the end of the prompt and the end
// of a successful generation are always kept. opts.History is set to ids.
func (c *PrefixCache) Generate(ctx context.Context, ids []int, marks []int, opts GenerateOptions) (*Result, error) {
	st, start := c.lookup(ids)
	if st == nil {
		st = c.e.Model.NewState()
	} else {
		c.mu.Lock()
		c.hits++
		c.mu.Unlock()
	}
	opts.History = ids
	if c.maxBytes > 0 {
		for _, m := range marks {
			if m > start && m < len(ids) {
				opts.marks = append(opts.marks, m-start)
			}
		}
		slices.Sort(opts.marks)
		opts.onMark = func(s *model.State) { c.store(ids[:s.Len()], s.Clone()) }
		opts.afterPrefill = func(s *model.State) { c.store(ids, s.Clone()) }
	}
	res, err := c.e.Generate(ctx, st, ids[start:], opts)
	if res != nil {
		res.CachedTokens = start
	}
	if err == nil && c.maxBytes > 0 && len(res.Tokens) > 1 {
		// Every sampled token but the last was fed back; the state itself is
		// handed over, nobody else holds it.
		fed := append(slices.Clone(ids), res.Tokens[:len(res.Tokens)-1]...)
		c.store(fed, st)
	} else {
		st.Release()
	}
	return res, err
}

// lookup returns a private copy of the longest snapshot whose tokens are a
// proper prefix of ids (at least one token must remain to produce logits),
// and its length; nil, 0 when there is none or the copy cannot be made.
func (c *PrefixCache) lookup(ids []int) (*model.State, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	best := -1
	for i, e := range c.entries {
		if len(e.ids) < len(ids) && (best < 0 || len(e.ids) > len(c.entries[best].ids)) &&
			slices.Equal(e.ids, ids[:len(e.ids)]) {
			best = i
		}
	}
	if best < 0 {
		return nil, 0
	}
	e := c.entries[best]
	c.touch(best)
	// Cloning under the lock keeps it simple (an eviction cannot release
	// the snapshot meanwhile); a clone is a memory copy, small next to the
	// prefill it saves.
	st := e.st.Clone()
	if st.Err() != nil {
		// The device could not make the copy: prefill from scratch instead.
		st.Release()
		return nil, 0
	}
	return st, len(e.ids)
}

// touch moves entry i to the most recently used end.
func (c *PrefixCache) touch(i int) {
	e := c.entries[i]
	c.entries = append(slices.Delete(c.entries, i, i+1), e)
}

// store keeps st, which it owns from now on, as the state after ids,
// evicting and releasing the least recently used snapshots beyond the
// budget. It releases st instead of keeping it when the same tokens are
// cached already, when st is larger than the whole budget, or when st is
// unusable (a failed Clone).
func (c *PrefixCache) store(ids []int, st *model.State) {
	if st.Err() != nil {
		st.Release()
		return
	}
	st.Shrink() // an idle snapshot needs no step workspace
	n := st.Bytes()
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, e := range c.entries {
		if slices.Equal(e.ids, ids) {
			c.touch(i)
			st.Release()
			return
		}
	}
	if n > c.maxBytes {
		st.Release()
		return
	}
	c.entries = append(c.entries, &prefixEntry{ids: slices.Clone(ids), st: st, bytes: n})
	c.bytes += n
	for c.bytes > c.maxBytes {
		old := c.entries[0]
		c.bytes -= old.bytes
		c.entries = slices.Delete(c.entries, 0, 1)
		old.st.Release()
	}
}
