package cpu

import (
	"fmt"
	"math"
	"sync"

	"github.com/fm-moe/fm/pkg/backend"
)

// Attention implements backend.Device (reference-math.md §3.4): per-head q/k
// RMSNorm, partial NeoX RoPE, the KV-cache append, then attendCausal.
func (d *Device) Attention(out, q, k, v backend.Tensor, st backend.State, layer, pos int, p *backend.AttentionParams) {
	ot, qt, kt, vt := data(out), data(q), data(k), data(v)
	s, ls := stateOf(st), layerOf(st, layer, true)
	nH, nKV, D := p.Heads, p.KVHeads, p.HeadDim
	T, kvDim, attnDim := qt.rows, nKV*D, nH*D
	qStride := D // q_proj columns per head: [q_h | gate_h] when gated
	if p.Gated {
		qStride = 2 * D
	}
	sameShape("Attention q", T, nH*qStride, qt)
	sameShape("Attention k/v", T, kvDim, kt, vt)
	sameShape("Attention out", T, attnDim, ot)
	if have := ls.kvLen; have != pos {
		panic(fmt.Sprintf("cpu: Attention at position %d, the layer %d cache holds %d", pos, layer, have))
	}
	qNorm, kNorm := data(p.QNorm).data, data(p.KNorm).data

	qb, gb := d.buf.get(T*attnDim), d.buf.get(T*attnDim)
	defer d.buf.put(qb)
	defer d.buf.put(gb)
	qs, gate := *qb, *gb
	a := attnPrep{qt: qt, kt: kt, qs: qs, gate: gate, qNorm: qNorm, kNorm: kNorm, p: p, pos: pos, qStride: qStride}
	if p.RotaryDim > 0 {
		a.rope = d.rope(p.RotaryDim, p.RopeTheta)
	}
	// A prefill's tokens are split over the workers (one thread did 512
	// tokens × 36 heads of a Qwen3-30B-A3B layer while the others waited); a
	// decode step's one token stays on this thread, allocating nothing.
	if T == 1 {
		a.run(0, 1)
	} else {
		pa := new(attnPrep)
		*pa = a
		d.pool.forRanger(T, 8*(nH+nKV)*D, pa)
	}
	s.reserveKV(pos + T)
	ls.appendKV(kt.data, vt.data, T, s.kvCap, nKV, D)
	if !p.Gated {
		gate = nil
	}
	d.attendCausal(ot.data, qs, gate, kvView{ls.k, ls.v, s.kvCap * D, D}, nH, nKV, D, T, pos)
}

// Block sizes of the blocked attention. A unit of work is queryBlock tokens ×
// the heads of one KV group; it meets the keys keyBlock at a time, so the
// block's keys (and later its values) stay in L1 while every query row of the
// unit uses them.
const (
	queryBlock = 16
	keyBlock   = 64
	// scoreBlock is the key block of the untransposed Q·K loop: 32 keys
	// (16 KB of float32 at head_dim 128) stay in L1 while the unit's query
	// rows meet them.
	// A multiple of 4, so the keys go through DotRows4 in the same fours as
	// in one pass.
	scoreBlock = 32
	// scoreBlockFrom is the cache length from which the Q·K loop goes by key
	// blocks: below it the blocks measured 4 % slower (BenchmarkAttendDecode at
	// 256 positions), from 1024 positions on 1.03–1.12× faster.
	scoreBlockFrom = 512
	// Prefills of at least this many tokens transpose the key cache once per
	// call (cost n·kvDim) so that scores come from the weighted-row-sum kernel;
	// shorter ones (decode) use four-key dot products on the cache as it is.
	transposeMinTokens = 8
)

// kvView says where a layer's cached keys and values are: key s of KV head g
// is k[g·head+s·pos : g·head+s·pos+D], its value the same range of v. The
// cache keeps each KV head's positions together (head = capacity·D, pos = D,
// layerState); the tests also pass caches as [positions, KVHeads·D] (head =
// D, pos = KVHeads·D).
type kvView struct {
	k, v      []float32
	head, pos int
}

