package tokenizer

import (
	"container/heap"
	"math/bits"
)

// merge is one BPE merge rule: the pair (left, right) becomes result. Its rank
// is its position in the merges list; lower ranks are applied first.
type merge struct {
	left, right, result int32
}

// mergeTable maps a token-id pair to its merge rank. Pairs of single bytes —
// every pair BPE looks at first — sit in a direct 64K-entry table indexed by
// the two bytes; other pairs in an open-addressing hash table of packed 8-byte
// slots (left, right, rank: 21 bits each), 2 MB for Qwen's 151k merges, so
// that it stays in the L2 cache. Both are built at load time in milliseconds.
type mergeTable struct {
	results   []int32 // rank → merged token id
	bytePairs []int32 // [b1<<8|b2] → rank, or noRank
	slots     []uint64
	shift     uint // 64 - log2(len(slots))
}

const (
	idBits   = 21
	idLimit  = 1 << idBits // token ids and merge counts must stay below
	idMask   = idLimit - 1
	freeSlot = ^uint64(0)
	noRank   = int32(^uint32(0) >> 1)
)

func pairKey(left, right int32) uint64 { return uint64(left)<<(2*idBits) | uint64(right)<<idBits }

// newMergeTable indexes merges; byteOf maps a token id to the byte it stands
// for, or -1 for tokens longer than one byte. Ids must be below idLimit.
func newMergeTable(merges []merge, byteOf func(id int32) int) mergeTable {
	// Load factor at most 0.6 keeps linear probing short.
	size := 1 << bits.Len(uint(len(merges)*5/3+1))
	t := mergeTable{
		results:   make([]int32, len(merges)),
		bytePairs: make([]int32, 1<<16),
		slots:     make([]uint64, size),
		shift:     uint(64 - bits.TrailingZeros(uint(size))),
	}
	for i := range t.bytePairs {
		t.bytePairs[i] = noRank
	}
	for i := range t.slots {
		t.slots[i] = freeSlot
	}
	mask := uint64(size - 1)
	for rank, m := range merges {
		t.results[rank] = m.result
		if b1, b2 := byteOf(m.left), byteOf(m.right); b1 >= 0 && b2 >= 0 {
			if i := b1<<8 | b2; t.bytePairs[i] == noRank {
				t.bytePairs[i] = int32(rank)
			}
		}
		k := pairKey(m.left, m.right)
		for slot := t.slot(k); ; slot = (slot + 1) & mask {
			if t.slots[slot] == freeSlot {
				t.slots[slot] = k | uint64(rank)
				break
			}
			if t.slots[slot]&^idMask == k {
				// HF keeps the first occurrence's rank for duplicate merges.
				break
			}
		}
	}
	return t
}

func (t *mergeTable) slot(k uint64) uint64 {
	return (k * 0x9E3779B97F4A7C15) >> t.shift
}

// rank returns the rank of merging (left, right), or noRank.
func (t *mergeTable) rank(left, right int32) int32 {
	if len(t.slots) == 0 {
		return noRank
	}
	k := pairKey(left, right)
	mask := uint64(len(t.slots) - 1)
	for slot := t.slot(k); ; slot = (slot + 1) & mask {
		v := t.slots[slot]
		if v&^idMask == k {
			return int32(v & idMask)
		}
		if v == freeSlot {
			return noRank
		}
	}
}

// heapThreshold is the symbol count above which bpeWord switches from the
// quadratic scan to the heap. Most pre-tokens are a few bytes, where the scan
// wins; long letter runs (CJK text without punctuation, "aaaa…") need the heap.
const heapThreshold = 48

