package cpu

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/fm-moe/fm/pkg/backend"
	"github.com/fm-moe/fm/pkg/experts"
	"github.com/fm-moe/fm/pkg/internal/nonfinite"
)

// Name is the registry name of the CPU backend.
const Name = "cpu"

func init() {
	backend.Register(Name, func(o backend.Options) (backend.Device, error) { return OpenDevice(o) })
}

// Device is the CPU implementation of backend.Device. "Device memory" is the
// Go heap: tensors are []float32, dense weights are used in place in the
// mapped file, experts in place in their buffers, and every operation runs to
// completion before it returns, split over the Pool's goroutines. It holds no
// mutable state besides recycled scratch buffers, so it is safe for
// concurrent use.
type Device struct {
	pool *Pool
	// serial runs products on the calling goroutine (one worker), for
	// ExpertFFNs, which spreads whole experts over pool's workers.
	serial *Pool
	buf    scratch
	ropes  sync.Map // ropeKey → *Rope: the inverse frequencies, computed once

	freeMu sync.Mutex
	free   []*expert // released experts, for reuse

	// recycle keeps released tensors' and states' memory for the next
	// request (recycle.go).
	recycle recycler

	// xc keeps row-interleaved routed experts (expertcache.go); nil only for
	// a Device made by NewDevice, which has no cache.
	xc *expertCache
}

type ropeKey struct {
	dim   int
	theta float64
}

// rope returns the rotary embedding of dim dimensions and base theta.
func (d *Device) rope(dim int, theta float64) *Rope {
	k := ropeKey{dim, theta}
	if r, ok := d.ropes.Load(k); ok {
		return r.(*Rope)
	}
	r, _ := d.ropes.LoadOrStore(k, NewRope(dim, theta))
	return r.(*Rope)
}

// NewDevice returns a CPU device computing on the given number of goroutines
// (<= 0: GOMAXPROCS).
func NewDevice(threads int) *Device {
	p := NewPool(threads)
	return &Device{pool: p, serial: newPool(1, p.level)}
}

// OpenDevice returns a CPU device configured by o: o.Threads goroutines and
// o.Matmul's numerics for quantized products (MatmulInt8: int8 activations,
// see int8.go).
func OpenDevice(o backend.Options) (*Device, error) {
	mode, err := backend.ParseMatmul(string(o.Matmul))
	if err != nil {
		return nil, fmt.Errorf("cpu: %w", err)
	}
	d := NewDevice(o.Threads)
	if mode == backend.MatmulInt8 {
		d.pool.int8, d.serial.int8 = true, true
	}
	if _, err := experts.NewReplacement[backend.ExpertKey](experts.Policy(o.ExpertCachePolicy), 1); err != nil {
		return nil, fmt.Errorf("cpu: expert cache: %w", err)
	}
	// Packed experts need the packed kernels: int8 mode on AVX-512 VNNI.
	on := d.pool.rowPacks() && !rowPackExpertsOff
	d.xc = newExpertCache(o.ExpertCacheBytes, o.ExpertCachePolicy, on)
	return d, nil
}

// Pool is the device's worker pool.
func (d *Device) Pool() *Pool { return d.pool }

// Name implements backend.Device.
func (d *Device) Name() string { return fmt.Sprintf("%s:%d threads", Name, d.pool.Workers()) }

// Close implements backend.Device; there is nothing to release.
func (d *Device) Close() error { return nil }

// Tensor is the CPU's backend.Tensor: a row-major [rows × cols] float32 slice.
type Tensor struct {
	rows, cols int
	data       []float32
	rec        *recycler // where Release returns data (nil: a view, or released)
}

// Rows implements backend.Tensor.
func (t *Tensor) Rows() int { return t.rows }

// Cols implements backend.Tensor.
func (t *Tensor) Cols() int { return t.cols }

// Slice implements backend.Tensor.
func (t *Tensor) Slice(r0, r1 int) backend.Tensor {
	if r0 < 0 || r1 > t.rows || r0 >= r1 {
		panic(fmt.Sprintf("cpu: Slice(%d, %d) of a %d-row tensor", r0, r1, t.rows))
	}
	return &Tensor{rows: r1 - r0, cols: t.cols, data: t.data[r0*t.cols : r1*t.cols : r1*t.cols]}
}