// attendCausal computes o = softmax(q·kᵀ/√D, causal)·v per head, then the
// sigmoid output gate when gate is not nil, for T query rows at positions
// pos0…pos0+T−1 against the cache kv (pos0+T positions).
//
// Each query row gets its full score vector, then the two-pass softmax
// (max subtracted, float32 exp, float64 sum), then Σ p·v over the keys in
// order; this is the per-(token, head) loop it replaced, reorganized for the
// caches, and agrees with it to float32 rounding (TestAttendCausalMatchesNaive).
func (d *Device) attendCausal(o, q, gate []float32, kv kvView, nH, nKV, D, T, pos0 int) {
	keys := kv.k
	scale := float32(1 / math.Sqrt(float64(D)))
	group := nH / nKV
	n := pos0 + T
	kBlocks := (n + keyBlock - 1) / keyBlock
	pool := d.pool

	// keysT[g][b] is key block b of KV head g as [D × keyBlock]: a query's
	// scores for the block are Σ_d q[d]·keysT[g][b][d], whole vectors of keys
	// at a time, with no horizontal sums.
	// From the scratch buffers: a fresh allocation per call (a 512-token
	// chunk: 1 MB a layer) faulted its pages in each time.
	var keysT []float32
	if T >= transposeMinTokens {
		kb := d.buf.get(nKV * kBlocks * D * keyBlock)
		defer d.buf.put(kb)
		keysT = *kb
		pool.For(nKV*kBlocks, D*keyBlock, func(lo, hi int) {
			for gb := lo; gb < hi; gb++ {
				g, b := gb/kBlocks, gb%kBlocks
				dst := keysT[gb*D*keyBlock : (gb+1)*D*keyBlock]
				if (b+1)*keyBlock > n {
					clear(dst) // scored whole: finite lanes past the cache (discarded)
				}
				for j := 0; j < keyBlock && b*keyBlock+j < n; j++ {
					s := b*keyBlock + j
					for dd, v := range keys[g*kv.head+s*kv.pos:][:D] {
						dst[dd*keyBlock+j] = v
					}
				}
			}
		})
	}

	qBlocks := (T + queryBlock - 1) / queryBlock
	rows := min(T, queryBlock) * group
	split := decodeSplit(T, nKV, group, pool.Workers())
	rows /= split
	// The causal mask makes late query blocks costlier; units are visited
	// early, late, early, late… so that the contiguous ranges pool.For hands
	// out carry similar work.
	t := attnTasks.Get().(*attnTask)
	*t = attnTask{d: d, o: o, q: q, gate: gate, kv: kv, keysT: keysT,
		nH: nH, nKV: nKV, D: D, T: T, pos0: pos0, kBlocks: kBlocks, qBlocks: qBlocks, rows: rows, scale: scale, split: split}
	pool.forRanger(qBlocks*nKV*split, rows*n*D*2, t)
	*t = attnTask{}
	attnTasks.Put(t)
}

// decodeSplit is how many units a decode step (T = 1) gives each KV head:
// one unit per KV head leaves all but nKV workers idle while the heads read
// the cache (4 of 16 for Qwen3-30B-A3B, 2 for Qwen3.5-397B), so with more
// workers than KV heads a head's query heads are split into parts of a
// multiple of four rows. Every row is computed as in a whole unit (the same
// kernels, four heads at a time, the same key blocks), so the split changes
// which worker computes a row, never its bits; each part reads the head's
// keys and values once more, from the cache the other parts share.
func decodeSplit(T, nKV, group, workers int) int {
	if T != 1 || group%4 != 0 || workers <= nKV {
		return 1
	}
	split := min(group/4, (workers+nKV-1)/nKV)
	for group%(4*split) != 0 { // equal parts of whole fours
		split--
	}
	return split
}

// attnTask is attendCausal's loop body over a range of work units (a query
// block × one KV group), recycled rather than a closure so that a decode step
// allocates nothing; its score rows come from the device's scratch buffers.
type attnTask struct {
	d                                     *Device
	o, q, gate, keysT                     []float32
	kv                                    kvView
	nH, nKV, D, T, pos0, kBlocks, qBlocks int
	rows                                  int
	split                                 int // units per KV head of a decode step (decodeSplit)
	scale                                 float32
}

var attnTasks = sync.Pool{New: func() any { return new(attnTask) }}

// unitBlock is the query block of unit u. The causal mask makes late query
// blocks costlier; units are visited early, late, early, late… so that the
// contiguous ranges the pool hands out carry similar work.
func (t *attnTask) unitBlock(u int) int {
	i := u / t.nKV
	if i%2 == 0 {
		return i / 2
	}
	return t.qBlocks - 1 - i/2
}

// attnUnit is one unit of attnTask's work: KV head g's query heads for the
// tokens t0… of a query block, nRows = tokens × group rows. Row r is token
// t0 + r/group of head g·group + r%group, and sees keys 0…span(r)−1. Rows
// r…r+3 with r a multiple of 4 share their token when the group is a
// multiple of 4 (Qwen3-30B-A3B: 8, Qwen3.5-397B: 16): the kernels then take
// four heads at once, loading each key and value row once for the four. A
// decode step split into parts (decodeSplit) gives a unit the rows r0… of
// its head's group (r0 a multiple of 4), and row r above means r0 + r.
type attnUnit struct {
	g, t0, r0, nRows int
}

// head is where row r's query (in q) and output (in o) are.
func (t *attnTask) head(u attnUnit, r int) (lo, hi int) {
	group := t.nH / t.nKV
	r += u.r0
	tok, h := u.t0+r/group, u.g*group+r%group
	return (tok*t.nH + h) * t.D, (tok*t.nH + h + 1) * t.D
}

