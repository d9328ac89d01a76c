//go:build cuda && linux

package cuda

import (
	"fmt"
	"unsafe"

	"github.com/fm-moe/fm/pkg/backend"
)

// MarkSet is n deferred non-finite flags in device memory (one int32 a slot)
// with a pinned host mirror. Marking launches the scan into a slot; the next
// synchronizing call of the device (Download, Sync, FirstNonFinite, Upload)
// queues the copy of every set marked since to its mirror before it waits,
// so reading after such a call costs no round trip: this is what replaces
// the model's two synchronizing non-finite checks per layer.
//
// A slot holds (127 − generation) << 24 | row, the smallest such value
// written (atomicMin): each Read starts a new generation, whose values are
// smaller than any older one's, so the slots need no reset between reads
// (a memset, a driver call a layer) — only when the generations wrap, every
// 126 reads. A value of another generation (or 0x7f7f7f7f, the initial
// fill: generation 0) reads as no row.
type MarkSet struct {
	d       *Device
	dev     Buffer
	host    []int32 // pinned; written by the copies queued in flushMarks (or by a kernel: hostDev)
	hostDev uintptr // host's device address (mapped), 0 if it could not be mapped
	pending bool    // marked since the last copy was queued
	dirty   bool    // marked in this generation
	gen     int32   // 1 … maxMarkGen
}

const (
	noRow      = 0x7f7f7f7f // 0x7f in every byte: above any row index, generation 0
	maxMarkGen = 126
)

// base is the current generation's high byte.
func (m *MarkSet) base() int32 { return (127 - m.gen) << 24 }

// NewMarkSet allocates n slots, all unset.
func (d *Device) NewMarkSet(n int) (*MarkSet, error) {
	if n <= 0 {
		return nil, fmt.Errorf("cuda: a mark set of %d slots", n)
	}
	// The host mirror is mapped when the driver allows it, so that the
	// router's product can copy the slots to it (matVecDownload).
	var hb []byte
	var hdev uintptr
	if d.enter() {
		var err error
		if hb, hdev, err = d.hostAllocMapped(4 * n); err != nil {
			hb, hdev = nil, 0
		}
	}
	d.leave()
	if hb == nil {
		var err error
		if hb, err = d.HostAlloc(4 * n); err != nil {
			return nil, err
		}
	}
	b, err := d.AllocExact(4 * n)
	if err != nil {
		_ = d.FreeHost(hb)
		return nil, err
	}
	m := &MarkSet{d: d, dev: b, host: unsafe.Slice((*int32)(unsafe.Pointer(&hb[0])), n), hostDev: hdev, gen: 1}
	for i := range m.host {
		m.host[i] = noRow
	}
	if !d.enter() {
		defer d.leave()
		return nil, d.errOrClosed()
	}
	defer d.leave()
	d.fail(d.drv.call("cuMemsetD8Async", d.drv.cuMemsetD8Async, b.Ptr, 0x7f, uintptr(4*n), d.stream))
	return m, d.err
}

// Mark queues the scan of the n floats at x (rows of cols) into slot i.
func (m *MarkSet) Mark(i int, x uintptr, n, cols int) {
	d := m.d
	if i < 0 || i >= len(m.host) {
		panic(fmt.Sprintf("cuda: mark slot %d of %d", i, len(m.host)))
	}
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	p, base := m.slotLocked(i)
	d.launch("first_nonfinite", [3]int{max(1, min((n+255)/256, d.Info.SMs*8)), 1, 1}, 256, 0, uint64(x), argL(int64(n)), argI(cols), uint64(p), argI(int(base)))
}

// slotLocked returns the device address of slot i for a scan queued next
// (by a kernel that fuses the scan, add_rmsnorm) and the generation's base
// to OR into the row, and notes the set as marked (caller holds the device).
func (m *MarkSet) slotLocked(i int) (uintptr, int32) {
	d := m.d
	if i < 0 || i >= len(m.host) {
		panic(fmt.Sprintf("cuda: mark slot %d of %d", i, len(m.host)))
	}
	m.pending, m.dirty = true, true
	if d.marks == nil {
		d.marks = map[*MarkSet]bool{}
	}
	d.marks[m] = true
	return m.dev.Ptr + 4*uintptr(i), m.base()
}