// Release implements backend.Tensor: a tensor from NewTensor gives its
// memory to the device's recycler (recycle.go); a view does nothing.
func (t *Tensor) Release() {
	if t.rec != nil {
		t.rec.put(t.data)
		t.rec, t.data = nil, nil
	}
}

// Data is the tensor's memory (rows·cols floats, row-major).
func (t *Tensor) Data() []float32 { return t.data }

// row returns row r.
func (t *Tensor) row(r int) []float32 { return t.data[r*t.cols : (r+1)*t.cols] }

// data unwraps a tensor of this backend.
func data(x backend.Tensor) *Tensor {
	t, ok := x.(*Tensor)
	if !ok {
		panic(fmt.Sprintf("cpu: tensor of type %T is not from the CPU backend", x))
	}
	return t
}

// sameShape panics unless every tensor has the rows and columns given.
func sameShape(op string, rows, cols int, ts ...*Tensor) {
	for _, t := range ts {
		if t.rows != rows || t.cols != cols {
			panic(fmt.Sprintf("cpu: %s: tensor [%d × %d], want [%d × %d]", op, t.rows, t.cols, rows, cols))
		}
	}
}

// NewTensor implements backend.Device.
func (d *Device) NewTensor(rows, cols int) (backend.Tensor, error) {
	if rows <= 0 || cols <= 0 {
		return nil, fmt.Errorf("cpu: tensor shape [%d × %d] is not positive", rows, cols)
	}
	// On huge pages where it spans them (a prefill chunk's activations: one
	// fault per 2 MiB on first touch, not per 4 KiB).
	t := &Tensor{rows: rows, cols: cols, data: d.recycle.floats(rows * cols)}
	t.rec = &d.recycle
	return t, nil
}

// Upload implements backend.Device.
func (d *Device) Upload(dst backend.Tensor, src []float32) {
	t := data(dst)
	if len(src) != len(t.data) {
		panic(fmt.Sprintf("cpu: Upload of %d floats into a [%d × %d] tensor", len(src), t.rows, t.cols))
	}
	copy(t.data, src)
}

// Download implements backend.Device.
func (d *Device) Download(dst []float32, src backend.Tensor) error {
	t := data(src)
	if len(dst) != len(t.data) {
		panic(fmt.Sprintf("cpu: Download of a [%d × %d] tensor into %d floats", t.rows, t.cols, len(dst)))
	}
	copy(dst, t.data)
	return nil
}

// Sync implements backend.Device; every operation has completed already.
func (d *Device) Sync() error { return nil }

// NonFinite implements backend.Device. A prefill's residual stream (hundreds
// of rows, checked twice a layer) is split over the workers.
func (d *Device) NonFinite(x backend.Tensor) (int, error) {
	t := data(x)
	if !d.splitRows(t, 1) {
		return firstNonFiniteRow(t, 0, t.rows), nil
	}
	var first atomic.Int64 // the least row found
	first.Store(math.MaxInt64)
	d.pool.For(t.rows, t.cols, func(lo, hi int) {
		r := int64(firstNonFiniteRow(t, lo, hi))
		for cur := first.Load(); r >= 0 && r < cur && !first.CompareAndSwap(cur, r); cur = first.Load() {
		}
	})
	if r := first.Load(); r != math.MaxInt64 {
		return int(r), nil
	}
	return -1, nil
}

// firstNonFiniteRow is the first of the rows [lo, hi) of t that holds a NaN
// or an infinity, or -1.
func firstNonFiniteRow(t *Tensor, lo, hi int) int {
	if r := nonfinite.FirstRow(t.data[lo*t.cols:hi*t.cols], t.cols); r >= 0 {
		return lo + r
	}
	return -1
}

// matrix is a bound weight: the kernels' view of the bytes plus its descriptor.
type matrix struct {
	m    Matrix
	desc backend.MatrixDesc

	// pack is the pool that builds m's row-interleaved copy (rowpack.go) at
	// its first product, once; nil when it gets none.
	pack     *Pool
	packOnce sync.Once
}

func (m *matrix) Desc() backend.MatrixDesc { return m.desc }
func (m *matrix) Release()                 {}

// weight unwraps a bound matrix for a product: the first one builds its
// row-interleaved copy where BindDense asked for one.
func weight(w backend.Matrix) *Matrix {
	m := bound(w)
	if m.pack != nil {
		m.packOnce.Do(func() { m.m.packed = packRows(&m.m, m.pack) })
	}
	return &m.m
}

