package cpu

import (
	"fmt"
	"unsafe"

	"github.com/fm-moe/fm/pkg/backend"
)

// The attention layers' KV caches. Each layer keeps its keys and values by
// KV head, [KVHeads, capacity, HeadDim], so that a unit of the decode
// attention core (one KV head's group of query heads) reads one contiguous
// stream; [positions, KVHeads·HeadDim] made it read 512 of every 2048 bytes
// (BenchmarkAttendDecode: 1.14–1.30× by head; docs/PERF.md, round seven).
//
// Every attention layer's cache is carved from one allocation with room for
// the same number of positions (state.kvCap), advised onto transparent huge
// pages (hugepages.go): on the development VM a fault on a fresh 4 KiB page
// cost ~15 µs, and a cache growing a page at a time paid one per layer every
// few decode steps (15–18 µs of each layer's append), besides 2.2–2.7 ms per
// growth of a layer's cache. Every layer holds the same positions, so the
// caches grow together, in doublings (by half once they hold kvHalfGrowth
// bytes, to bound the moment when the old and the new allocation are both
// held).

// kvHalfGrowth is the size of the caches from which they grow by half, not
// by doubling.
const kvHalfGrowth = 256 << 20

// stateOf returns st as the CPU's state.
func stateOf(st backend.State) *state {
	s, ok := st.(*state)
	if !ok {
		panic(fmt.Sprintf("cpu: state of type %T is not from the CPU backend", st))
	}
	return s
}

// kvFloats is the size of every attention layer's keys and values at
// capacity c, in floats.
func (s *state) kvFloats(c int) int {
	n := 0
	for _, sp := range s.specs {
		if a := sp.Attention; a != nil {
			n += 2 * a.KVHeads * c * a.HeadDim
		}
	}
	return n
}

// kvReserveMax bounds what Reserve allocates ahead of use: a request may ask
// for far more tokens than it will produce (an API client's max_tokens of
// 100,000 would be ~20 GB of Qwen3-30B-A3B caches), and past this size growth
// in doublings costs little next to the decode that fills it.
const kvReserveMax = 256 << 20

// Reserve implements backend.Reserver: room for positions positions (a
// request's prompt and its most tokens) at once, up to kvReserveMax bytes of
// caches.
func (s *state) Reserve(positions int) error {
	if positions = s.reservable(positions); positions > s.kvCap {
		s.moveKV(s, positions)
	}
	return nil
}

// reservable is how many positions Reserve(positions) makes room for.
func (s *state) reservable(positions int) int {
	if per := 4 * s.kvFloats(1); per > 0 {
		positions = min(positions, kvReserveMax/per)
	}
	return positions
}

// reserveKV makes room for n positions in every attention layer's cache,
// growing in doublings (by half past kvHalfGrowth).
func (s *state) reserveKV(n int) {
	if n <= s.kvCap {
		return
	}
	grow := s.kvCap
	if 4*s.kvFloats(s.kvCap) >= kvHalfGrowth {
		grow = s.kvCap / 2
	}
	s.moveKV(s, max(s.kvCap+grow, n))
}

// moveKV gives s caches of capacity c, carved from one new allocation, that
// hold the positions of src's caches (src may be s; c covers them).
func (s *state) moveKV(src *state, c int) {
	old := s.arena
	arena := s.rec.floats(s.kvFloats(c))
	s.arena = arena
	for i, sp := range s.specs {
		a := sp.Attention
		if a == nil {
			continue
		}
		n := a.KVHeads * c * a.HeadDim
		from := src.layers[i]
		l := &s.layers[i]
		l.k, l.v, arena = arena[:n:n], arena[n:2*n:2*n], arena[2*n:]
		regroupKV(l.k, from.k, from.kvLen, src.kvCap, c, a.KVHeads, a.HeadDim)
		regroupKV(l.v, from.v, from.kvLen, src.kvCap, c, a.KVHeads, a.HeadDim)
		l.kvLen = from.kvLen
	}
	s.kvCap = c
	if src == s {
		s.rec.put(old) // moved out of
	}
}

// regroupKV copies the first n positions of each KV head of src, a cache of
// capacity from, into dst, a cache of capacity to.
func regroupKV(dst, src []float32, n, from, to, nKV, D int) {
	for g := 0; g < nKV && n > 0; g++ {
		copy(dst[g*to*D:g*to*D+n*D], src[g*from*D:])
	}
}

// appendKV appends T positions of keys and values, rows of [T, KVHeads·D] as
// the projections give them, to a layer's cache of capacity c (which has the
// room: state.reserveKV).
func (l *layerState) appendKV(kt, vt []float32, T, c, nKV, D int) {
	for t := 0; t < T; t++ {
		for g := 0; g < nKV; g++ {
			at := (g*c + l.kvLen + t) * D
			copy(l.k[at:at+D], kt[(t*nKV+g)*D:])
			copy(l.v[at:at+D], vt[(t*nKV+g)*D:])
		}
	}
	l.kvLen += T
}

// hugeFloats returns n zeroed floats on huge pages where they span one
// (hugeBytes).
func hugeFloats(n int) []float32 {
	if n == 0 {
		return nil
	}
	b := hugeBytes(4 * n)
	return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(b))), n)
}