// span is how many keys row r sees.
func (t *attnTask) span(u attnUnit, r int) int {
	return t.pos0 + u.t0 + (u.r0+r)/(t.nH/t.nKV) + 1
}

// fours is how many of u's rows go four at a time.
func (t *attnTask) fours(u attnUnit) int {
	if (t.nH/t.nKV)%4 != 0 {
		return 0
	}
	return u.nRows &^ 3
}

func (t *attnTask) run(lo, hi int) {
	n := t.pos0 + t.T
	sb, qsb := t.d.buf.get(t.rows*n), t.d.buf.get(t.rows*t.D)
	defer t.d.buf.put(sb)
	defer t.d.buf.put(qsb)
	scores, qs := *sb, *qsb
	group := t.nH / t.nKV
	for i := lo; i < hi; i++ {
		var u attnUnit
		if t.split > 1 { // a decode step: one token, qBlocks = 1
			u = attnUnit{g: i / t.split, r0: i % t.split * t.rows, nRows: t.rows}
		} else {
			qb := t.unitBlock(i)
			t0, t1 := qb*queryBlock, min((qb+1)*queryBlock, t.T)
			u = attnUnit{g: i % t.nKV, t0: t0, nRows: (t1 - t0) * group}
		}
		for r := 0; r < u.nRows; r++ {
			lo, hi := t.head(u, r)
			qr := qs[r*t.D : (r+1)*t.D]
			copy(qr, t.q[lo:hi])
			scaleF32SIMD(qr, t.scale)
		}
		if t.keysT != nil {
			t.scoresTransposed(u, scores, qs)
		} else {
			t.scoresDirect(u, scores, qs)
		}
		for r := 0; r < u.nRows; r++ {
			lo, hi := t.head(u, r)
			SoftmaxF32(scores[r*n : r*n+t.span(u, r)])
			clear(t.o[lo:hi])
		}
		t.sumValues(u, scores)
		if t.gate != nil {
			for r := 0; r < u.nRows; r++ {
				lo, hi := t.head(u, r)
				oh, gh := t.o[lo:hi], t.gate[lo:hi]
				for i := range oh {
					oh[i] *= Sigmoid(gh[i])
				}
			}
		}
	}
}

// scoresTransposed sets the unit's score rows (n = pos0+T apart) from the
// transposed keys, Σ_d q[d]·keysT[d][block], a 64-key block at a time. A
// row's last, partial block is scored whole into part (the transposed block
// is zero past the cache) and its keys copied out: the kernels take whole
// blocks, and the partial widths went through one axpy per d (a third of a
// 512-token prefill's attention). WeightedRowSumHeads4's sums are
// WeightedRowSum's bit for bit.
func (t *attnTask) scoresTransposed(u attnUnit, scores, qs []float32) {
	D, n := t.D, t.pos0+t.T
	block := func(b int) []float32 { return t.keysT[(u.g*t.kBlocks+b)*D*keyBlock:] }
	var part [4 * keyBlock]float32
	r := 0
	for ; r < t.fours(u); r += 4 {
		sp := t.span(u, r)
		for b := 0; b*keyBlock < sp; b++ {
			k0, k1 := b*keyBlock, min((b+1)*keyBlock, sp)
			if k1-k0 == keyBlock {
				for h := 0; h < 4; h++ {
					clear(scores[(r+h)*n+k0 : (r+h)*n+k1])
				}
				WeightedRowSumHeads4(scores[r*n+k0:], n, qs[r*D:], D, D, block(b), keyBlock, keyBlock)
				continue
			}
			clear(part[:])
			WeightedRowSumHeads4(part[:], keyBlock, qs[r*D:], D, D, block(b), keyBlock, keyBlock)
			for h := 0; h < 4; h++ {
				copy(scores[(r+h)*n+k0:(r+h)*n+k1], part[h*keyBlock:])
			}
		}
	}
	for ; r < u.nRows; r++ {
		sc := scores[r*n : r*n+t.span(u, r)]
		for b := 0; b*keyBlock < len(sc); b++ {
			k0, k1 := b*keyBlock, min((b+1)*keyBlock, len(sc))
			blk := sc[k0:k1]
			if k1-k0 < keyBlock {
				blk = part[:keyBlock]
			}
			clear(blk)
			WeightedRowSum(blk, qs[r*D:(r+1)*D], block(b), keyBlock)
			if k1-k0 < keyBlock {
				copy(sc[k0:k1], blk)
			}
		}
	}
}