// flushMarks queues the copy of every set marked since its last copy to its
// host mirror (caller holds the device, before it synchronizes the stream).
func (d *Device) flushMarks() {
	for m := range d.marks {
		d.fail(d.drv.call("cuMemcpyDtoHAsync", d.drv.cuMemcpyDtoHAsync, uintptr(unsafe.Pointer(&m.host[0])), m.dev.Ptr, uintptr(4*len(m.host)), d.stream))
		m.pending = false
	}
	clear(d.marks)
}

// Read sets dst[i] to slot i's row (−1: none) and resets the slots; it
// synchronizes only when marks were queued after the last synchronizing call.
func (m *MarkSet) Read(dst []int) error {
	d := m.d
	if len(dst) != len(m.host) {
		panic(fmt.Sprintf("cuda: reading %d mark slots into %d", len(m.host), len(dst)))
	}
	if !d.enter() {
		defer d.leave()
		return d.errOrClosed()
	}
	defer d.leave()
	if m.pending {
		d.flushMarks()
		d.fail(d.drv.call("cuStreamSynchronize", d.drv.cuStreamSynchronize, d.stream))
	}
	if d.err != nil {
		return d.err
	}
	base := m.base()
	for i, r := range m.host {
		dst[i] = -1
		if r&^0xffffff == base {
			dst[i] = int(r & 0xffffff)
		}
		m.host[i] = noRow
	}
	if m.dirty {
		// A new generation: this one's values now read as no row.
		m.dirty = false
		if m.gen++; m.gen > maxMarkGen {
			m.gen = 1
			d.fail(d.drv.call("cuMemsetD8Async", d.drv.cuMemsetD8Async, m.dev.Ptr, 0x7f, uintptr(4*len(m.host)), d.stream))
		}
	}
	return d.err
}

// Free releases the set.
func (m *MarkSet) Free() {
	d := m.d
	d.mu.Lock()
	delete(d.marks, m)
	d.mu.Unlock()
	// The scans queued into it finish before the memory is reused: FreeExact
	// synchronizes (cuMemFree).
	_ = d.FreeExact(m.dev)
	_ = d.FreeHost(unsafe.Slice((*byte)(unsafe.Pointer(&m.host[0])), 4*len(m.host)))
}

// NewMarks implements backend.NonFiniteMarker.
func (g *gpu) NewMarks(n int) (backend.Marks, error) {
	m, err := g.d.NewMarkSet(n)
	if err != nil {
		return nil, err
	}
	return &marks{g: g, m: m}, nil
}

type marks struct {
	g *gpu
	m *MarkSet
}

func (k *marks) Mark(i int, x backend.Tensor) {
	t := k.g.tt(x, "Marks.Mark input")
	if i < 0 || i >= len(k.m.host) {
		panic(fmt.Sprintf("cuda: mark slot %d of %d", i, len(k.m.host)))
	}
	b := &k.g.batch
	b.mu.Lock()
	defer b.mu.Unlock()
	// The mark of a pending residual add's result goes with it (into the
	// next RMSNorm's kernel, or launched after the add when flushed).
	if a := &b.add; a.dst != nil && a.marks == nil && sameTensor(a.dst, t) {
		a.marks, a.slot = k.m, i
		return
	}
	if e := &b.epi; e.h != nil && e.marks == nil && e.dst == nil && sameTensor(e.h, t) {
		e.marks, e.slot = k.m, i
		return
	}
	k.g.flushLocked() // the scan must see the deferred operations' output
	k.m.Mark(i, t.ptr, t.n(), t.cols)
}

func (k *marks) Read(dst []int) error {
	k.g.flushExperts()
	return k.m.Read(dst)
}

func (k *marks) Release() {
	k.g.flushExperts() // a deferred Add may carry a mark into these slots
	k.m.Free()
}
