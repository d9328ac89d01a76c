//go:build cuda && linux

package cuda

import (
	"fmt"
	"math"
	"runtime"
	"sync"
	"unsafe"

	"github.com/fm-moe/fm/pkg/backend"
)

func init() { backend.Register("cuda", openBackend) }

// gpu is the backend.Device of the CUDA backend. Several may be open at once
// over the one process-wide Device (Open); each frees what it allocated.
type gpu struct {
	d *Device

	mu         sync.Mutex
	invFreq    map[ropeKey]Buffer
	layouts    map[*backend.ExpertLayout]error
	placements map[*backend.ExpertLayout]*placement
	hostBufs   map[*byte]bool
	closed     bool
	cache      *expertCache
	batch      expertBatch
}

type ropeKey struct {
	dim   int
	theta float64
}

func openBackend(opts backend.Options) (backend.Device, error) {
	if opts.Matmul != "" && opts.Matmul != backend.MatmulExact {
		return nil, fmt.Errorf("cuda: matmul mode %s is not implemented on this backend (it computes exact float products only); use --matmul exact", opts.Matmul)
	}
	cache, err := newExpertCache(opts.ExpertCacheBytes, opts.ExpertCachePolicy)
	if err != nil {
		return nil, err
	}
	d, err := Open()
	if err != nil {
		return nil, err
	}
	return &gpu{d: d, invFreq: map[ropeKey]Buffer{}, layouts: map[*backend.ExpertLayout]error{}, placements: map[*backend.ExpertLayout]*placement{}, hostBufs: map[*byte]bool{},
		cache: cache}, nil
}

func (g *gpu) Name() string { return "cuda:0 " + g.d.Info.Name }

func (g *gpu) Close() error {
	g.flushExperts()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	var first error
	for p := range g.hostBufs {
		if err := g.d.FreeHost(unsafe.Slice(p, 1)); err != nil && first == nil {
			first = err
		}
	}
	for _, b := range g.invFreq {
		g.d.Free(b)
	}
	g.cache.mu.Lock()
	for _, s := range g.cache.all {
		if err := g.d.FreeExact(s.buf); err != nil && first == nil {
			first = err
		}
	}
	g.cache.all, g.cache.free = nil, nil
	clear(g.cache.byKey)
	g.cache.slots = 0
	g.cache.mu.Unlock()
	if err := g.d.Sync(); err != nil && first == nil {
		first = err
	}
	return first
}

// tensor is a [rows × cols] float32 matrix at ptr. An owning tensor returns
// its memory to the pool on Release or, if never released, when it becomes
// unreachable; a view keeps its owner reachable.
type tensor struct {
	g          *gpu
	ptr        uintptr
	rows, cols int
	own        *owned
	parent     *tensor
}

type owned struct {
	b        Buffer
	cleanup  runtime.Cleanup
	released bool
	mu       sync.Mutex
}

func (t *tensor) Rows() int { return t.rows }
func (t *tensor) Cols() int { return t.cols }

func (t *tensor) Slice(r0, r1 int) backend.Tensor {
	if r0 < 0 || r1 > t.rows || r0 >= r1 {
		panic(fmt.Sprintf("cuda: Slice(%d, %d) of a tensor of %d rows", r0, r1, t.rows))
	}
	p := t
	if t.parent != nil {
		p = t.parent
	}
	return &tensor{g: t.g, ptr: t.ptr + uintptr(r0*t.cols*4), rows: r1 - r0, cols: t.cols, parent: p}
}

func (t *tensor) Release() {
	t.g.flushExperts()
	if t.own == nil {
		return
	}
	t.own.mu.Lock()
	defer t.own.mu.Unlock()
	if t.own.released {
		return
	}
	t.own.released = true
	t.own.cleanup.Stop()
	t.g.d.Free(t.own.b)
}

func (t *tensor) n() int { return t.rows * t.cols }

func (g *gpu) newTensor(rows, cols int) (*tensor, error) {
	if rows <= 0 || cols <= 0 {
		return nil, fmt.Errorf("cuda: tensor shape [%d %d] is not positive", rows, cols)
	}
	b, err := g.d.Alloc(rows * cols * 4)
	if err != nil {
		return nil, err
	}
	t := &tensor{g: g, ptr: b.Ptr, rows: rows, cols: cols, own: &owned{b: b}}
	d := g.d
	t.own.cleanup = runtime.AddCleanup(t, func(b Buffer) { d.Free(b) }, b)
	return t, nil
}

