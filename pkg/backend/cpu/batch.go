package cpu

import (
	"slices"
	"sync"
)

// A matBatch is several products run as one range of work: the pool's
// workers take their parts of all of them in one hand-off instead of one
// hand-off per product. Products that read the same x in the same form
// share one preparation of it (quantization, permutation, layouts), so an
// attention layer's q, k and v, or all of a token's experts' gate and up
// projections, lay out their x once.
//
// A product's rows come out of the same kernel, with the same x, as from
// MatMul, so a batch's results are MatMul's bit for bit whatever the split.
//
// Concurrency: a batch is built and run by one goroutine; the pool's
// workers only run its parts. Adding to a batch prepares x at once (on the
// calling goroutine) and keeps its scratch until compute returns.
type matBatch struct {
	p     *Pool
	tasks []*matTask
	srcs  []xSource
	// ends[i] is the work (multiply-adds) of tasks[:i+1]; parts the number
	// of equal shares of it the workers take
	ends  []int
	parts int
}

// xSource is where a task's x came from, to find products that can share
// its preparation.
type xSource struct {
	x    []float32  // float x, or nil
	q    *quantRows // else quantized rows of q
	rows []int
}

func (s xSource) same(o xSource) bool {
	if s.q != nil || o.q != nil {
		return s.q == o.q && slices.Equal(s.rows, o.rows)
	}
	return len(s.x) == len(o.x) && len(s.x) > 0 && &s.x[0] == &o.x[0]
}

// sameForm reports whether a product with a and one with b prepare the
// same x identically: every choice prepare makes depends on these fields.
func sameForm(a, b *Matrix) bool {
	if a.Format != b.Format || a.Cols != b.Cols || a.GroupSize != b.GroupSize || a.Bits != b.Bits ||
		a.ScaleFormat != b.ScaleFormat || (a.packed == nil) != (b.packed == nil) {
		return false
	}
	return a.packed == nil || a.packed.bits == b.packed.bits
}

var matBatches = sync.Pool{New: func() any { return new(matBatch) }}

// newBatch returns an empty batch on p (recycled: compute gives it back).
func (p *Pool) newBatch() *matBatch {
	b := matBatches.Get().(*matBatch)
	b.p = p
	return b
}

// add puts y = m·x for n tokens (x [n, Cols], y [n, Rows]) in the batch.
func (b *matBatch) add(y []float32, m *Matrix, x []float32, n int) {
	t := b.task(y, m, n, xSource{x: x[:n*m.Cols]})
	if t.body == nil {
		t.x = x[:n*m.Cols]
		b.p.prepare(t)
	}
}

// addRows puts y = m·x in the batch where token k of x is row rows[k] of
// q, already quantized: m must have a packed product that q fits
// (packedFrom).
func (b *matBatch) addRows(y []float32, m *Matrix, q *quantRows, rows []int) {
	t := b.task(y, m, len(rows), xSource{q: q, rows: rows})
	if t.body == nil {
		b.p.prepPackedRows(t, q, rows)
		t.packedBody()
	}
}

// task adds a task for y = m·(n tokens of src) and returns it; it is
// prepared already (body set) when an earlier task of the batch reads the
// same x in the same form.
func (b *matBatch) task(y []float32, m *Matrix, n int, src xSource) *matTask {
	t := matTasks.Get().(*matTask)
	*t = matTask{p: b.p, y: y[:n*m.Rows], m: m, n: n, level: b.p.level}
	for i, o := range b.tasks {
		if o.n != n || !sameForm(o.m, m) || !b.srcs[i].same(src) {
			continue
		}
		// The scratch stays o's: it outlives t, as both run before
		// compute releases it.
		*t = *o
		t.m, t.y = m, y[:n*m.Rows]
		t.held, t.nHeld = [len(t.held)]*[]float32{}, 0
		t.units = m.Rows
		if b.p.packedProduct(m) {
			t.units = t.packedUnits()
		}
		break
	}
	b.tasks = append(b.tasks, t)
	b.srcs = append(b.srcs, src)
	return t
}

// compute runs the batch's products and recycles it.
func (b *matBatch) compute() {
	total, units := 0, 0
	for _, t := range b.tasks {
		total += t.units * max(t.cost, 1)
		units += t.units
		b.ends = append(b.ends, total)
	}
	b.parts = min(b.p.Workers(), max(total/minWorkPerGoroutine, 1), max(units, 1))
	b.p.forRanger(b.parts, minWorkPerGoroutine, b)
	for i, t := range b.tasks {
		t.release()
		*t = matTask{}
		matTasks.Put(t)
		b.tasks[i] = nil
		b.srcs[i] = xSource{}
	}
	b.tasks, b.srcs, b.ends = b.tasks[:0], b.srcs[:0], b.ends[:0]
	b.p = nil
	matBatches.Put(b)
}

// run runs the parts [lo, hi) of the batch's work: part i is the work
// [i·W/parts, (i+1)·W/parts) of the whole W, and a task's unit belongs to
// the part where its work begins.
func (b *matBatch) run(lo, hi int) {
	total := b.ends[len(b.ends)-1]
	ws, we := lo*total/b.parts, hi*total/b.parts
	start := 0
	for i, t := range b.tasks {
		end := b.ends[i]
		if end > ws && start < we {
			c := max(t.cost, 1)
			u0 := min(max(ws-start+c-1, 0)/c, t.units)
			u1 := min(max(we-start+c-1, 0)/c, t.units)
			if u0 < u1 {
				t.body(t, u0, u1)
			}
		}
		start = end
	}
}

// MatMulShared computes ys[i] = ms[i]·x for n tokens, for matrices that
// read the same x (ys[i] is [n, ms[i].Rows]), as one batch: x is prepared
// once for the matrices that take it in the same form, and the workers
// take all the products' rows in one hand-off. Concurrency: as MatMul.
func (p *Pool) MatMulShared(ys [][]float32, ms []*Matrix, x []float32, n int) {
	if len(ms) == 1 {
		p.MatMul(ys[0], ms[0], x, n)
		return
	}
	b := p.newBatch()
	for i, m := range ms {
		b.add(ys[i], m, x, n)
	}
	b.compute()
}

// packedFrom reports whether m's int8 product can take x as rows of q
// (addRows): m has a packed product on p and q is what it would quantize.
func (p *Pool) packedFrom(q *quantRows, m *Matrix) bool {
	return q != nil && q.fits(p, m) && p.packedProduct(m)
}
