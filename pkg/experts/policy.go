package experts

import (
	"container/heap"
	"fmt"
)

// Policy names a replacement policy for the RAM cache.
type Policy string

const (
	// PolicyLRU evicts the least recently used expert.
	PolicyLRU Policy = "lru"
	// PolicyLFUDA is least-frequently-used with dynamic aging: an expert's
	// priority is its use count plus the priority of the last victim when it was
	// last used, so old counts fade as the routing drifts.
	PolicyLFUDA Policy = "lfuda"
	// PolicyARC is the adaptive replacement cache (Megiddo and Modha, 2003): a
	// recency list and a frequency list whose split adapts to which one the
	// recently evicted experts (remembered by key only) would have hit.
	PolicyARC Policy = "arc"
)

// DefaultPolicy is the policy Options gets when it names none.
const DefaultPolicy = PolicyARC

// Policies lists the policies in the order they are documented.
var Policies = []Policy{PolicyLRU, PolicyLFUDA, PolicyARC}

// policy orders the cached entries and picks victims. All expert files of a
// set have the same size, so capacity counts entries.
type policy interface {
	// admit puts e into the cache, first calling evict for each entry it pushes
	// out so that len() never exceeds the capacity.
	admit(e *entry, evict func(*entry))
	hit(e *entry) // e, cached, is used again
	len() int
}

func newPolicy(p Policy, capacity int) (policy, error) {
	switch p {
	case PolicyLRU:
		l := &lru{capacity: capacity}
		l.list.init()
		return l, nil
	case PolicyLFUDA:
		return &lfuda{capacity: capacity}, nil
	case PolicyARC, "":
		return newARC(capacity), nil
	}
	return nil, fmt.Errorf("unknown cache policy %q, want one of %v", p, Policies)
}

// entryList is an intrusive doubly linked list with a sentinel; front is the
// most recently used end.
type entryList struct {
	root entry
	n    int
}

func (l *entryList) init() { l.root.next, l.root.prev = &l.root, &l.root }

func (l *entryList) pushFront(e *entry) {
	e.prev, e.next = &l.root, l.root.next
	l.root.next.prev = e
	l.root.next = e
	l.n++
}

func (l *entryList) remove(e *entry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
	l.n--
}

// popBack removes and returns the least recently used entry, or nil.
func (l *entryList) popBack() *entry {
	if l.n == 0 {
		return nil
	}
	e := l.root.prev
	l.remove(e)
	return e
}

type lru struct {
	list     entryList
	capacity int
}

func (p *lru) len() int     { return p.list.n }
func (p *lru) hit(e *entry) { p.list.remove(e); p.list.pushFront(e) }
func (p *lru) admit(e *entry, evict func(*entry)) {
	for p.list.n >= p.capacity {
		evict(p.list.popBack())
	}
	p.list.pushFront(e)
}

const (
	segRecent   = iota // ARC T1: seen once recently
	segFrequent        // ARC T2: seen at least twice
)

// lfuda keeps a min-heap on priority = age + uses, ties broken by the older
// use (LRU among equals).
type lfuda struct {
	h        entryHeap
	capacity int
	age      uint64 // priority of the last victim
	clock    uint64
}

func (p *lfuda) len() int { return len(p.h) }

func (p *lfuda) admit(e *entry, evict func(*entry)) {
	for len(p.h) >= p.capacity {
		v := heap.Pop(&p.h).(*entry)
		p.age = v.priority
		evict(v)
	}
	p.clock++
	e.uses, e.lastUse = 1, p.clock
	e.priority = p.age + 1
	heap.Push(&p.h, e)
}

func (p *lfuda) hit(e *entry) {
	p.clock++
	e.uses++
	e.lastUse = p.clock
	e.priority = p.age + e.uses
	heap.Fix(&p.h, e.heapIndex)
}

type entryHeap []*entry

func (h entryHeap) Len() int { return len(h) }
func (h entryHeap) Less(i, j int) bool {
	if h[i].priority != h[j].priority {
		return h[i].priority < h[j].priority
	}
	return h[i].lastUse < h[j].lastUse
}
func (h entryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIndex, h[j].heapIndex = i, j
}
func (h *entryHeap) Push(x any) {
	e := x.(*entry)
	e.heapIndex = len(*h)
	*h = append(*h, e)
}
func (h *entryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.heapIndex = -1
	return e
}