func (g *gpu) NewTensor(rows, cols int) (backend.Tensor, error) {
	g.flushExperts()
	t, err := g.newTensor(rows, cols)
	if err != nil {
		return nil, err
	}
	g.d.Zero(Buffer{Ptr: t.ptr, Size: t.n() * 4}, 0, t.n()*4)
	return t, nil
}

// tt checks that x is a tensor of this device.
func (g *gpu) tt(x backend.Tensor, what string) *tensor {
	t, ok := x.(*tensor)
	if !ok || t.g != g {
		panic(fmt.Sprintf("cuda: %s is not a tensor of this device (%T)", what, x))
	}
	if t.own != nil && t.own.released {
		panic("cuda: " + what + " was released")
	}
	return t
}

func shapeCheck(op string, cond bool, format string, args ...any) {
	if !cond {
		panic(fmt.Sprintf("cuda: %s: %s", op, fmt.Sprintf(format, args...)))
	}
}

func f32Bytes(f []float32) []byte {
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), len(f)*4)
}

func i32Bytes(v []int32) []byte {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), len(v)*4)
}

func (g *gpu) Upload(dst backend.Tensor, src []float32) {
	g.flushExperts()
	t := g.tt(dst, "Upload destination")
	shapeCheck("Upload", len(src) == t.n(), "%d floats for a [%d %d] tensor", len(src), t.rows, t.cols)
	// An error here is also kept by the device and reported by the next
	// synchronizing call.
	_ = g.d.Upload(Buffer{Ptr: t.ptr, Size: t.n() * 4}, 0, f32Bytes(src))
}

func (g *gpu) Download(dst []float32, src backend.Tensor) error {
	t := g.tt(src, "Download source")
	shapeCheck("Download", len(dst) == t.n(), "%d floats for a [%d %d] tensor", len(dst), t.rows, t.cols)
	// Each of these synchronizations flushes what is deferred first (the
	// lone product downloadProduct runs is all there is then), so it ends
	// an epoch (Device.Epoch: cache slots free of queued readers).
	if done, err := g.downloadProduct(dst, t); done {
		if err == nil {
			g.d.nextEpoch()
		}
		return err
	}
	g.flushExperts()
	if err := g.d.Download(f32Bytes(dst), Buffer{Ptr: t.ptr, Size: t.n() * 4}, 0); err != nil {
		return err
	}
	err := g.d.Err()
	if err == nil {
		g.d.nextEpoch()
	}
	return err
}

func (g *gpu) Sync() error {
	g.flushExperts()
	err := g.d.Sync()
	if err == nil {
		g.d.nextEpoch()
	}
	return err
}

func (g *gpu) NonFinite(x backend.Tensor) (int, error) {
	g.flushExperts()
	t := g.tt(x, "NonFinite input")
	row, err := g.d.FirstNonFinite(t.ptr, t.n(), t.cols)
	if err == nil {
		g.d.nextEpoch()
	}
	return row, err
}

// matrix is a dense weight matrix copied to device memory.
type matrix struct {
	desc    backend.MatrixDesc
	m       Matrix
	b       Buffer
	g       *gpu
	cleanup runtime.Cleanup
	once    sync.Once
}

func (m *matrix) Desc() backend.MatrixDesc { return m.desc }

func (m *matrix) Release() {
	m.g.flushExperts()
	m.once.Do(func() {
		m.cleanup.Stop()
		m.g.d.FreeExact(m.b)
	})
}

func align256(n int) int { return (n + 255) &^ 255 }

func (g *gpu) BindDense(desc backend.MatrixDesc, data, scales, biases []byte) (backend.Matrix, error) {
	g.flushExperts()
	if err := desc.CheckBytes(data, scales, biases); err != nil {
		return nil, err
	}
	scOff := align256(len(data))
	biOff := scOff + align256(len(scales))
	b, err := g.d.AllocExact(biOff + len(biases))
	if err != nil {
		return nil, fmt.Errorf("cuda: binding %v: %w", desc, err)
	}
	for _, p := range []struct {
		off int
		src []byte
	}{{0, data}, {scOff, scales}, {biOff, biases}} {
		if err := g.d.Upload(b, p.off, p.src); err != nil {
			g.d.FreeExact(b)
			return nil, fmt.Errorf("cuda: binding %v: %w", desc, err)
		}
	}
	m := &matrix{desc: desc, b: b, g: g, m: deviceMatrix(desc, b.Ptr, b.Ptr+uintptr(scOff), b.Ptr+uintptr(biOff))}
	d := g.d
	m.cleanup = runtime.AddCleanup(m, func(b Buffer) { d.FreeExact(b) }, b)
	return m, nil
}

