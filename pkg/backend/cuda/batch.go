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

// expertBatch holds the operations the backend defers to launch them
// together (each launch costs the host 4–5 µs through the driver, and a
// decode layer's small kernels as much on the device, docs/PERF.md):
//
//   - the ExpertFFN calls of a decode step (each expert a few rows), so that
//     a layer's experts run as two or three launches — gate/up for all, down
//     for all with the weighted sum in call order — instead of two each;
//     a Clear of their output just before joins them (the down kernel then
//     overwrites instead of adding, where the output is one row); those of
//     a prefill chunk (some expert with more than mmTok rows) run through
//     the grouped tiled kernels (gemm.go): gate+up of every expert in one
//     launch, down in one, then the weighted sum in call order;
//   - one-token products of one input row (q, k and v), run as one grid; a
//     lone one whose output the host downloads next (the router logits)
//     writes it, and the pending marks, to mapped host memory;
//   - a residual Add, with the non-finite Mark of its result, which the
//     next RMSNorm of that result runs in its own kernel (add_rmsnorm), or,
//     when it adds the one-row output of the pending experts or lone
//     product, which that product's kernel runs in its last block
//     (pendingEpi).
//
// At most one kind is pending at a time (deferring one flushes the others;
// an epilogue goes with the experts or the product), and any other
// operation flushes what is pending first, so the device still executes
// every goroutine's operations in the order issued.
type expertBatch struct {
	mu           sync.Mutex
	out, x       *tensor
	kind         string // the mmx kernel of the matrices' format
	I, H, gs, sf int
	jobs         []batchJob
	rows         []int32   // every job's rows, job after job
	wts          []float32 // their routing weights
	most         int       // the most rows of a job
	ej           []ExpertJob
	cleared      bool // out was cleared just before the first job (the clear is pending with them)

	add   pendingAdd
	clear *tensor // a pending Clear
	mv    pendingMV
	epi   pendingEpi // with jobs or mv pending (one row): see pendingEpi
}

// pendingEpi is a residual add h += out deferred with the one-token product
// (the experts' batch, or a lone product) whose one-row output out it adds,
// with the Mark of its result and the next RMSNorm of h when they come:
// the product's kernel runs them in its last block (row_epilogue), which
// saves the add_rmsnorm launch after o_proj and after the experts. h nil:
// none.
type pendingEpi struct {
	h, out *tensor
	marks  *MarkSet
	slot   int
	dst, w *tensor // the RMSNorm (dst nil: none yet)
	eps    float64
}

// epiOut returns the one-row output of the pending product a residual add
// may join, or nil.
func (b *expertBatch) epiOut() *tensor {
	if b.epi.h != nil {
		return nil
	}
	if len(b.jobs) > 0 && b.out.rows == 1 && b.most <= mmTok {
		return b.out
	}
	if len(b.mv.ms) == 1 && b.mv.ys[0].rows == 1 {
		return b.mv.ys[0]
	}
	return nil
}

// rowEpiLocked turns the pending epilogue into the kernel's struct (nil:
// none), registering its mark (caller holds b.mu, not the device).
func (g *gpu) rowEpiLocked() *rowEpi {
	e := g.batch.epi
	if e.h == nil {
		return nil
	}
	r := &rowEpi{H: e.h.ptr, N: int32(e.h.cols), Eps: e.eps}
	if e.dst != nil {
		r.Dst, r.W = e.dst.ptr, e.w.ptr
	}
	if e.marks != nil {
		if !g.d.enter() {
			g.d.leave()
			return r
		}
		p, base := e.marks.slotLocked(e.slot)
		g.d.leave()
		r.Mark, r.MarkBase = p, base
	}
	return r
}

