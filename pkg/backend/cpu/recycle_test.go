package cpu

import (
	"math"
	"testing"

	"github.com/fm-moe/fm/pkg/backend"
)

// TestReleasedMemoryIsRecycled: a released tensor's and a released state's
// memory serve the next request of a size within 2×, zeroed; views release
// nothing; small buffers and sizes out of range are not reused; a released
// buffer is poisoned with NaN under tests until it is handed out again.
func TestReleasedMemoryIsRecycled(t *testing.T) {
	d := NewDevice(1)
	const rows, cols = 512, 1024 // 2 MiB
	a, _ := d.NewTensor(rows, cols)
	ad := data(a).data
	for i := range ad {
		ad[i] = 1
	}
	a.Slice(0, 1).Release() // a view: nothing
	if data(a).data == nil {
		t.Fatal("releasing a view released its tensor")
	}
	a.Release()
	if !math.IsNaN(float64(ad[7])) {
		t.Errorf("released memory not poisoned under test: %g", ad[7])
	}
	if b, _ := d.NewTensor(rows, 4*cols); &data(b).data[0] == &ad[0] {
		t.Error("a buffer a quarter of the request's size was reused")
	}
	b, _ := d.NewTensor(rows, cols*3/4)
	bd := data(b).data
	if &bd[0] != &ad[0] {
		t.Fatal("a released tensor's memory was not reused for a smaller one")
	}
	for i, v := range bd {
		if v != 0 {
			t.Fatalf("recycled tensor not zeroed at %d: %g", i, v)
		}
	}
	if c, _ := d.NewTensor(rows, cols); &data(c).data[0] == &ad[0] {
		t.Fatal("memory in use handed out twice")
	}
	small, _ := d.NewTensor(4, 4)
	sd := data(small).data
	small.Release()
	if s2, _ := d.NewTensor(4, 4); &data(s2).data[0] == &sd[0] {
		t.Error("a small buffer went through the recycler")
	}

	// A state's KV caches.
	spec := []backend.LayerSpec{{Attention: &backend.AttentionParams{Heads: 8, KVHeads: 2, HeadDim: 128}}}
	s1, _ := d.NewState(spec)
	if err := s1.(*state).Reserve(4096); err != nil {
		t.Fatal(err)
	}
	arena := stateOf(s1).arena
	arena[5] = 3
	s1.Release()
	s2, _ := d.NewState(spec)
	if err := s2.(*state).Reserve(3000); err != nil {
		t.Fatal(err)
	}
	if got := stateOf(s2).arena; &got[0] != &arena[0] || got[5] != 0 {
		t.Fatalf("a released state's caches were not reused zeroed (same memory %v, [5] = %g)", &got[0] == &arena[0], got[5])
	}
}
