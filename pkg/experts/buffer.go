package experts

import (
	"sync"
	"unsafe"
)

// Alignment is the alignment of every buffer the store hands out. O_DIRECT
// needs buffer address, file offset and length to be multiples of the logical
// block size; 4096 covers every common device, and expert files are a multiple
// of it (layout.ExpertAlignment).
const Alignment = 4096

// AlignedBuffer returns a zeroed n-byte slice whose first byte is
// Alignment-aligned, as O_DIRECT reads need. Large Go allocations usually
// start on a page boundary already; when one does not, it is re-made with
// room to re-slice.
func AlignedBuffer(n int) []byte {
	b := make([]byte, n)
	if n == 0 || isAligned(b) {
		return b
	}
	b = make([]byte, n+Alignment)
	skip := (Alignment - int(uintptr(unsafe.Pointer(&b[0]))%Alignment)) % Alignment
	return b[skip : skip+n : skip+n]
}

func isAligned(b []byte) bool {
	return len(b) == 0 || uintptr(unsafe.Pointer(&b[0]))%Alignment == 0
}

// Allocator provides the memory expert files are read into. A
// backend.Device is one: its ExpertBuffer memory is what its BindExpert reads
// fastest (pinned host memory for a GPU). FreeExpertBuffer must accept any
// buffer ExpertBuffer returned, and ignore others.
type Allocator interface {
	ExpertBuffer(size int) ([]byte, error)
	FreeExpertBuffer(buf []byte)
}

// bufferPool recycles expert-sized buffers. Every buffer it hands out is
// counted as live until it is dropped (pool full) so that Stats can report the
// bytes of expert data the store keeps in RAM.
type bufferPool struct {
	size    int
	maxIdle int
	alloc   Allocator // nil: Go memory

	mu   sync.Mutex
	idle [][]byte
	live int64 // buffers allocated and not dropped: in use + cached + idle
	peak int64
}

func (p *bufferPool) get() []byte {
	p.mu.Lock()
	if n := len(p.idle); n > 0 {
		b := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return b
	}
	p.live++
	p.peak = max(p.peak, p.live)
	p.mu.Unlock()
	if p.alloc != nil {
		// Memory the compute device reads fastest (pinned, for a GPU); if it
		// runs out, plain memory still works, only slower.
		if b, err := p.alloc.ExpertBuffer(p.size); err == nil && len(b) == p.size && isAligned(b) {
			return b
		}
	}
	return AlignedBuffer(p.size)
}

// put returns b for reuse, or drops it to the garbage collector when maxIdle
// buffers are already waiting: a burst (a prefill touching many experts) must
// not pin its high-water mark of memory forever.
func (p *bufferPool) put(b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.idle) < p.maxIdle {
		p.idle = append(p.idle, b)
		return
	}
	p.live--
	if p.alloc != nil {
		p.alloc.FreeExpertBuffer(b)
	}
}

func (p *bufferPool) counts() (live, peak int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.live, p.peak
}

func (p *bufferPool) resetPeak() {
	p.mu.Lock()
	p.peak = p.live
	p.mu.Unlock()
}
