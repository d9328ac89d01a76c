package experts

import (
	"context"
	"errors"
	"sync"
	"testing"
	"unsafe"
)

// countingAllocator hands out aligned buffers and records them, failing
// after limit allocations.
type countingAllocator struct {
	mu    sync.Mutex
	limit int
	live  map[*byte]bool
	freed int
}

func (a *countingAllocator) ExpertBuffer(size int) ([]byte, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.live)+a.freed >= a.limit {
		return nil, errors.New("out of pinned memory")
	}
	b := AlignedBuffer(size)
	a.live[&b[0]] = true
	return b, nil
}

func (a *countingAllocator) FreeExpertBuffer(b []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.live[&b[0]] {
		panic("freeing a buffer the allocator did not make")
	}
	delete(a.live, &b[0])
	a.freed++
}

func (a *countingAllocator) owns(b []byte) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.live[unsafe.SliceData(b)]
}

// TestBuffersFromAllocator: with Options.Buffers the store reads experts into
// the allocator's memory, frees what it drops, and falls back to its own
// memory when the allocator fails.
func TestBuffersFromAllocator(t *testing.T) {
	fx := newFixture(1, 32, testSize)
	a := &countingAllocator{limit: 3, live: map[*byte]bool{}}
	s := openStore(t, fx, fx.fs(), Options{Buffers: a})
	ex, err := s.Fetch(context.Background(), 0, []int{0, 1, 2, 3, 4})
	if err != nil {
		t.Fatal(err)
	}
	fx.check(t, ex)
	owned := 0
	for _, x := range ex {
		if a.owns(x.Data) {
			owned++
		}
	}
	if owned != 3 {
		t.Errorf("%d of 5 experts in the allocator's buffers, want 3 (its limit; the rest in the store's own memory)", owned)
	}
	s.Release(ex)

	// A burst of more buffers than the pool keeps idle (8 with one I/O
	// thread): the surplus goes back to the allocator.
	b := &countingAllocator{limit: 100, live: map[*byte]bool{}}
	s = openStore(t, fx, fx.fs(), Options{Buffers: b, IOThreads: 1})
	ids := make([]int, 12)
	for i := range ids {
		ids[i] = i
	}
	if ex, err = s.Fetch(context.Background(), 0, ids); err != nil {
		t.Fatal(err)
	}
	fx.check(t, ex)
	s.Release(ex)
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.live) != 8 || b.freed != 4 {
		t.Errorf("after a burst of 12: %d buffers kept, %d freed; want 8 and 4", len(b.live), b.freed)
	}
}