// scoresDirect sets the unit's score rows from the keys as cached, key block
// by key block, every row of the unit meeting a block while it is in L1 (a
// decode step's group of query heads then reads the keys from L2 once, not
// once per head).
func (t *attnTask) scoresDirect(u attnUnit, scores, qs []float32) {
	D, n, stride := t.D, t.pos0+t.T, t.kv.pos
	kg := t.kv.k[u.g*t.kv.head:]
	maxSpan := t.span(u, u.nRows-1)
	blk := maxSpan // short caches (in L2 anyway): one pass per row
	if maxSpan >= scoreBlockFrom {
		blk = scoreBlock
	}
	var four [4]float32
	var sixteen [16]float32
	for k0 := 0; k0 < maxSpan; k0 += blk {
		r := 0
		for ; r < t.fours(u); r += 4 {
			k1 := min(k0+blk, t.span(u, r))
			s := k0
			for ; s+4 <= k1; s += 4 {
				DotHeads4(qs[r*D:], D, kg[s*stride:], stride, D, &sixteen)
				for h := 0; h < 4; h++ {
					copy(scores[(r+h)*n+s:(r+h)*n+s+4], sixteen[4*h:4*h+4])
				}
			}
			for h := 0; h < 4; h++ {
				q, sc := qs[(r+h)*D:(r+h+1)*D], scores[(r+h)*n:]
				for ss := s; ss < k1; ss++ {
					sc[ss] = Dot(q, kg[ss*stride:ss*stride+D])
				}
			}
		}
		for ; r < u.nRows; r++ {
			k1 := min(k0+blk, t.span(u, r))
			q, sc := qs[r*D:(r+1)*D], scores[r*n:]
			s := k0
			for ; s+4 <= k1; s += 4 {
				DotRows4(q, kg[s*stride:], stride, &four)
				copy(sc[s:s+4], four[:])
			}
			for ; s < k1; s++ {
				sc[s] = Dot(q, kg[s*stride:s*stride+D])
			}
		}
	}
}

// sumValues adds Σ p·v to the unit's outputs (cleared by the caller), key
// block by key block, so that a block of values serves every row.
func (t *attnTask) sumValues(u attnUnit, scores []float32) {
	D, n, stride := t.D, t.pos0+t.T, t.kv.pos
	vg := t.kv.v[u.g*t.kv.head:]
	maxSpan := t.span(u, u.nRows-1)
	for k0 := 0; k0 < maxSpan; k0 += keyBlock {
		r := 0
		for ; r < t.fours(u); r += 4 {
			// Four heads of a token: outputs D apart, scores n apart.
			if k1 := min(k0+keyBlock, t.span(u, r)); k1 > k0 {
				lo, _ := t.head(u, r)
				WeightedRowSumHeads4(t.o[lo:], D, scores[r*n+k0:], n, k1-k0, vg[k0*stride:], stride, D)
			}
		}
		for ; r < u.nRows; r++ {
			if k1 := min(k0+keyBlock, t.span(u, r)); k1 > k0 {
				lo, hi := t.head(u, r)
				WeightedRowSum(t.o[lo:hi], scores[r*n+k0:r*n+k1], vg[k0*stride:], stride)
			}
		}
	}
}

// attnPrep is Attention's per-token preparation: per-head q/k RMSNorm and
// RoPE, q heads (and their gates) gathered into qs and gate, k normed in
// place.
type attnPrep struct {
	qt, kt                 *Tensor
	qs, gate, qNorm, kNorm []float32
	rope                   *Rope
	p                      *backend.AttentionParams
	pos, qStride           int
}

func (a *attnPrep) run(t0, t1 int) {
	p, D := a.p, a.p.HeadDim
	attnDim := p.Heads * D
	var cosBuf, sinBuf [128]float32
	var cos, sin []float32
	if a.rope != nil {
		if half := p.RotaryDim / 2; half <= len(cosBuf) {
			cos, sin = cosBuf[:half], sinBuf[:half]
		} else {
			cos, sin = make([]float32, half), make([]float32, half)
		}
	}
	for t := t0; t < t1; t++ {
		if a.rope != nil {
			a.rope.Tables(cos, sin, a.pos+t)
		}
		qrow := a.qt.row(t)
		for h := 0; h < p.Heads; h++ {
			src := qrow[h*a.qStride:]
			qh := a.qs[t*attnDim+h*D : t*attnDim+(h+1)*D]
			RMSNorm(qh, src[:D], a.qNorm, p.Eps)
			if a.rope != nil {
				a.rope.Apply(qh, cos, sin)
			}
			if p.Gated {
				copy(a.gate[t*attnDim+h*D:t*attnDim+(h+1)*D], src[D:2*D])
			}
		}
		krow := a.kt.row(t)
		for g := 0; g < p.KVHeads; g++ {
			kg := krow[g*D : (g+1)*D]
			RMSNorm(kg, kg, a.kNorm, p.Eps)
			if a.rope != nil {
				a.rope.Apply(kg, cos, sin)
			}
		}
	}
}