// bound unwraps a matrix of this backend without building anything (Embed
// reads rows of the original bytes).
func bound(w backend.Matrix) *matrix {
	m, ok := w.(*matrix)
	if !ok {
		panic(fmt.Sprintf("cpu: matrix of type %T is not from the CPU backend", w))
	}
	return m
}

// View returns the kernels' Matrix over the given bytes, checked.
func View(desc backend.MatrixDesc, data, scales, biases []byte) (Matrix, error) {
	if err := desc.CheckBytes(data, scales, biases); err != nil {
		return Matrix{}, err
	}
	m := Matrix{Rows: desc.Rows, Cols: desc.Cols, Format: desc.Format, Data: data}
	if desc.Format == backend.Affine {
		m.Bits, m.GroupSize, m.ScaleFormat = desc.Bits, desc.GroupSize, desc.ScaleFormat
		m.Scales, m.Biases = scales, biases
	}
	return m, nil
}

// BindDense implements backend.Device: the matrix is used in place.
func (d *Device) BindDense(desc backend.MatrixDesc, data, scales, biases []byte) (backend.Matrix, error) {
	m, err := View(desc, data, scales, biases)
	if err != nil {
		return nil, err
	}
	w := &matrix{m: m, desc: desc}
	// In int8 mode on a VNNI CPU, 2- to 8-bit matrices get a row-interleaved copy
	// (rowpack.go), a heap copy of the same size as the mapped weights that
	// the products then read instead. It is built at the first product, not
	// here, so that a table only Embed reads (an untied embedding) gets none.
	if d.pool.rowPacks() && rowPackable(&m) {
		w.pack = d.pool
	}
	return w, nil
}

// expertAlignment is the alignment of expert buffers (O_DIRECT reads).
const expertAlignment = 4096

// ExpertBuffer implements backend.Device: aligned Go memory.
func (d *Device) ExpertBuffer(size int) ([]byte, error) {
	if size < 0 {
		return nil, fmt.Errorf("cpu: expert buffer of %d bytes", size)
	}
	b := make([]byte, size+expertAlignment)
	skip := 0
	if size > 0 {
		skip = (expertAlignment - int(addr(b)%expertAlignment)) % expertAlignment
	}
	return b[skip : skip+size : skip+size], nil
}

// FreeExpertBuffer implements backend.Device; the garbage collector frees it.
func (d *Device) FreeExpertBuffer([]byte) {}

// expert is a bound routed expert: views into the caller's buffer.
// Released experts are kept on a free list of their device, so that binding
// one (K per sparse layer and token) allocates nothing.
type expert struct {
	gate, up, down Matrix
	d              *Device
	// slot is the packed copy the matrices view when the expert came from
	// the device's cache (expertcache.go); its use ends at Release.
	slot *xslot
}

func (e *expert) Release() {
	d := e.d
	if e.slot != nil {
		d.xc.release(e.slot)
	}
	*e = expert{}
	d.freeMu.Lock()
	d.free = append(d.free, e)
	d.freeMu.Unlock()
}

// newExpert takes an expert from the free list or allocates one.
func (d *Device) newExpert() *expert {
	d.freeMu.Lock()
	defer d.freeMu.Unlock()
	if n := len(d.free); n > 0 {
		e := d.free[n-1]
		d.free = d.free[:n-1]
		e.d = d
		return e
	}
	return &expert{d: d}
}

// BindExpert implements backend.Device: the matrices are used in place.
func (d *Device) BindExpert(l *backend.ExpertLayout, buf []byte) (backend.Expert, error) {
	if len(buf) < l.FileSize {
		return nil, fmt.Errorf("cpu: expert buffer of %d bytes, the layout needs %d", len(buf), l.FileSize)
	}
	var ms [3]Matrix
	for i, src := range [3]*backend.ExpertMatrix{&l.Gate, &l.Up, &l.Down} {
		data, scales, biases := src.Bytes(buf)
		m, err := View(src.Desc, data, scales, biases)
		if err != nil {
			return nil, err
		}
		ms[i] = m
	}
	e := d.newExpert()
	e.gate, e.up, e.down = ms[0], ms[1], ms[2]
	return e, nil
}

