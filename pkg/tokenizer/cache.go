package tokenizer

import (
	"hash/maphash"
	"strings"
	"sync/atomic"
)

// wordCache remembers the BPE ids of long pre-tokens. It is direct-mapped (a
// word's hash picks its one slot; a new word evicts the old one) and
// lock-free (slots are atomic pointers to immutable entries), so concurrent
// Encode calls never wait on each other and memory stays bounded on endless
// input.
//
// Short pre-tokens are not cached, on measurement: with the merge table in
// the L2 cache, BPE of a word of a few bytes costs less than a probe of a
// cache large enough to matter (the probe misses the CPU caches twice). On
// the 3 MB benchmark corpus caching every pre-token made Encode ~1.6× slower
// (11 vs 18 MB/s); on Python source it gained nothing. Long pre-tokens
// (identifiers, CJK runs) cost BPE time quadratic in their length, and those
// are cached.
type wordCache struct {
	seed  maphash.Seed
	slots []atomic.Pointer[cacheEntry]
}

type cacheEntry struct {
	word string
	ids  []int32
}

const (
	cacheMinWord = 16  // bytes; shorter pre-tokens go straight to BPE
	cacheMaxWord = 256 // bytes; longer ones are rare enough not to cache
	cacheSlots   = 1 << 14
)

func newWordCache() wordCache {
	return wordCache{seed: maphash.MakeSeed(), slots: make([]atomic.Pointer[cacheEntry], cacheSlots)}
}

func cacheable(word string) bool { return len(word) >= cacheMinWord && len(word) <= cacheMaxWord }

func (c *wordCache) slot(word string) *atomic.Pointer[cacheEntry] {
	return &c.slots[maphash.String(c.seed, word)&(cacheSlots-1)]
}

// get appends the cached ids of word to dst.
func (c *wordCache) get(word string, dst []int32) ([]int32, bool) {
	if e := c.slot(word).Load(); e != nil && e.word == word {
		return append(dst, e.ids...), true
	}
	return dst, false
}

// put records the ids of word.
func (c *wordCache) put(word string, ids []int32) {
	c.slot(word).Store(&cacheEntry{word: strings.Clone(word), ids: append([]int32(nil), ids...)})
}

// reset empties the cache (for benchmarks of the uncached path).
func (c *wordCache) reset() {
	for i := range c.slots {
		c.slots[i].Store(nil)
	}
}