func deviceMatrix(desc backend.MatrixDesc, data, scales, biases uintptr) Matrix {
	m := Matrix{Rows: desc.Rows, Cols: desc.Cols, Format: desc.Format, Data: data}
	if desc.Format == backend.Affine {
		m.Bits, m.GroupSize, m.ScaleFormat = desc.Bits, desc.GroupSize, desc.ScaleFormat
		m.Scales, m.Biases = scales, biases
	}
	return m
}

func (g *gpu) mat(w backend.Matrix, what string) *Matrix {
	switch m := w.(type) {
	case *matrix:
		if m.g.d != g.d {
			break
		}
		return &m.m
	}
	panic(fmt.Sprintf("cuda: %s is not a matrix of this device (%T)", what, w))
}

func (g *gpu) ExpertBuffer(size int) ([]byte, error) {
	b, err := g.d.HostAlloc(size)
	if err != nil {
		return nil, err
	}
	if uintptr(unsafe.Pointer(&b[0]))%4096 != 0 {
		g.d.FreeHost(b)
		return nil, fmt.Errorf("cuda: pinned buffer of %d bytes is not 4096-byte aligned", size)
	}
	g.mu.Lock()
	g.hostBufs[&b[0]] = true
	g.mu.Unlock()
	return b, nil
}

func (g *gpu) FreeExpertBuffer(buf []byte) {
	if len(buf) == 0 {
		return
	}
	g.mu.Lock()
	known := g.hostBufs[&buf[0]]
	delete(g.hostBufs, &buf[0])
	g.mu.Unlock()
	if known {
		g.d.FreeHost(buf)
	}
}

// expert is one routed expert copied into a device slab (from the pool). The
// copy is queued on the compute stream, so kernels after it see the weights;
// Release waits for the copy (the caller may then reuse the host bytes) and
// gives the slab back, which is safe while kernels that read it are still
// queued because every later use of the slab is queued after them.
type expert struct {
	g              *gpu
	slab           Buffer
	gate, up, down Matrix
	copied         Event
	once           sync.Once
	cleanup        runtime.Cleanup
}

func (e *expert) Release() {
	e.g.flushExperts()
	e.once.Do(func() {
		e.cleanup.Stop()
		e.g.d.WaitEvent(e.copied)
		e.g.d.Free(e.slab)
	})
}

// placement returns (and remembers) where a layout's parts go on the device.
func (g *gpu) placement(l *backend.ExpertLayout) *placement {
	g.mu.Lock()
	defer g.mu.Unlock()
	p, ok := g.placements[l]
	if !ok {
		p = placeExpert(l)
		g.placements[l] = p
	}
	return p
}

// checkLayout validates a layout once per layout pointer.
func (g *gpu) checkLayout(l *backend.ExpertLayout) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	verr, seen := g.layouts[l]
	if !seen {
		verr = l.Validate()
		g.layouts[l] = verr
	}
	return verr
}

func (g *gpu) BindExpert(l *backend.ExpertLayout, buf []byte) (backend.Expert, error) {
	g.flushExperts()
	if err := g.checkLayout(l); err != nil {
		return nil, err
	}
	if len(buf) < l.FileSize {
		return nil, fmt.Errorf("cuda: expert buffer of %d bytes, the layout needs %d", len(buf), l.FileSize)
	}
	pl := g.placement(l)
	slab, err := g.d.Alloc(pl.size)
	if err != nil {
		return nil, fmt.Errorf("cuda: expert slab: %w", err)
	}
	pl.upload(g.d, slab, buf, l.FileSize)
	ev, err := g.d.Record()
	if err != nil {
		g.d.Free(slab)
		return nil, err
	}
	e := &expert{g: g, slab: slab, copied: ev}
	e.gate, e.up, e.down = pl.matrices(l, slab.Ptr)
	d := g.d
	e.cleanup = runtime.AddCleanup(e, func(x struct {
		b  Buffer
		ev Event
	}) {
		d.WaitEvent(x.ev)
		d.Free(x.b)
	}, struct {
		b  Buffer
		ev Event
	}{slab, ev})
	return e, nil
}