// Embed implements backend.Device.
func (d *Device) Embed(dst backend.Tensor, table backend.Matrix, ids []int) {
	t, w := data(dst), &bound(table).m
	sameShape("Embed", len(ids), w.Cols, t)
	if d.splitRows(t, 4) {
		d.pool.For(len(ids), 4*w.Cols, func(lo, hi int) { embedRows(t, w, ids, lo, hi) })
		return
	}
	embedRows(t, w, ids, 0, len(ids))
}

func embedRows(t *Tensor, w *Matrix, ids []int, lo, hi int) {
	for i := lo; i < hi; i++ {
		w.Row(t.row(i), ids[i])
	}
}

// MatMul implements backend.Device.
func (d *Device) MatMul(y backend.Tensor, w backend.Matrix, x backend.Tensor) {
	yt, m, xt := data(y), weight(w), data(x)
	sameShape("MatMul x", xt.rows, m.Cols, xt)
	sameShape("MatMul y", xt.rows, m.Rows, yt)
	d.pool.MatMul(yt.data, m, xt.data, xt.rows)
}

// Rest implements backend.Rester: the pool's idle helpers park sooner
// (Pool.Rest).
func (d *Device) Rest() { d.pool.Rest() }

// MatMuls implements backend.SharedMatMuler: one batch of products
// (matBatch), x prepared once for the weights that take it in the same form.
func (d *Device) MatMuls(ys []backend.Tensor, ws []backend.Matrix, x backend.Tensor) {
	xt := data(x)
	b := d.pool.newBatch()
	for i, w := range ws {
		yt, m := data(ys[i]), weight(w)
		sameShape("MatMuls x", xt.rows, m.Cols, xt)
		sameShape("MatMuls y", xt.rows, m.Rows, yt)
		b.add(yt.data, m, xt.data, xt.rows)
	}
	b.compute()
}

// RMSNorm implements backend.Device.
func (d *Device) RMSNorm(dst, x, w backend.Tensor, eps float64) {
	dt, xt, wt := data(dst), data(x), data(w)
	sameShape("RMSNorm", xt.rows, xt.cols, dt)
	sameShape("RMSNorm weight", 1, xt.cols, wt)
	if d.splitRows(xt, 4) {
		d.pool.For(xt.rows, 4*xt.cols, func(lo, hi int) { rmsNormRows(dt, xt, wt, eps, lo, hi) })
		return
	}
	rmsNormRows(dt, xt, wt, eps, 0, xt.rows)
}

func rmsNormRows(dt, xt, wt *Tensor, eps float64, lo, hi int) {
	for r := lo; r < hi; r++ {
		RMSNorm(dt.row(r), xt.row(r), wt.data, eps)
	}
}

// splitRows reports whether a row-wise operation on t (cost per element)
// goes over the workers: several rows and enough work. On the owner alone, a
// 512-token prefill's row-wise operations (norms, adds, the embedding's
// rows) took ~3 % of a two-core int8 prefill (docs/PERF.md, round
// fourteen). The callers make their closure only then, so that a decode
// step's single row allocates nothing.
func (d *Device) splitRows(t *Tensor, cost int) bool {
	return t.rows > 1 && t.rows*t.cols*cost >= 2*minWorkPerGoroutine && d.pool.Workers() > 1
}

// Clear implements backend.Device.
func (d *Device) Clear(x backend.Tensor) { clear(data(x).data) }

// Add implements backend.Device.
func (d *Device) Add(dst, x backend.Tensor) {
	dt, xt := data(dst), data(x)
	sameShape("Add", xt.rows, xt.cols, dt)
	if d.splitRows(xt, 1) {
		d.pool.For(xt.rows, xt.cols, func(lo, hi int) {
			Add(dt.data[lo*dt.cols:hi*dt.cols], xt.data[lo*xt.cols:hi*xt.cols])
		})
		return
	}
	Add(dt.data, xt.data)
}

// AddSigmoidScaled implements backend.Device.
func (d *Device) AddSigmoidScaled(dst, src, g backend.Tensor) {
	dt, st, gt := data(dst), data(src), data(g)
	sameShape("AddSigmoidScaled", st.rows, st.cols, dt)
	sameShape("AddSigmoidScaled gate", st.rows, 1, gt)
	if d.splitRows(st, 2) {
		d.pool.For(st.rows, 2*st.cols, func(lo, hi int) { addSigmoidScaledRows(dt, st, gt, lo, hi) })
		return
	}
	addSigmoidScaledRows(dt, st, gt, 0, st.rows)
}

