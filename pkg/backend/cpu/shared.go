package cpu

import "sync"

// maxShared is the most matrices one MatMulShared call takes (an attention
// layer's q, k and v; a delta-net layer's four input projections).
const maxShared = 4

// MatMulShared computes ys[i] = ms[i]·x for n tokens, for matrices that
// read the same x (y[i] is [n, ms[i].Rows]). Where every matrix has an int8
// row-interleaved copy with the same columns and group size, x is quantized
// once and the workers take the matrices' row blocks as one range, so three
// short products become one stream with one hand-off; otherwise it is
// MatMul per matrix. Concurrency: as MatMul.
func (p *Pool) MatMulShared(ys [][]float32, ms []*Matrix, x []float32, n int) {
	if !p.sharable(ms) {
		for i, m := range ms {
			p.MatMul(ys[i], m, x, n)
		}
		return
	}
	sh := p.sharedTask(ys, ms, n)
	t0 := &sh.tasks[0]
	t0.x = x[:n*ms[0].Cols]
	p.prepPacked(t0, p.wideQuant(ms[0].GroupSize))
	p.runShared(sh, ys, ms, n)
}

// matMulSharedRows is MatMulShared (for sharable ms) on x already
// quantized: token k is row rows[k] of q.
func (p *Pool) matMulSharedRows(ys [][]float32, ms []*Matrix, q *quantRows, rows []int) {
	n := len(rows)
	sh := p.sharedTask(ys, ms, n)
	p.prepPackedRows(&sh.tasks[0], q, rows)
	p.runShared(sh, ys, ms, n)
}

// sharedTask returns a recycled sharedTask for ms with its first task set
// up but for x.
func (p *Pool) sharedTask(ys [][]float32, ms []*Matrix, n int) *sharedTask {
	sh := sharedTasks.Get().(*sharedTask)
	sh.k = len(ms)
	sh.tasks[0] = matTask{p: p, y: ys[0][:n*ms[0].Rows], m: ms[0], n: n, level: p.level}
	return sh
}

// runShared runs sh once its first task's x is prepared: every matrix's
// rows as one range of work units, then recycles sh.
func (p *Pool) runShared(sh *sharedTask, ys [][]float32, ms []*Matrix, n int) {
	t0 := &sh.tasks[0]
	m0 := ms[0]
	t0.body = (*matTask).int8Packed
	sh.starts[0] = 0
	for i, m := range ms {
		if i > 0 {
			t := &sh.tasks[i]
			*t = *t0
			t.m, t.y = m, ys[i][:n*m.Rows]
			t.qBuf, t.fBuf, t.x8Buf, t.s8Buf = nil, nil, nil, nil // t0 owns them
		}
		sh.starts[i+1] = sh.starts[i] + sh.tasks[i].packedUnits()
	}
	p.forRanger(sh.starts[sh.k], rowPackRows*m0.Cols*n, sh)
	t0.putPacked(p)
	*sh = sharedTask{}
	sharedTasks.Put(sh)
}

// sharable reports whether MatMulShared can run ms as one product.
func (p *Pool) sharable(ms []*Matrix) bool {
	if !p.rowPacks() || len(ms) < 2 || len(ms) > maxShared {
		return false
	}
	for _, m := range ms {
		if m.packed == nil || m.Cols != ms[0].Cols || m.GroupSize != ms[0].GroupSize {
			return false
		}
	}
	return true
}

// sharedTask is one MatMulShared call: the matrices' tasks (sharing the
// quantized x of the first) and where each one's units start in the range.
type sharedTask struct {
	tasks  [maxShared]matTask
	starts [maxShared + 1]int
	k      int
}

var sharedTasks = sync.Pool{New: func() any { return new(sharedTask) }}

func (sh *sharedTask) run(lo, hi int) {
	for i := 0; i < sh.k; i++ {
		s, e := sh.starts[i], sh.starts[i+1]
		if a, b := max(lo, s), min(hi, e); a < b {
			sh.tasks[i].int8Packed(a-s, b-s)
		}
	}
}