// epiAlone runs a pending epilogue that its product's kernel could not.
func (g *gpu) epiAlone(e pendingEpi) {
	if e.dst != nil {
		var mark uintptr
		var base int32
		if !g.d.enter() {
			g.d.leave()
			return
		}
		if e.marks != nil {
			mark, base = e.marks.slotLocked(e.slot)
		}
		g.d.addRMSNorm(e.dst.ptr, e.dst.cols, e.h.ptr, e.h.cols, e.out.ptr, e.out.cols, e.w.ptr, e.h.cols, 1, e.eps, mark, base)
		g.d.leave()
		return
	}
	g.d.Add(e.h.ptr, e.out.ptr, e.h.n())
	if e.marks != nil {
		e.marks.Mark(e.slot, e.h.ptr, e.h.n(), e.h.cols)
	}
}

// pendingAdd is a deferred dst += src (dst nil: none), with the Mark of
// dst's result into slot of marks when marks is not nil.
type pendingAdd struct {
	dst, src *tensor
	marks    *MarkSet
	slot     int
}

// pendingMV is up to mvbMax deferred one-token products of x.
type pendingMV struct {
	x  *tensor
	ms []*Matrix
	ys []*tensor
}

func sameTensor(a, b *tensor) bool {
	return a != nil && b != nil && a.ptr == b.ptr && a.rows == b.rows && a.cols == b.cols
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
	maxBatchJobs = 32    // experts of a decode batch (one mmx launch)
	maxBatchRows = 16384 // rows of one batch: bounds its staged arrays and scratch
)

// batchable reports whether an expert call of n rows into out can join a
// batch: the mmx kernels take up to mmTok rows, the grouped tiled kernels
// more (unless FM_CUDA_DEBUG=nogemm) within the batch's bounds.
func batchable(n int, out *tensor) bool {
	if debugNoBatch {
		return false
	}
	return n <= mmTok || (!debugNoGemm && n <= maxBatchRows && out.rows <= maxGridY)
}

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
	decode := b.most <= mmTok && len(rows) <= mmTok // the batch stays one of decode experts
	if len(b.jobs) > 0 && (b.out != out || b.x != x || b.kind != kind || b.I != gate.Rows || (decode && len(b.jobs) == maxBatchJobs) ||
		len(b.rows)+len(rows) > maxBatchRows || b.epi.h != nil) {
		g.flushLocked()
	}
	cleared := false
	if len(b.jobs) == 0 && b.clear != nil && sameTensor(b.clear, out) && !debugNoFuse {
		b.clear, cleared = nil, true // the clear joins the batch
	}
	g.flushOthersLocked()
	if len(b.jobs) == 0 {
		b.cleared = cleared
		b.out, b.x, b.kind, b.I, b.H = out, x, kind, gate.Rows, gate.Cols
		b.gs, b.sf = 1, 0
		if gate.Format == backend.Affine {
			b.gs, b.sf = gate.GroupSize, int(gate.ScaleFormat)
		}
	}
	b.jobs = append(b.jobs, batchJob{gate: *gate, up: *up, down: *down, off: len(b.rows), n: len(rows)})
	b.most = max(b.most, len(rows))
	for i, r := range rows {
		b.rows = append(b.rows, int32(r))
		b.wts = append(b.wts, weights[i])
	}
	b.mu.Unlock()
}

// flushExperts launches everything deferred (see expertBatch): every
// operation that is not itself deferred calls it first.
func (g *gpu) flushExperts() {
	b := &g.batch
	b.mu.Lock()
	g.flushLocked()
	b.mu.Unlock()
}

// flushLocked launches everything pending (caller holds b.mu).
func (g *gpu) flushLocked() {
	g.flushOthersLocked()
	g.flushJobsLocked()
}