// arc follows the ARC paper's pseudocode: T1 and T2 hold cached entries seen
// once and more than once; B1 and B2 remember the keys recently evicted from
// each; target is the size ARC aims to give T1, raised by a ghost hit in B1
// (recency would have helped) and lowered by one in B2.
type arc struct {
	capacity int
	target   int
	t1, t2   entryList
	b1, b2   ghostList
	ghosts   []*ghost // B1's and B2's free nodes
}

// ghostList is an LRU list of keys with a lookup index. Its nodes are
// recycled through a free list shared by B1 and B2 (a miss that evicts pushes
// a ghost, and one per token would otherwise allocate one per token).
type ghostList struct {
	root  ghost // sentinel: root.next is the most recent, root.prev the oldest
	n     int
	index map[key]*ghost
	free  *[]*ghost
}

type ghost struct {
	k          key
	prev, next *ghost
}

func (g *ghostList) init(free *[]*ghost) {
	g.root.next, g.root.prev = &g.root, &g.root
	g.index = map[key]*ghost{}
	g.free = free
}

func (g *ghostList) len() int { return g.n }

func (g *ghostList) push(k key) {
	var n *ghost
	if f := *g.free; len(f) > 0 {
		n = f[len(f)-1]
		f[len(f)-1] = nil
		*g.free = f[:len(f)-1]
	} else {
		n = &ghost{}
	}
	n.k, n.prev, n.next = k, &g.root, g.root.next
	g.root.next.prev = n
	g.root.next = n
	g.n++
	g.index[k] = n
}

func (g *ghostList) unlink(n *ghost) {
	n.prev.next, n.next.prev = n.next, n.prev
	n.prev, n.next = nil, nil
	g.n--
	delete(g.index, n.k)
	*g.free = append(*g.free, n)
}

func (g *ghostList) remove(k key) bool {
	n, ok := g.index[k]
	if ok {
		g.unlink(n)
	}
	return ok
}

func (g *ghostList) dropOldest() {
	if g.n > 0 {
		g.unlink(g.root.prev)
	}
}

func newARC(capacity int) *arc {
	a := &arc{capacity: capacity}
	a.t1.init()
	a.t2.init()
	a.b1.init(&a.ghosts)
	a.b2.init(&a.ghosts)
	return a
}

func (a *arc) len() int { return a.t1.n + a.t2.n }

func (a *arc) hit(e *entry) {
	if e.segment == segRecent {
		a.t1.remove(e)
	} else {
		a.t2.remove(e)
	}
	e.segment = segFrequent
	a.t2.pushFront(e)
}

func (a *arc) admit(e *entry, evict func(*entry)) {
	c := a.capacity
	switch {
	case a.b1.remove(e.key): // would have been a hit had T1 been larger
		a.target = min(c, a.target+max(a.b2.len()/max(a.b1.len()+1, 1), 1))
		a.replace(false, evict)
		e.segment = segFrequent
		a.t2.pushFront(e)
		return
	case a.b2.remove(e.key): // would have been a hit had T2 been larger
		a.target = max(0, a.target-max(a.b1.len()/max(a.b2.len()+1, 1), 1))
		a.replace(true, evict)
		e.segment = segFrequent
		a.t2.pushFront(e)
		return
	}
	switch l1 := a.t1.n + a.b1.len(); {
	case l1 >= c:
		if a.t1.n < c {
			a.b1.dropOldest()
			a.replace(false, evict)
		} else {
			evict(a.t1.popBack()) // B1 is empty: forget the key too
		}
	case l1+a.t2.n+a.b2.len() >= c:
		if l1+a.t2.n+a.b2.len() >= 2*c {
			a.b2.dropOldest()
		}
		if a.len() >= c {
			a.replace(false, evict)
		}
	}
	e.segment = segRecent
	a.t1.pushFront(e)
}

// replace evicts one cached entry when the cache is full, from T1 when T1 is
// above its target (or at it and the request was a B2 ghost hit), else from T2,
// and remembers its key.
func (a *arc) replace(inB2 bool, evict func(*entry)) {
	if a.len() < a.capacity {
		return
	}
	if a.t1.n > 0 && (a.t1.n > a.target || (inB2 && a.t1.n == a.target) || a.t2.n == 0) {
		v := a.t1.popBack()
		a.b1.push(v.key)
		evict(v)
		return
	}
	v := a.t2.popBack()
	a.b2.push(v.key)
	evict(v)
}