func addSigmoidScaledRows(dt, st, gt *Tensor, lo, hi int) {
	for t := lo; t < hi; t++ {
		Axpy(dt.row(t), Sigmoid(gt.data[t]), st.row(t))
	}
}

// MLP implements backend.Device.
func (d *Device) MLP(y, x backend.Tensor, gate, up, down backend.Matrix) {
	yt, xt := data(y), data(x)
	g, u, dn := weight(gate), weight(up), weight(down)
	sameShape("MLP x", xt.rows, g.Cols, xt)
	sameShape("MLP y", xt.rows, dn.Rows, yt)
	d.mlp(d.pool, yt.data, xt.data, g, u, dn, xt.rows)
}

// mlp computes y = down·(silu(gate·x) ⊙ up·x) for n rows on pool p.
func (d *Device) mlp(p *Pool, y, x []float32, gate, up, down *Matrix, n int) {
	d.mlpFrom(p, y, x, nil, nil, gate, up, down, n)
}

// mlpFrom is mlp with x either as floats or, when q is not nil, as rows of
// q (quantized already: ExpertFFNs).
func (d *Device) mlpFrom(p *Pool, y, x []float32, q *quantRows, rows []int, gate, up, down *Matrix, n int) {
	I := gate.Rows
	gb, ub := d.buf.get(n*I), d.buf.get(n*I)
	defer d.buf.put(gb)
	defer d.buf.put(ub)
	g, u := *gb, *ub
	b := p.newBatch()
	if p.packedFrom(q, gate) && p.packedFrom(q, up) {
		b.addRows(g, gate, q, rows)
		b.addRows(u, up, q, rows)
	} else {
		b.add(g, gate, x, n)
		b.add(u, up, x, n)
	}
	b.compute()
	p.swiGLU(g, u)
	p.MatMul(y, down, g, n)
}

// swiGLU is SwiGLU in p's numerics: float32 throughout in int8 mode
// (swiGLU32), the exact float64 exponential otherwise.
func (p *Pool) swiGLU(g, u []float32) {
	if p.int8 {
		swiGLU32(g, u)
	} else {
		SwiGLU(g, u)
	}
}

// ExpertFFN implements backend.Device.
func (d *Device) ExpertFFN(out, x backend.Tensor, e backend.Expert, rows []int, weights []float32) {
	ot, xt := data(out), data(x)
	j := d.newJob(xt, ot, e, rows, weights)
	d.expertJob(d.pool, &j, xt, nil)
	d.finishJob(ot, &j)
}

// newJob checks one expert's arguments.
func (d *Device) newJob(xt, ot *Tensor, e backend.Expert, rows []int, weights []float32) expertJob {
	ex, ok := e.(*expert)
	if !ok {
		panic(fmt.Sprintf("cpu: expert of type %T is not from the CPU backend", e))
	}
	sameShape("ExpertFFN x", xt.rows, ex.gate.Cols, xt, ot)
	if len(rows) != len(weights) || len(rows) == 0 {
		panic(fmt.Sprintf("cpu: ExpertFFN with %d rows and %d weights", len(rows), len(weights)))
	}
	return expertJob{ex: ex, rows: rows, weights: weights}
}

// finishJob adds the job's weighted outputs to out and gives back its
// scratch.
func (d *Device) finishJob(ot *Tensor, j *expertJob) {
	addJob(ot, j, 0, ot.rows)
	d.releaseJob(j)
}

// finishJobs is finishJob for each of b's jobs in turn, with ot's rows
// split over the workers: each token's row takes its experts' weighted
// outputs in the order of the jobs, as one job after the other would add
// them, so the sums are the same bit for bit. On the owner alone, a
// 512-token prefill's sums took ~4 % of its time on two cores (docs/PERF.md,
// round fourteen).
func (d *Device) finishJobs(ot *Tensor, b *expertBatch) {
	pairs := 0
	for i := range b.jobs {
		pairs += len(b.jobs[i].rows)
	}
	b.sums = jobSums{ot: ot, jobs: b.jobs}
	d.pool.forRanger(ot.rows, max(pairs*ot.cols/ot.rows, 1), &b.sums)
	b.sums = jobSums{}
	for i := range b.jobs {
		d.releaseJob(&b.jobs[i])
	}
}

// jobSums adds the weighted outputs of jobs to the rows [lo, hi) of ot
// (finishJobs).
type jobSums struct {
	ot   *Tensor
	jobs []expertJob
}

