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

// expertBatch collects the ExpertFFN calls that come one after another (a
// layer's routed experts) so that they run as three launches — gate/up for
// all, down for all, then the weighted sum in call order — instead of two or
// more each. A decode step's experts (at most mmTok rows each) go to the mmx
// kernels, maxBatchJobs at a time; a batch where some expert has more rows (a
// prefill chunk) goes to the grouped tiled kernels (gemm.go). Any other
// operation flushes the batch first, so the device still executes every
// goroutine's operations in the order issued.
type expertBatch struct {
	mu           sync.Mutex
	out, x       *tensor
	kind         string // the mmx kernel of the matrices' format
	I, H, gs, sf int
	jobs         []batchJob
	rows         []int32   // every job's rows, job after job
	wts          []float32 // their routing weights
	ej           []ExpertJob
}

// batchJob is one queued expert: its matrices and its span of the rows.
type batchJob struct {
	gate, up, down Matrix
	off, n         int
}

// groupMinBlocks, when positive, replaces the number of multiprocessors as
// the smallest gate+up grid a batch of prefill experts runs grouped (tests
// force either path with it).
var groupMinBlocks = 0

const (
	maxBatchJobs = 32    // experts per mmx launch
	maxBatchRows = 16384 // rows of one batch: bounds its staged arrays and scratch
)

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

// batchable reports whether an expert call of n rows into out can join a
// batch: the mmx kernels take up to mmTok rows, the grouped tiled kernels
// more (unless FM_CUDA_DEBUG=nogemm) within the batch's bounds.
func batchable(n int, out *tensor) bool {
	if debugNoBatch {
		return false
	}
	return n <= mmTok || (!debugNoGemm && n <= maxBatchRows && out.rows <= maxGridY)
}

// queueExpert adds one expert's job, flushing a batch it cannot join.
func (g *gpu) queueExpert(out, x *tensor, kind string, gate, up, down *Matrix, rows []int, weights []float32) {
	b := &g.batch
	b.mu.Lock()
	if len(b.jobs) > 0 && (b.out != out || b.x != x || b.kind != kind || b.I != gate.Rows || len(b.rows)+len(rows) > maxBatchRows) {
		g.flushLocked()
	}
	if len(b.jobs) == 0 {
		b.out, b.x, b.kind, b.I, b.H = out, x, kind, gate.Rows, gate.Cols
		b.gs, b.sf = 1, 0
		if gate.Format == backend.Affine {
			b.gs, b.sf = gate.GroupSize, int(gate.ScaleFormat)
		}
	}
	b.jobs = append(b.jobs, batchJob{gate: *gate, up: *up, down: *down, off: len(b.rows), n: len(rows)})
	for i, r := range rows {
		b.rows = append(b.rows, int32(r))
		b.wts = append(b.wts, weights[i])
	}
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
	if len(b.jobs) == 0 {
		return
	}
	defer func() { b.jobs, b.rows, b.wts, b.out, b.x = b.jobs[:0], b.rows[:0], b.wts[:0], nil, nil }()
	most := 0
	for i := range b.jobs {
		most = max(most, b.jobs[i].n)
	}
	if most > mmTok {
		// A grouped launch is as slow as its longest block (one tile's whole
		// K loop): a few experts (misses bound one by one, a short chunk)
		// fill the GPU better one after another, each product split in K.
		tiles := 0
		for i := range b.jobs {
			tiles += (b.jobs[i].n + gemmXTok - 1) / gemmXTok
		}
		least := g.d.Info.SMs
		if groupMinBlocks > 0 {
			least = groupMinBlocks
		}
		if tiles*((b.I+gemmRows-1)/gemmRows) >= least {
			g.flushGemm()
			return
		}
		for i := range b.jobs {
			j := &b.jobs[i]
			rows := make([]int, j.n)
			for t := range rows {
				rows[t] = int(b.rows[j.off+t])
			}
			g.expertDirect(b.out, b.x, &j.gate, &j.up, &j.down, rows, b.wts[j.off:j.off+j.n])
		}
		return
	}
	for i := 0; i < len(b.jobs); i += maxBatchJobs {
		g.flushDecode(b.jobs[i:min(i+maxBatchJobs, len(b.jobs))])
	}
}

// flushDecode runs jobs of at most mmTok rows each through the mmx kernels.
func (g *gpu) flushDecode(jobs []batchJob) {
	b := &g.batch
	n := len(jobs)
	b.ej = b.ej[:0]
	oneTok := true
	for i := range jobs {
		j := &jobs[i]
		e := ExpertJob{GW: j.gate.Data, GS: j.gate.Scales, GB: j.gate.Biases, UW: j.up.Data, US: j.up.Scales, UB: j.up.Biases,
			DW: j.down.Data, DS: j.down.Scales, DB: j.down.Biases, N: int32(j.n)}
		for t := 0; t < j.n; t++ {
			e.Rows[t], e.Wt[t] = b.rows[j.off+t], b.wts[j.off+t]
		}
		b.ej = append(b.ej, e)
		oneTok = oneTok && j.n == 1
	}
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&b.ej[0])), n*int(unsafe.Sizeof(ExpertJob{})))
	p, err := g.d.Stage(raw)
	if err != nil {
		return // kept by the device, reported at the next sync
	}
	h, err := g.d.Alloc(n * mmTok * b.I * 4)
	if err != nil {
		return
	}
	defer g.d.Free(h)
	y, err := g.d.Alloc(n * mmTok * b.H * 4)
	if err != nil {
		return
	}
	defer g.d.Free(y)
	g.d.ExpertBatch(b.kind, p, n, h.Ptr, b.x.ptr, y.Ptr, b.out.ptr, b.I, b.H, b.gs, b.sf, oneTok)
}