// bpeWord appends the ids of one pre-token (raw bytes) to out. It applies the
// lowest-ranked merge first and, among equal ranks, the leftmost one — the
// order HF tokenizers' BPE::merge_word uses (a heap ordered by rank, then
// position).
func (t *Tokenizer) bpeWord(word string, out []int32) []int32 {
	if len(word) > heapThreshold {
		return t.bpeWordHeap(word, out)
	}
	var buf, rbuf [heapThreshold]int32
	syms := buf[:0]
	// ranks[i] is the rank of merging syms[i] and syms[i+1].
	var ranks []int32
	if t.allBytes {
		syms = buf[:len(word)]
		ranks = rbuf[:len(word)-1]
		for i := range ranks {
			syms[i] = t.byteID[word[i]]
			ranks[i] = t.merges.bytePairs[uint16(word[i])<<8|uint16(word[i+1])]
		}
		syms[len(word)-1] = t.byteID[word[len(word)-1]]
	} else {
		for i := 0; i < len(word); i++ {
			// A byte without a vocabulary entry is dropped, as HF's BPE
			// does when there is neither an unk token nor byte fallback.
			if id := t.byteID[word[i]]; id >= 0 {
				syms = append(syms, id)
			}
		}
		if len(syms) < 2 {
			return append(out, syms...)
		}
		ranks = rbuf[:len(syms)-1]
		for i := range ranks {
			ranks[i] = t.merges.rank(syms[i], syms[i+1])
		}
	}
	for {
		best, at := noRank, -1
		for i, r := range ranks {
			if r < best {
				best, at = r, i
			}
		}
		if at < 0 {
			break
		}
		syms[at] = t.merges.results[best]
		syms = append(syms[:at+1], syms[at+2:]...)
		ranks = append(ranks[:at], ranks[at+1:]...)
		if at > 0 {
			ranks[at-1] = t.merges.rank(syms[at-1], syms[at])
		}
		if at < len(ranks) {
			ranks[at] = t.merges.rank(syms[at], syms[at+1])
		}
	}
	return append(out, syms...)
}

// bpeWordHeap is bpeWord for long words: a doubly linked list of symbols and
// a min-heap of candidate merges, O(n log n).
func (t *Tokenizer) bpeWordHeap(word string, out []int32) []int32 {
	type symbol struct {
		id         int32
		prev, next int32 // -1 at the ends
	}
	syms := make([]symbol, 0, len(word))
	for i := 0; i < len(word); i++ {
		if id := t.byteID[word[i]]; id >= 0 {
			n := int32(len(syms))
			syms = append(syms, symbol{id: id, prev: n - 1, next: n + 1})
		}
	}
	if len(syms) == 0 {
		return out
	}
	syms[len(syms)-1].next = -1
	h := make(candidateHeap, 0, len(syms))
	push := func(pos int32) {
		next := syms[pos].next
		if next < 0 {
			return
		}
		if rank := t.merges.rank(syms[pos].id, syms[next].id); rank != noRank {
			heap.Push(&h, candidate{rank: rank, pos: pos})
		}
	}
	for i := range syms {
		push(int32(i))
	}
	for h.Len() > 0 {
		c := heap.Pop(&h).(candidate)
		left := &syms[c.pos]
		if left.id < 0 || left.next < 0 {
			continue // merged away, or now at the end
		}
		right := &syms[left.next]
		// The pair may have changed since the candidate was pushed.
		if t.merges.rank(left.id, right.id) != c.rank {
			continue
		}
		left.id = t.merges.results[c.rank]
		right.id = -1
		left.next = right.next
		if left.next >= 0 {
			syms[left.next].prev = c.pos
		}
		if left.prev >= 0 {
			push(left.prev)
		}
		push(c.pos)
	}
	for i := int32(0); i >= 0; i = syms[i].next {
		out = append(out, syms[i].id)
	}
	return out
}

type candidate struct {
	rank, pos int32
}

type candidateHeap []candidate

func (h candidateHeap) Len() int { return len(h) }
func (h candidateHeap) Less(i, j int) bool {
	if h[i].rank != h[j].rank {
		return h[i].rank < h[j].rank
	}
	return h[i].pos < h[j].pos
}
func (h candidateHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *candidateHeap) Push(x any)   { *h = append(*h, x.(candidate)) }
func (h *candidateHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	*h = old[:len(old)-1]
	return c
}
