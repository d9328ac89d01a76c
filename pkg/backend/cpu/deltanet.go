package cpu

import (
	"fmt"
	"math"
	"sync"

	"github.com/fm-moe/fm/pkg/backend"
)

// DeltaNet implements backend.Device (reference-math.md §3.2): the causal
// depthwise conv with cached state + SiLU, L2-normalized q/k, decay and beta
// gates, the delta rule (token by token for short inputs, the chunked form of
// deltarule.go for prefills of at least deltaChunk tokens), and the gated
// RMSNorm with z.
func (d *Device) DeltaNet(out, qkv, z, b, a backend.Tensor, st backend.State, layer int, p *backend.DeltaNetParams) {
	ot, xt, zt, bt, at := data(out), data(qkv), data(z), data(b), data(a)
	ls := layerOf(st, layer, false)
	nk, nv := p.KeyHeads, p.ValueHeads
	dk, dv, kc := p.KeyDim, p.ValueDim, p.ConvKernel
	kd, vd, cc := nk*dk, nv*dv, p.Channels()
	T := xt.rows
	sameShape("DeltaNet qkv", T, cc, xt)
	sameShape("DeltaNet z/out", T, vd, zt, ot)
	sameShape("DeltaNet b/a", T, nv, bt, at)
	if nk <= 0 || nv%nk != 0 {
		panic(fmt.Sprintf("cpu: DeltaNet with %d value heads over %d key heads", nv, nk))
	}
	conv, negA, dtBias, norm := data(p.Conv).data, data(p.NegA).data, data(p.DtBias).data, data(p.Norm).data
	sameShape("DeltaNet conv", cc, kc, data(p.Conv))

	// Causal conv over the sequence, continuing from the cached inputs; the
	// output u replaces qkv row by row once the row has entered the state.
	ub := d.buf.get(cc)
	defer d.buf.put(ub)
	u := *ub
	state := ls.conv
	ct := convTasks.Get().(*convTask)
	*ct = convTask{conv: conv, state: state, u: u, cc: cc, kc: kc}
	defer func() { *ct = convTask{}; convTasks.Put(ct) }()
	for t := 0; t < T; t++ {
		x := xt.row(t)
		ct.x = x
		d.pool.forRanger(cc, kc, ct)
		if kc > 1 {
			copy(state, state[cc:])
			copy(state[(kc-2)*cc:], x)
		}
		copy(x, u)
		// q̂ = q/‖q‖·dk^−½ and k̂ = k/‖k‖ per key head (eps on the sum).
		qScale := float32(1 / math.Sqrt(float64(dk)))
		for i := 0; i < nk; i++ {
			L2Normalize(x[i*dk:(i+1)*dk], 1e-6, qScale)
			L2Normalize(x[kd+i*dk:kd+(i+1)*dk], 1e-6, 1)
		}
	}

	qkvs, bs, as, zs, core := xt.data, bt.data, at.data, zt.data, ot.data
	if T >= deltaChunk {
		d.deltaNetChunked(p, ls, qkvs, bs, as, zs, core, negA, dtBias, norm, T)
		return
	}
	rt := recurTasks.Get().(*recurTask)
	*rt = recurTask{d: d, p: p, ls: ls, qkvs: qkvs, bs: bs, as: as, zs: zs, core: core, negA: negA, dtBias: dtBias, norm: norm, T: T}
	d.pool.forRanger(nv, T*dk*dv*4, rt)
	*rt = recurTask{}
	recurTasks.Put(rt)
}

// convTask is the causal conv of one token over a range of channels: the
// loop body DeltaNet hands its pool, recycled rather than a closure so that a
// decode step allocates nothing.
type convTask struct {
	conv, state, x, u []float32
	cc, kc            int
}

var convTasks = sync.Pool{New: func() any { return new(convTask) }}

func (c *convTask) run(lo, hi int) {
	conv, state, x, u, cc, kc := c.conv, c.state, c.x, c.u, c.cc, c.kc
	for ch := lo; ch < hi; ch++ {
		w := conv[ch*kc : (ch+1)*kc]
		var acc float32
		for j := 0; j < kc-1; j++ {
			acc += w[j] * state[j*cc+ch]
		}
		acc += w[kc-1] * x[ch]
		u[ch] = SiLU(acc)
	}
}

// recurTask is the token-by-token delta rule over a range of value heads,
// recycled like convTask.
type recurTask struct {
	d                                          *Device
	p                                          *backend.DeltaNetParams
	ls                                         *layerState
	qkvs, bs, as, zs, core, negA, dtBias, norm []float32
	T                                          int
}

