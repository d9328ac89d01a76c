//go:build cuda && linux

package cuda

import (
	"sync"
	"unsafe"

	"github.com/fm-moe/fm/pkg/backend"
)

// ExpertJob must have the C struct's size: the kernels index an array of them.
var (
	_ [unsafe.Sizeof(ExpertJob{}) - 144]byte
	_ [144 - unsafe.Sizeof(ExpertJob{})]byte
)

// ExpertJob mirrors matmul.cu's struct ExpertJob (144 bytes with its tail
// padding, the same in Go and C): one expert's matrices and its rows.
type ExpertJob struct {
	GW, GS, GB, UW, US, UB, DW, DS, DB uintptr
	N                                  int32
	Rows                               [mmTok]int32
	Wt                                 [mmTok]float32
}

// expertBatch collects the ExpertFFN calls of a decode step (each expert a
// few rows) so that a layer's experts run as three launches — gate/up for all,
// down for all, then the weighted sum in call order — instead of two launches
// each. Any other operation flushes it first, so the device still executes
// every goroutine's operations in the order issued.
type expertBatch struct {
	mu           sync.Mutex
	out, x       *tensor
	kind         string // the mmx kernel of the matrices' format
	I, H, gs, sf int
	jobs         []ExpertJob
}

const maxBatchJobs = 32

// batchKind returns the mmx kernel for an expert whose three matrices share a
// format the vectorized kernels take, or "".
func batchKind(gate, up, down *Matrix, x *tensor) string {
	if !sameFormat(gate, up) || down.Format != gate.Format || down.Bits != gate.Bits ||
		down.GroupSize != gate.GroupSize || down.ScaleFormat != gate.ScaleFormat {
		return ""
	}
	k := fastKernel(gate, x.ptr, x.cols)
	if k == "" || down.Cols%32 != 0 || up.Data%16 != 0 || down.Data%16 != 0 {
		return ""
	}
	return "mmx_" + k[len("mm_"):]
}

// queueExpert adds one expert's job, flushing a batch it cannot join.
func (g *gpu) queueExpert(out, x *tensor, kind string, gate, up, down *Matrix, rows []int, weights []float32) {
	b := &g.batch
	b.mu.Lock()
	if len(b.jobs) > 0 && (b.out != out || b.x != x || b.kind != kind || b.I != gate.Rows || len(b.jobs) == maxBatchJobs) {
		g.flushLocked()
	}
	if len(b.jobs) == 0 {
		b.out, b.x, b.kind, b.I, b.H = out, x, kind, gate.Rows, gate.Cols
		b.gs, b.sf = 1, 0
		if gate.Format == backend.Affine {
			b.gs, b.sf = gate.GroupSize, int(gate.ScaleFormat)
		}
	}
	j := ExpertJob{GW: gate.Data, GS: gate.Scales, GB: gate.Biases, UW: up.Data, US: up.Scales, UB: up.Biases,
		DW: down.Data, DS: down.Scales, DB: down.Biases, N: int32(len(rows))}
	for i, r := range rows {
		j.Rows[i], j.Wt[i] = int32(r), weights[i]
	}
	b.jobs = append(b.jobs, j)
	b.mu.Unlock()
}

// flushExperts launches the pending expert batch, if any.
func (g *gpu) flushExperts() {
	b := &g.batch
	b.mu.Lock()
	g.flushLocked()
	b.mu.Unlock()
}

func (g *gpu) flushLocked() {
	b := &g.batch
	n := len(b.jobs)
	if n == 0 {
		return
	}
	defer func() { b.jobs, b.out, b.x = b.jobs[:0], nil, nil }()
	h, err := g.d.Alloc(n * mmTok * b.I * 4)
	if err != nil {
		return // kept by the device, reported at the next sync
	}
	defer g.d.Free(h)
	oneTok := true
	for i := range b.jobs {
		oneTok = oneTok && b.jobs[i].N == 1
	}
	// A decode step: jobs by value, two launches, no staging copy.
	if oneTok && g.d.expertBatchOneTok(b.kind, b.jobs, h.Ptr, b.x.ptr, b.out.ptr, b.I, b.H, b.gs, b.sf) {
		return
	}
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&b.jobs[0])), n*int(unsafe.Sizeof(ExpertJob{})))
	jobs, err := g.d.Stage(raw)
	if err != nil {
		return
	}
	y, err := g.d.Alloc(n * mmTok * b.H * 4)
	if err != nil {
		return
	}
	defer g.d.Free(y)
	g.d.ExpertBatch(b.kind, jobs, n, h.Ptr, b.x.ptr, y.Ptr, b.out.ptr, b.I, b.H, b.gs, b.sf)
}