func (s *jobSums) run(lo, hi int) {
	for i := range s.jobs {
		addJob(s.ot, &s.jobs[i], lo, hi)
	}
}

// addJob adds the job's weighted outputs for its tokens in rows [lo, hi) of
// ot to them.
func addJob(ot *Tensor, j *expertJob, lo, hi int) {
	H := j.ex.gate.Cols
	for k, r := range j.rows {
		if r >= lo && r < hi {
			Axpy(ot.row(r), j.weights[k], j.y[k*H:(k+1)*H])
		}
	}
}

// releaseJob gives back the job's scratch.
func (d *Device) releaseJob(j *expertJob) {
	for _, b := range [...]*[]float32{j.xb, j.gb, j.ub} {
		if b != nil {
			d.buf.put(b)
		}
	}
	d.buf.put(j.yb)
	*j = expertJob{}
}

// ExpertFFNs implements backend.ExpertBatcher. With fewer experts than
// workers each product is split over the workers (rows); otherwise the
// workers take whole experts from a shared counter, each expert's products
// running on one worker, so a layer pays one hand-off instead of three per
// expert. A row's product is computed by the same kernel either way, and the
// weighted sums are added in the order given, so the result does not depend
// on the split.
func (d *Device) ExpertFFNs(out, x backend.Tensor, es []backend.Expert, rows [][]int, weights [][]float32) {
	ot, xt := data(out), data(x)
	if len(rows) != len(es) || len(weights) != len(es) {
		panic(fmt.Sprintf("cpu: ExpertFFNs with %d experts, %d row lists and %d weight lists", len(es), len(rows), len(weights)))
	}
	if len(es) < d.pool.Workers() {
		d.expertsSplit(ot, xt, es, rows, weights)
		return
	}
	// Windows of a few experts per worker bound the scratch held for the
	// in-order sum (a prefill chunk routes to every expert).
	b := expertBatches.Get().(*expertBatch)
	b.d, b.xt = d, xt
	// Every token's x quantized once for all its experts' gate and up
	// products (which would each quantize it again, from a gathered float
	// copy), when they are int8 row-interleaved products.
	d.quantizeShared(b, xt, es)
	w := d.pool.Workers()
	for lo, hi := 0, 0; lo < len(es); lo = hi {
		hi = expertWindowEnd(rows, lo, w, ot.cols)
		for i := lo; i < hi; i++ {
			b.jobs = append(b.jobs, d.newJob(xt, ot, es[i], rows[i], weights[i]))
		}
		b.next.Store(0)
		d.pool.forRanger(w, minWorkPerGoroutine, b)
		d.finishJobs(ot, b)
		b.jobs = b.jobs[:0]
	}
	if b.q.xq != nil {
		d.pool.putRows(&b.q)
	}
	b.d, b.xt = nil, nil
	expertBatches.Put(b)
}

// quantizeShared quantizes xt's rows once into b.q for the int8
// row-interleaved gate and up products of es (which share one shape), and
// reports whether it did: their products then take their tokens' rows of
// b.q instead of quantizing a gathered copy each.
func (d *Device) quantizeShared(b *expertBatch, xt *Tensor, es []backend.Expert) bool {
	ex, ok := es[0].(*expert)
	if !ok || !quantizeOnce || !d.pool.packedProduct(&ex.gate) || !d.pool.packedProduct(&ex.up) || ex.gate.Cols != xt.cols {
		return false
	}
	d.pool.quantizeRows(&b.q, xt.data, xt.rows, xt.cols, ex.gate.GroupSize)
	return true
}