var recurTasks = sync.Pool{New: func() any { return new(recurTask) }}

func (rt *recurTask) run(lo, hi int) {
	d, p, ls, T := rt.d, rt.p, rt.ls, rt.T
	qkvs, bs, as, zs, core, negA, dtBias, norm := rt.qkvs, rt.bs, rt.as, rt.zs, rt.core, rt.negA, rt.dtBias, rt.norm
	nk, nv := p.KeyHeads, p.ValueHeads
	dk, dv := p.KeyDim, p.ValueDim
	cc, kd, vd := p.Channels(), nk*dk, nv*dv
	r := nv / nk
	mb, db := d.buf.get(dv), d.buf.get(dv)
	defer d.buf.put(mb)
	defer d.buf.put(db)
	mem, delta := (*mb)[:dv], (*db)[:dv]
	for j := lo; j < hi; j++ {
		i := j / r // value head j reads key head j/r (grouped, not tiled)
		S := ls.rec[j*dk*dv : (j+1)*dk*dv]
		for t := 0; t < T; t++ {
			row := qkvs[t*cc : (t+1)*cc]
			q := row[i*dk : (i+1)*dk]
			k := row[kd+i*dk : kd+(i+1)*dk]
			v := row[2*kd+j*dv : 2*kd+(j+1)*dv]
			beta := Sigmoid(bs[t*nv+j])
			g := negA[j] * Softplus(as[t*nv+j]+dtBias[j])
			alpha := float32(math.Exp(float64(g)))
			// Decay, then read the memory at k: mem = (αS)ᵀk.
			clear(mem)
			for rr := 0; rr < dk; rr++ {
				DecayRead(S[rr*dv:(rr+1)*dv], mem, alpha, k[rr])
			}
			for cI := range delta {
				delta[cI] = (v[cI] - mem[cI]) * beta
			}
			// Delta-rule update S += k δᵀ, then read out o = Sᵀq.
			o := core[t*vd+j*dv : t*vd+(j+1)*dv]
			clear(o)
			for rr := 0; rr < dk; rr++ {
				UpdateRead(S[rr*dv:(rr+1)*dv], delta, o, k[rr], q[rr])
			}
			RMSNormGated(o, zs[t*vd+j*dv:t*vd+(j+1)*dv], norm, p.Eps)
		}
	}
}

// deltaNetChunked runs the delta rule of a GatedDeltaNet layer over T tokens
// with chunkedDeltaRule, one value head per work item: it gathers the head's
// q̂, k̂, v, β and g from the conv output (qkv, rows of cc) and the b, a
// projections, updates the head's state in ls.rec, and writes the gated-normed
// output rows into core (rows of vd).
func (d *Device) deltaNetChunked(p *backend.DeltaNetParams, ls *layerState, qkv, b, a, z, core, negA, dtBias, norm []float32, T int) {
	nk, nv := p.KeyHeads, p.ValueHeads
	dk, dv := p.KeyDim, p.ValueDim
	cc, kd, vd := p.Channels(), nk*dk, nv*dv
	r := nv / nk
	d.pool.For(nv, T*dk*dv*4, func(lo, hi int) {
		h := &deltaHead{dk: dk, dv: dv, q: make([]float32, T*dk), k: make([]float32, T*dk), v: make([]float32, T*dv),
			beta: make([]float32, T), g: make([]float32, T)}
		o := make([]float32, T*dv)
		for j := lo; j < hi; j++ {
			i := j / r // value head j reads key head j/r (grouped, not tiled)
			for t := 0; t < T; t++ {
				row := qkv[t*cc : (t+1)*cc]
				copy(h.q[t*dk:(t+1)*dk], row[i*dk:(i+1)*dk])
				copy(h.k[t*dk:(t+1)*dk], row[kd+i*dk:kd+(i+1)*dk])
				copy(h.v[t*dv:(t+1)*dv], row[2*kd+j*dv:2*kd+(j+1)*dv])
				h.beta[t] = Sigmoid(b[t*nv+j])
				h.g[t] = negA[j] * Softplus(a[t*nv+j]+dtBias[j])
			}
			chunkedDeltaRule(ls.rec[j*dk*dv:(j+1)*dk*dv], h, o)
			for t := 0; t < T; t++ {
				ot := core[t*vd+j*dv : t*vd+(j+1)*dv]
				copy(ot, o[t*dv:(t+1)*dv])
				RMSNormGated(ot, z[t*vd+j*dv:t*vd+(j+1)*dv], norm, p.Eps)
			}
		}
	})
}