func (g *gpu) Embed(dst backend.Tensor, table backend.Matrix, ids []int) {
	g.flushExperts()
	t := g.tt(dst, "Embed destination")
	m := g.mat(table, "Embed table")
	shapeCheck("Embed", t.rows == len(ids) && t.cols == m.Cols, "dst [%d %d] for %d ids of a [%d %d] table", t.rows, t.cols, len(ids), m.Rows, m.Cols)
	ids32 := make([]int32, len(ids))
	for i, id := range ids {
		shapeCheck("Embed", id >= 0 && id < m.Rows, "id %d outside the table's %d rows", id, m.Rows)
		ids32[i] = int32(id)
	}
	p, err := g.d.Stage(i32Bytes(ids32))
	if err != nil {
		return // kept by the device; reported at the next sync
	}
	g.d.EmbedRows(t.ptr, m, p, len(ids))
}

func (g *gpu) MatMul(y backend.Tensor, w backend.Matrix, x backend.Tensor) {
	ty, tx := g.tt(y, "MatMul output"), g.tt(x, "MatMul input")
	m := g.mat(w, "MatMul weight")
	shapeCheck("MatMul", tx.cols == m.Cols && ty.cols == m.Rows && ty.rows == tx.rows,
		"y [%d %d] = x [%d %d] times a [%d %d] matrix", ty.rows, ty.cols, tx.rows, tx.cols, m.Rows, m.Cols)
	if g.deferMatVec(ty, m, tx) {
		return
	}
	g.flushExperts()
	g.d.MatMul(&MM{Y: ty.ptr, LdY: ty.cols, W: m, X: tx.ptr, LdX: tx.cols, T: tx.rows, Mode: MMStore})
}

// downloadProduct downloads t when it is the output of the one deferred
// one-token product (the router logits at decode) through
// Device.MatVecDownload: the kernel writes the output and the pending marks
// to mapped host memory, so the round trip is one synchronization.
func (g *gpu) downloadProduct(dst []float32, t *tensor) (bool, error) {
	b := &g.batch
	b.mu.Lock()
	defer b.mu.Unlock()
	p := &b.mv
	if debugNoFuse || len(p.ms) != 1 || b.epi.h != nil || t.rows != 1 || !sameTensor(p.ys[0], t) {
		return false, nil
	}
	done, err := g.d.MatVecDownload(p.ms[0], p.x.ptr, t.ptr, dst)
	if done {
		clear(p.ms)
		clear(p.ys)
		p.x, p.ms, p.ys = nil, p.ms[:0], p.ys[:0]
	}
	return done, err
}

// deferMatVec defers y = m·x when x is one row and the GEMV kernels take m,
// to run it in one launch with the products of the same x issued next (an
// attention layer's q, k and v): see expertBatch.
func (g *gpu) deferMatVec(y *tensor, m *Matrix, x *tensor) bool {
	if x.rows != 1 || debugNoFuse || debugNoGemv || !g.d.gemvFits(m, 1) || fastKernel(m, x.ptr, x.cols) == "" {
		return false
	}
	b := &g.batch
	b.mu.Lock()
	defer b.mu.Unlock()
	p := &b.mv
	if len(p.ms) > 0 {
		m0 := p.ms[0]
		if !sameTensor(p.x, x) || len(p.ms) == mvbMax || m.Format != m0.Format || m.Bits != m0.Bits ||
			m.GroupSize != m0.GroupSize || m.ScaleFormat != m0.ScaleFormat || y.ptr == x.ptr || b.epi.h != nil {
			g.flushOthersLocked()
		}
	}
	g.flushJobsLocked()
	if b.add.dst != nil || b.clear != nil {
		g.flushOthersLocked()
	}
	p.x = x
	p.ms = append(p.ms, m)
	p.ys = append(p.ys, y)
	return true
}