// expertsSplit is ExpertFFNs with fewer experts than workers: every
// product is split over the workers, in two batches (matBatch), all the
// experts' gate and up projections and then all their down projections, so
// a layer pays two hand-offs instead of two per expert, and the workers'
// shares are a whole layer's instead of one projection's. A token's x is
// prepared once for every expert that reads it (decode: one token, all the
// experts).
func (d *Device) expertsSplit(ot, xt *Tensor, es []backend.Expert, rows [][]int, weights [][]float32) {
	p := d.pool
	eb := expertBatches.Get().(*expertBatch)
	// Several tokens (a short prompt on many workers) are quantized once for
	// all their experts' int8 row-interleaved gate and up products, as in
	// the whole-experts path, instead of once per expert from a gathered
	// copy; a decode's one token is already shared as it is (the batch
	// prepares each x once).
	var q *quantRows
	if xt.rows > 1 && d.quantizeShared(eb, xt, es) {
		q = &eb.q
	}
	mb := p.newBatch()
	for i, e := range es {
		eb.jobs = append(eb.jobs, d.newJob(xt, ot, e, rows[i], weights[i]))
		j := &eb.jobs[i]
		n, I := len(j.rows), j.ex.gate.Rows
		j.gb, j.ub = d.buf.get(n*I), d.buf.get(n*I)
		if p.packedFrom(q, &j.ex.gate) && p.packedFrom(q, &j.ex.up) {
			mb.addRows(*j.gb, &j.ex.gate, q, j.rows)
			mb.addRows(*j.ub, &j.ex.up, q, j.rows)
			continue
		}
		xs := d.gather(j, xt)
		mb.add(*j.gb, &j.ex.gate, xs, n)
		mb.add(*j.ub, &j.ex.up, xs, n)
	}
	mb.compute()
	if q != nil {
		p.putRows(q)
	}
	mb = p.newBatch()
	for i := range eb.jobs {
		j := &eb.jobs[i]
		n, H := len(j.rows), j.ex.gate.Cols
		p.swiGLU(*j.gb, *j.ub)
		j.yb = d.buf.get(n * H)
		j.y = *j.yb
		mb.add(j.y, &j.ex.down, *j.gb, n)
	}
	mb.compute()
	d.finishJobs(ot, eb)
	eb.jobs = eb.jobs[:0]
	expertBatches.Put(eb)
}

// expertWindow is how many experts per worker ExpertFFNs computes at least
// before it adds their outputs (a decode step's K = 8 experts on 2 workers
// is one window).
const expertWindow = 4

// expertWindowBytes is how much the outputs of a window's experts may hold
// before ExpertFFNs adds them. Why more than expertWindow per worker: the
// end of a window is a barrier, where the workers wait for the last expert
// to finish (on two workers, half an expert's time on average). A 512-token
// prefill chunk of Qwen3-30B-A3B gives its 128 experts 32 ± 6 tokens: 16
// windows a layer of 4 experts per worker, 2 windows of 16 MiB (its 33.5 MB
// of outputs; docs/PERF.md, round fifteen). A variable so that a test can
// make windows small.
var expertWindowBytes = 16 << 20

// expertWindowEnd is the end of the window of experts that starts at lo
// (rows[i]: expert i's tokens, outputs of cols floats): expertWindow per
// worker, then more while their outputs stay within expertWindowBytes.
func expertWindowEnd(rows [][]int, lo, workers, cols int) int {
	hi, held := lo, 0
	for ; hi < len(rows); hi++ {
		b := 4 * len(rows[hi]) * cols
		if hi >= lo+expertWindow*workers && held+b > expertWindowBytes {
			break
		}
		held += b
	}
	return hi
}

// expertBatch is one ExpertFFNs call's work list, recycled so that a call
// allocates nothing; each worker's part takes experts from next until none
// is left.
type expertBatch struct {
	d    *Device
	xt   *Tensor
	q    quantRows // xt quantized (q.xq nil: not)
	jobs []expertJob
	next atomic.Int64
	sums jobSums // finishJobs' work, kept here so that it allocates nothing
}

// quantized is b.q when it holds x quantized, else nil.
func (b *expertBatch) quantized() *quantRows {
	if b.q.xq == nil {
		return nil
	}
	return &b.q
}

// quantizeOnce turns ExpertFFNs' shared quantization of x on
// (TestExpertFFNsQuantizeOnce turns it off for its reference).
var quantizeOnce = true

var expertBatches = sync.Pool{New: func() any { return new(expertBatch) }}

func (b *expertBatch) run(int, int) {
	for i := b.next.Add(1) - 1; i < int64(len(b.jobs)); i = b.next.Add(1) - 1 {
		b.d.expertJob(b.d.serial, &b.jobs[i], b.xt, b.quantized())
	}
}

// expertJob is one expert of ExpertFFNs: its rows and, once computed, the
// unweighted outputs y [len(rows) × H].
type expertJob struct {
	ex      *expert
	rows    []int
	weights []float32
	y       []float32
	xb, yb  *[]float32
	gb, ub  *[]float32 // gate and up outputs (expertsSplit)
}