// flushOthersLocked launches the pending Add, Clear and products (at most
// one of them is pending), not the expert jobs.
func (g *gpu) flushOthersLocked() {
	b := &g.batch
	if a := b.add; a.dst != nil {
		b.add = pendingAdd{}
		g.d.Add(a.dst.ptr, a.src.ptr, a.dst.n())
		if a.marks != nil {
			a.marks.Mark(a.slot, a.dst.ptr, a.dst.n(), a.dst.cols)
		}
	}
	if c := b.clear; c != nil {
		b.clear = nil
		g.d.Zero(Buffer{Ptr: c.ptr, Size: c.n() * 4}, 0, c.n()*4)
	}
	if p := &b.mv; len(p.ms) > 0 {
		var ys [mvbMax]uintptr
		for i, y := range p.ys {
			ys[i] = y.ptr
		}
		if epi := g.rowEpiLocked(); epi != nil {
			b.epi = pendingEpi{}
			g.d.MatVecBatch(p.ms[:1], ys[:1], p.x.ptr, epi)
		} else if len(p.ms) == 1 {
			g.d.MatMul(&MM{Y: ys[0], LdY: p.ys[0].cols, W: p.ms[0], X: p.x.ptr, LdX: p.x.cols, T: 1, Mode: MMStore})
		} else {
			g.d.MatVecBatch(p.ms, ys[:len(p.ms)], p.x.ptr, nil)
		}
		clear(p.ms)
		clear(p.ys)
		p.x, p.ms, p.ys = nil, p.ms[:0], p.ys[:0]
	}
}

func (g *gpu) flushJobsLocked() {
	b := &g.batch
	n := len(b.jobs)
	if n == 0 {
		return
	}
	defer func() {
		b.jobs, b.rows, b.wts, b.most, b.out, b.x, b.cleared = b.jobs[:0], b.rows[:0], b.wts[:0], 0, nil, nil, false
	}()
	if b.most > mmTok {
		g.flushPrefillLocked()
		return
	}
	b.ej = b.ej[:0]
	for i := range b.jobs {
		j := &b.jobs[i]
		e := ExpertJob{GW: j.gate.Data, GS: j.gate.Scales, GB: j.gate.Biases, UW: j.up.Data, US: j.up.Scales, UB: j.up.Biases,
			DW: j.down.Data, DS: j.down.Scales, DB: j.down.Biases, N: int32(j.n)}
		for t := 0; t < j.n; t++ {
			e.Rows[t], e.Wt[t] = b.rows[j.off+t], b.wts[j.off+t]
		}
		b.ej = append(b.ej, e)
	}
	epiP := b.epi
	b.epi = pendingEpi{}
	oneTok := true
	for i := range b.jobs {
		oneTok = oneTok && b.jobs[i].n == 1
	}
	zero := b.cleared && oneTok && b.out.rows == 1
	if b.cleared && !zero {
		g.d.Zero(Buffer{Ptr: b.out.ptr, Size: b.out.n() * 4}, 0, b.out.n()*4)
	}
	h, err := g.d.Alloc(n * mmTok * b.I * 4)
	if err != nil {
		return // kept by the device, reported at the next sync
	}
	defer g.d.Free(h)
	// A decode step: jobs by value, two launches, no staging copy, the
	// residual add (and the next RMSNorm) in the down kernel's last block.
	b.epi = epiP
	epi := g.rowEpiLocked()
	b.epi = pendingEpi{}
	if oneTok && g.d.expertBatchOneTok(b.kind, b.ej, h.Ptr, b.x.ptr, b.out.ptr, b.I, b.H, b.gs, b.sf, zero, epi) {
		return
	}
	if epiP.h != nil {
		defer g.epiAlone(epiP) // queued after the staged kernels below
	}
	if zero {
		g.d.Zero(Buffer{Ptr: b.out.ptr, Size: b.out.n() * 4}, 0, b.out.n()*4)
	}
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&b.ej[0])), n*int(unsafe.Sizeof(ExpertJob{})))
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

// flushPrefillLocked runs a batch in which some expert has more than mmTok
// rows (a prefill chunk): the grouped tiled kernels, or, where their grid
// would not fill the GPU, expert by expert (caller holds b.mu).
func (g *gpu) flushPrefillLocked() {
	b := &g.batch
	if b.cleared {
		g.d.Zero(Buffer{Ptr: b.out.ptr, Size: b.out.n() * 4}, 0, b.out.n()*4)
	}
	if e := b.epi; e.h != nil { // not joined to a prefill batch (epiOut), kept for safety
		b.epi = pendingEpi{}
		defer g.epiAlone(e)
	}
	// A grouped launch is as slow as its longest block (one tile's whole K
	// loop): a few experts (misses bound one by one, a short chunk) fill the
	// GPU better one after another, each product split in K.
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
}