func (g *gpu) RMSNorm(dst, x, w backend.Tensor, eps float64) {
	td, tx, tw := g.tt(dst, "RMSNorm output"), g.tt(x, "RMSNorm input"), g.tt(w, "RMSNorm weight")
	shapeCheck("RMSNorm", td.rows == tx.rows && td.cols == tx.cols && tw.n() == tx.cols,
		"dst [%d %d], x [%d %d], w [%d %d]", td.rows, td.cols, tx.rows, tx.cols, tw.rows, tw.cols)
	b := &g.batch
	b.mu.Lock()
	defer b.mu.Unlock()
	// The RMSNorm of a residual add deferred with its product: into the
	// product's last block (row_epilogue).
	if e := &b.epi; e.h != nil && e.dst == nil && sameTensor(e.h, tx) {
		e.dst, e.w, e.eps = td, tw, eps
		g.flushLocked()
		return
	}
	if debugNoFuse {
		g.flushLocked()
		g.d.RMSNorm(td.ptr, td.cols, tx.ptr, tx.cols, tw.ptr, tx.cols, tx.rows, eps)
		return
	}
	// A pending residual add into x (and its non-finite mark) runs in the
	// same kernel: h += a, mark, dst = rmsnorm(h)·w.
	var a, mark uintptr
	add := b.add
	if add.dst != nil && sameTensor(add.dst, tx) && add.src.cols == tx.cols {
		b.add = pendingAdd{}
		a = add.src.ptr
	} else {
		add = pendingAdd{}
	}
	g.flushLocked()
	if !g.d.enter() {
		g.d.leave()
		return
	}
	defer g.d.leave()
	var base int32
	if add.marks != nil {
		mark, base = add.marks.slotLocked(add.slot)
	}
	g.d.addRMSNorm(td.ptr, td.cols, tx.ptr, tx.cols, a, tx.cols, tw.ptr, tx.cols, tx.rows, eps, mark, base)
}

func (g *gpu) Clear(x backend.Tensor) {
	t := g.tt(x, "Clear input")
	b := &g.batch
	b.mu.Lock()
	defer b.mu.Unlock()
	g.flushLocked()
	if debugNoFuse || t.parent != nil {
		g.d.Zero(Buffer{Ptr: t.ptr, Size: t.n() * 4}, 0, t.n()*4)
		return
	}
	b.clear = t // see expertBatch: the experts' output
}

func (g *gpu) Add(dst, x backend.Tensor) {
	td, tx := g.tt(dst, "Add destination"), g.tt(x, "Add input")
	shapeCheck("Add", td.rows == tx.rows && td.cols == tx.cols, "[%d %d] += [%d %d]", td.rows, td.cols, tx.rows, tx.cols)
	b := &g.batch
	b.mu.Lock()
	defer b.mu.Unlock()
	if out := b.epiOut(); out != nil && !debugNoFuse && sameTensor(out, tx) && td.rows == 1 && td.ptr != tx.ptr {
		b.epi = pendingEpi{h: td, out: tx} // see pendingEpi: into the product's kernel
		return
	}
	g.flushLocked()
	if debugNoFuse {
		g.d.Add(td.ptr, tx.ptr, td.n())
		return
	}
	b.add = pendingAdd{dst: td, src: tx} // see expertBatch: the next RMSNorm
}

func (g *gpu) AddSigmoidScaled(dst, src, gate backend.Tensor) {
	g.flushExperts()
	td, ts, tg := g.tt(dst, "AddSigmoidScaled destination"), g.tt(src, "AddSigmoidScaled source"), g.tt(gate, "AddSigmoidScaled gate")
	shapeCheck("AddSigmoidScaled", td.rows == ts.rows && td.cols == ts.cols && tg.rows == td.rows && tg.cols == 1,
		"dst [%d %d], src [%d %d], g [%d %d]", td.rows, td.cols, ts.rows, ts.cols, tg.rows, tg.cols)
	g.d.GateAdd(td.ptr, ts.ptr, tg.ptr, td.rows, td.cols)
}

// swiGLU queues h = silu(gate·x) ⊙ (up·x) for T tokens of x (rows xrows when
// non-zero), in one pass when gate and up share a format.
func (g *gpu) swiGLU(h Buffer, gate, up *Matrix, x uintptr, ldx, T int, xrows uintptr) error {
	I := gate.Rows
	if sameFormat(gate, up) {
		g.d.MatMul(&MM{Y: h.Ptr, LdY: I, W: gate, W2: up, X: x, LdX: ldx, T: T, XRows: xrows, Mode: MMSwiGLU})
		return nil
	}
	u, err := g.d.Alloc(T * I * 4)
	if err != nil {
		return err
	}
	defer g.d.Free(u)
	g.d.MatMul(&MM{Y: h.Ptr, LdY: I, W: gate, X: x, LdX: ldx, T: T, XRows: xrows, Mode: MMStore})
	g.d.MatMul(&MM{Y: u.Ptr, LdY: I, W: up, X: x, LdX: ldx, T: T, XRows: xrows, Mode: MMStore})
	g.d.SwiGLU(h.Ptr, u.Ptr, T*I)
	return nil
}

func (g *gpu) MLP(y, x backend.Tensor, gate, up, down backend.Matrix) {
	g.flushExperts()
	ty, tx := g.tt(y, "MLP output"), g.tt(x, "MLP input")
	mg, mu, md := g.mat(gate, "MLP gate"), g.mat(up, "MLP up"), g.mat(down, "MLP down")
	shapeCheck("MLP", mg.Cols == tx.cols && mu.Rows == mg.Rows && mu.Cols == mg.Cols && md.Cols == mg.Rows &&
		ty.cols == md.Rows && ty.rows == tx.rows, "y [%d %d], x [%d %d], gate [%d %d], up [%d %d], down [%d %d]",
		ty.rows, ty.cols, tx.rows, tx.cols, mg.Rows, mg.Cols, mu.Rows, mu.Cols, md.Rows, md.Cols)
	T, I := tx.rows, mg.Rows
	h, err := g.d.Alloc(T * I * 4)
	if err != nil {
		return
	}
	defer g.d.Free(h)
	if g.swiGLU(h, mg, mu, tx.ptr, tx.cols, T, 0) != nil {
		return
	}
	g.d.MatMul(&MM{Y: ty.ptr, LdY: ty.cols, W: md, X: h.Ptr, LdX: I, T: T, Mode: MMStore})
}

func (g *gpu) ExpertFFN(out, x backend.Tensor, e backend.Expert, rows []int, weights []float32) {
	to, tx := g.tt(out, "ExpertFFN output"), g.tt(x, "ExpertFFN input")
	var gate, up, down *Matrix
	switch ex := e.(type) {
	case *expert:
		if ex.g.d == g.d {
			gate, up, down = &ex.gate, &ex.up, &ex.down
		}
	case *cachedExpert:
		if ex.g.d == g.d {
			gate, up, down = &ex.s.gate, &ex.s.up, &ex.s.down
		}
	}
	if gate == nil {
		panic(fmt.Sprintf("cuda: ExpertFFN: expert is not of this device (%T)", e))
	}
	n := len(rows)
	shapeCheck("ExpertFFN", n >= 1 && len(weights) == n && to.rows == tx.rows && to.cols == tx.cols && tx.cols == gate.Cols,
		"%d rows, %d weights, out [%d %d], x [%d %d], expert [%d %d]", n, len(weights), to.rows, to.cols, tx.rows, tx.cols, gate.Rows, gate.Cols)
	for i, r := range rows {
		// The message only on failure: its arguments would be boxed for
		// every row of a prefill chunk (4,096 a layer at 512 tokens).
		if r < 0 || r >= tx.rows || (i > 0 && r <= rows[i-1]) {
			shapeCheck("ExpertFFN", false, "rows must be distinct, increasing and < %d: %v", tx.rows, rows)
		}
	}
	if batchable(n, to) {
		if kind := batchKind(gate, up, down, tx); kind != "" {
			g.queueExpert(to, tx, kind, gate, up, down, rows, weights)
			return
		}
	}
	g.flushExperts()
	g.expertDirect(to, tx, gate, up, down, rows, weights)
}

// expertDirect runs one expert's FFN as its own products (no batch): the
// 8-token kernels with rows by value for a few rows, else the rows staged and
// the tiled kernels (which split K to fill the GPU) for gate+up and down.
// The caller has flushed any batch queued before it.
func (g *gpu) expertDirect(to, tx *tensor, gate, up, down *Matrix, rows []int, weights []float32) {
	n := len(rows)
	I := gate.Rows
	h, err := g.d.Alloc(n * I * 4)
	if err != nil {
		return
	}
	defer g.d.Free(h)
	if n <= mmTok {
		// Rows and weights by value: no staging copy (every decode step).
		in, out := &RowArgs{N: int32(n)}, &RowArgs{N: int32(n)}
		for i, r := range rows {
			in.X[i], in.Y[i] = int32(r), -1
			out.X[i], out.Y[i], out.W[i] = int32(i), int32(r), weights[i]
		}
		if sameFormat(gate, up) {
			g.d.MatMul(&MM{Y: h.Ptr, LdY: I, W: gate, W2: up, X: tx.ptr, LdX: tx.cols, T: n, Rows: in, Mode: MMSwiGLU})
		} else if g.swiGLUStaged(h, gate, up, tx, rows) != nil {
			return
		}
		g.d.MatMul(&MM{Y: to.ptr, LdY: to.cols, W: down, X: h.Ptr, LdX: I, T: n, Rows: out, Mode: MMStore})
		return
	}
	// rows (int32) then weights (float32), one staging copy.
	args := make([]int32, 2*n)
	for i, r := range rows {
		args[i] = int32(r)
		args[n+i] = int32(math.Float32bits(weights[i]))
	}
	p, err := g.d.Stage(i32Bytes(args))
	if err != nil {
		return
	}
	if g.swiGLU(h, gate, up, tx.ptr, tx.cols, n, p) != nil {
		return
	}
	g.d.MatMul(&MM{Y: to.ptr, LdY: to.cols, W: down, X: h.Ptr, LdX: I, T: n, YRows: p, YWt: p + uintptr(4*n), Mode: MMStore})
}

// swiGLUStaged is swiGLU over rows of x staged to the device (gate and up of
// different formats, few rows).
func (g *gpu) swiGLUStaged(h Buffer, gate, up *Matrix, x *tensor, rows []int) error {
	idx := make([]int32, len(rows))
	for i, r := range rows {
		idx[i] = int32(r)
	}
	p, err := g.d.Stage(i32Bytes(idx))
	if err != nil {
		return err
	}
	return g.swiGLU(h, gate, up, x.ptr, x.cols, len(rows), p)
}

// invFreqs returns the device array of RoPE inverse frequencies, computed as
// cpu.NewRope (and transformers) do: float32 exponent and power, then the
// reciprocal.
func (g *gpu) invFreqs(dim int, theta float64) (uintptr, error) {
	k := ropeKey{dim, theta}
	g.mu.Lock()
	defer g.mu.Unlock()
	if b, ok := g.invFreq[k]; ok {
		return b.Ptr, nil
	}
	f := make([]float32, max(dim/2, 1))
	for i := 0; i < dim/2; i++ {
		e := float32(2*i) / float32(dim)
		f[i] = 1 / float32(math.Pow(theta, float64(e)))
	}
	b, err := g.d.Alloc(len(f) * 4)
	if err != nil {
		return 0, err
	}
	if err := g.d.Upload(b, 0, f32Bytes(f)); err != nil {
		g.d.Free(b)
		return 0, err
	}
	g.invFreq[k] = b
	return b.Ptr, nil
}

func (g *gpu) Attention(out, q, k, v backend.Tensor, st backend.State, layer, pos int, p *backend.AttentionParams) {
	g.flushExperts()
	to, tq, tk, tv := g.tt(out, "Attention output"), g.tt(q, "Attention q"), g.tt(k, "Attention k"), g.tt(v, "Attention v")
	s := g.state(st)
	shapeCheck("Attention", layer >= 0 && layer < len(s.layers) && s.layers[layer].spec.Attention != nil, "layer %d has no KV cache", layer)
	ls := &s.layers[layer]
	nH, nKV, D := p.Heads, p.KVHeads, p.HeadDim
	T, kvDim, attnDim := tq.rows, nKV*D, nH*D
	qCols := attnDim
	if p.Gated {
		qCols *= 2
	}
	shapeCheck("Attention", tq.cols == qCols && tk.rows == T && tk.cols == kvDim && tv.rows == T && tv.cols == kvDim &&
		to.rows == T && to.cols == attnDim, "q [%d %d], k [%d %d], v [%d %d], out [%d %d] for %d heads, %d KV heads of %d",
		tq.rows, tq.cols, tk.rows, tk.cols, tv.rows, tv.cols, to.rows, to.cols, nH, nKV, D)
	shapeCheck("Attention", pos == ls.length, "position %d, but the layer's cache holds %d", pos, ls.length)
	if err := s.reserve(ls, pos+T); err != nil {
		return
	}
	inv, err := g.invFreqs(p.RotaryDim, p.RopeTheta)
	if err != nil {
		return
	}
	qn, err := g.d.Alloc(2 * T * attnDim * 4)
	if err != nil {
		return
	}
	defer g.d.Free(qn)
	gate := qn.Ptr + uintptr(T*attnDim*4)
	qnw, knw := g.tt(p.QNorm, "QNorm"), g.tt(p.KNorm, "KNorm")
	g.d.QKNormRoPE(&QKNormRoPEArgs{QOut: qn.Ptr, GateOut: gate, KOut: ls.k.Ptr + uintptr(pos*kvDim*4), QP: tq.ptr, KP: tk.ptr,
		QNorm: qnw.ptr, KNorm: knw.ptr, InvFreq: inv, NH: nH, NKV: nKV, D: D, RotDim: p.RotaryDim, Gated: p.Gated,
		LdQP: tq.cols, LdKP: tk.cols, LdQ: attnDim, LdK: kvDim, Pos0: pos, T: T, Eps: p.Eps,
		// The values go in by the same kernel (not by an asynchronous
		// device copy: in the layer measurement the host blocked in copies
		// queued behind others; not by a launch of their own: host time).
		VOut: ls.v.Ptr + uintptr(pos*kvDim*4), VP: tv.ptr, LdVP: tv.cols})
	g.d.Attend(&AttendArgs{O: to.ptr, Q: qn.Ptr, Gate: gate, KC: ls.k.Ptr, VC: ls.v.Ptr, NH: nH, NKV: nKV, D: D,
		Pos0: pos, T: T, LdQ: attnDim, LdKV: kvDim, Scale: float32(1 / math.Sqrt(float64(D))), Gated: p.Gated})
	ls.length = pos + T
}

func (g *gpu) DeltaNet(out, qkv, z, b, a backend.Tensor, st backend.State, layer int, p *backend.DeltaNetParams) {
	g.flushExperts()
	to, tqkv, tz, tb, ta := g.tt(out, "DeltaNet output"), g.tt(qkv, "DeltaNet qkv"), g.tt(z, "DeltaNet z"), g.tt(b, "DeltaNet b"), g.tt(a, "DeltaNet a")
	s := g.state(st)
	shapeCheck("DeltaNet", layer >= 0 && layer < len(s.layers) && s.layers[layer].spec.DeltaNet != nil, "layer %d has no delta-net state", layer)
	ls := &s.layers[layer]
	T, cc := tqkv.rows, p.Channels()
	nk, nv, dk, dv := p.KeyHeads, p.ValueHeads, p.KeyDim, p.ValueDim
	vd := nv * dv
	shapeCheck("DeltaNet", tqkv.cols == cc && tz.rows == T && tz.cols == vd && tb.rows == T && tb.cols == nv &&
		ta.rows == T && ta.cols == nv && to.rows == T && to.cols == vd, "qkv [%d %d], z [%d %d], b [%d %d], a [%d %d], out [%d %d]",
		tqkv.rows, tqkv.cols, tz.rows, tz.cols, tb.rows, tb.cols, ta.rows, ta.cols, to.rows, to.cols)
	conv, negA, dt, norm := g.tt(p.Conv, "Conv"), g.tt(p.NegA, "NegA"), g.tt(p.DtBias, "DtBias"), g.tt(p.Norm, "Norm")
	g.d.ConvSiLU(tqkv.ptr, cc, ls.conv.Ptr, conv.ptr, T, cc, p.ConvKernel)
	g.d.L2NormHeads(tqkv.ptr, cc, T, nk, dk, nk*dk, float32(1/math.Sqrt(float64(dk))))
	args := &DeltaRuleArgs{Core: to.ptr, S: ls.rec.Ptr, QKV: tqkv.ptr, B: tb.ptr, A: ta.ptr, Z: tz.ptr,
		NegA: negA.ptr, DtBias: dt.ptr, NormW: norm.ptr, T: T, NK: nk, NV: nv, DK: dk, DV: dv,
		LdQKV: cc, LdBA: nv, LdZ: vd, Eps: p.Eps}
	if g.d.ChunkedDeltaRule(T, dk) {
		g.d.DeltaRuleChunked(args)
	} else {
		g.d.DeltaRule(args)
	}
}

var (
	_ backend.Device      = (*gpu)(nil)
	_ backend.ExpertCache = (*gpu)(nil)
	_ backend.UploadMeter = (*gpu)(nil)
)