// expertJob computes j.y on pool p, from q's rows when q holds xt
// quantized for the expert's products.
func (d *Device) expertJob(p *Pool, j *expertJob, xt *Tensor, q *quantRows) {
	H, n := j.ex.gate.Cols, len(j.rows)
	j.yb = d.buf.get(n * H)
	j.y = *j.yb
	if p.packedFrom(q, &j.ex.gate) && p.packedFrom(q, &j.ex.up) {
		d.mlpFrom(p, j.y, nil, q, j.rows, &j.ex.gate, &j.ex.up, &j.ex.down, n)
		return
	}
	d.mlp(p, j.y, d.gather(j, xt), &j.ex.gate, &j.ex.up, &j.ex.down, n)
}

// gather returns the job's tokens' x: the row itself for one token, else a
// copy of the rows in j.xb.
func (d *Device) gather(j *expertJob, xt *Tensor) []float32 {
	if len(j.rows) == 1 {
		return xt.row(j.rows[0])
	}
	H := xt.cols
	j.xb = d.buf.get(len(j.rows) * H)
	xs := *j.xb
	for i, r := range j.rows {
		copy(xs[i*H:(i+1)*H], xt.row(r))
	}
	return xs
}

// state is the CPU's backend.State.
type state struct {
	specs  []backend.LayerSpec
	layers []layerState
	// kvCap is how many positions every attention layer's cache has room
	// for: the caches are carved from arena (kvcache.go), which Release
	// gives to rec, the device's recycler.
	kvCap int
	arena []float32
	rec   *recycler
}

type layerState struct {
	// Attention: keys after QK-norm and RoPE, and values, each
	// [KVHeads, state.kvCap, HeadDim] (kvcache.go); kvLen positions hold
	// data.
	k, v  []float32
	kvLen int
	// GatedDeltaNet: the last ConvKernel−1 pre-conv inputs, oldest first,
	// [ConvKernel−1, Channels]; the recurrent state S_j of each value head,
	// [ValueHeads, KeyDim, ValueDim].
	conv, rec []float32
}

// NewState implements backend.Device.
func (d *Device) NewState(specs []backend.LayerSpec) (backend.State, error) {
	s := &state{specs: specs, layers: make([]layerState, len(specs)), rec: &d.recycle}
	for i, sp := range specs {
		if p := sp.DeltaNet; p != nil {
			s.layers[i].conv = make([]float32, (p.ConvKernel-1)*p.Channels())
			s.layers[i].rec = make([]float32, p.ValueHeads*p.KeyDim*p.ValueDim)
		}
	}
	return s, nil
}

func (s *state) Reset() {
	for i := range s.layers {
		l := &s.layers[i]
		l.kvLen = 0
		clear(l.conv)
		clear(l.rec)
	}
}

func (s *state) Clone() (backend.State, error) {
	c := &state{specs: s.specs, layers: make([]layerState, len(s.layers)), rec: s.rec}
	held := 0
	for i, l := range s.layers {
		c.layers[i] = layerState{conv: clone(l.conv), rec: clone(l.rec)}
		held = max(held, l.kvLen)
	}
	// Room for exactly the positions held, so that a snapshot's Bytes is
	// what it needs.
	c.moveKV(s, held)
	return c, nil
}

func clone(x []float32) []float32 {
	if x == nil {
		return nil
	}
	return append(make([]float32, 0, len(x)), x...)
}

func (s *state) Bytes() int64 {
	var n int64
	for _, l := range s.layers {
		n += int64(len(l.k)+len(l.v)+len(l.conv)+len(l.rec)) * 4
	}
	return n
}

// Release implements backend.State: the KV caches go to the device's
// recycler (recycle.go).
func (s *state) Release() {
	s.rec.put(s.arena)
	s.arena = nil
	for i := range s.layers {
		s.layers[i].k, s.layers[i].v, s.layers[i].kvLen = nil, nil, 0
	}
	s.kvCap = 0
}

// layer returns layer i's state, checking that the state came from this
// backend and that the layer has the kind of state the operation needs.
func layerOf(st backend.State, i int, attention bool) *layerState {
	s := stateOf(st)
	if i < 0 || i >= len(s.layers) || (attention && s.specs[i].Attention == nil) || (!attention && s.specs[i].DeltaNet == nil) {
		panic(fmt.Sprintf("cpu: layer %d of the state has no %s state", i, map[bool]string{true: "attention", false: "delta-net"}[attention]))
	}
	return &s.layers[i]
}

func addr(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }
