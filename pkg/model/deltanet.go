package model

import (
	"math"

	"github.com/fm-moe/fm/pkg/backend/cpu"
)

// deltaNet is the GatedDeltaNet mixer (reference-math.md §3.2): projections,
// causal depthwise conv with cached state + SiLU, L2-normalized q/k, decay and
// beta gates, the delta rule (token by token for short inputs, the chunked
// form of deltarule.go for prefills of at least deltaChunk tokens), the gated
// RMSNorm with z, and out_proj. x holds T normed rows; out receives T rows.
func (m *Model) deltaNet(l *layer, ls *layerState, ws *workspace, x, out []float32, T int) {
	c := &m.cfg
	nk, nv := c.LinearNumKeyHeads, c.LinearNumValueHeads
	dk, dv, kc := c.LinearKeyHeadDim, c.LinearValueHeadDim, c.LinearConvKernelDim
	cc, kd, vd := m.cc, m.kd, m.vd
	qkv := grow(&ws.qkv, T*cc)
	z := grow(&ws.z, T*vd)
	b := grow(&ws.b, T*nv)
	a := grow(&ws.a, T*nv)
	m.pool.MatMul(qkv, &l.qkv, x, T)
	m.pool.MatMul(z, &l.z, x, T)
	m.pool.MatMul(b, &l.b, x, T)
	m.pool.MatMul(a, &l.a, x, T)

	// Causal conv over the sequence, continuing from the cached inputs; the
	// output u replaces qkv row by row once the row has entered the state.
	u := make([]float32, cc)
	state := ls.conv
	for t := 0; t < T; t++ {
		xt := qkv[t*cc : (t+1)*cc]
		m.pool.For(cc, kc, func(lo, hi int) {
			for ch := lo; ch < hi; ch++ {
				w := l.conv[ch*kc : (ch+1)*kc]
				var acc float32
				for j := 0; j < kc-1; j++ {
					acc += w[j] * state[j*cc+ch]
				}
				acc += w[kc-1] * xt[ch]
				u[ch] = cpu.SiLU(acc)
			}
		})
		if kc > 1 {
			copy(state, state[cc:])
			copy(state[(kc-2)*cc:], xt)
		}
		copy(xt, u)
		// q̂ = q/‖q‖·dk^−½ and k̂ = k/‖k‖ per key head (eps on the sum).
		qScale := float32(1 / math.Sqrt(float64(dk)))
		for i := 0; i < nk; i++ {
			cpu.L2Normalize(xt[i*dk:(i+1)*dk], 1e-6, qScale)
			cpu.L2Normalize(xt[kd+i*dk:kd+(i+1)*dk], 1e-6, 1)
		}
	}

	core := grow(&ws.core, T*vd)
	r := nv / nk
	if T >= deltaChunk {
		m.deltaNetChunked(l, ls, qkv, b, a, z, core, T)
		m.pool.MatMul(out, &l.out, core, T)
		return
	}
	m.pool.For(nv, T*dk*dv*4, func(lo, hi int) {
		mem := make([]float32, dv)
		delta := make([]float32, dv)
		for j := lo; j < hi; j++ {
			i := j / r // value head j reads key head j/r (grouped, not tiled)
			S := ls.rec[j*dk*dv : (j+1)*dk*dv]
			for t := 0; t < T; t++ {
				row := qkv[t*cc : (t+1)*cc]
				q := row[i*dk : (i+1)*dk]
				k := row[kd+i*dk : kd+(i+1)*dk]
				v := row[2*kd+j*dv : 2*kd+(j+1)*dv]
				beta := cpu.Sigmoid(b[t*nv+j])
				g := l.negA[j] * cpu.Softplus(a[t*nv+j]+l.dtBias[j])
				alpha := float32(math.Exp(float64(g)))
				// Decay, then read the memory at k: mem = (αS)ᵀk.
				clear(mem)
				for rr := 0; rr < dk; rr++ {
					cpu.DecayRead(S[rr*dv:(rr+1)*dv], mem, alpha, k[rr])
				}
				for cI := range delta {
					delta[cI] = (v[cI] - mem[cI]) * beta
				}
				// Delta-rule update S += k δᵀ, then read out o = Sᵀq.
				o := core[t*vd+j*dv : t*vd+(j+1)*dv]
				clear(o)
				for rr := 0; rr < dk; rr++ {
					cpu.UpdateRead(S[rr*dv:(rr+1)*dv], delta, o, k[rr], q[rr])
				}
				cpu.RMSNormGated(o, z[t*vd+j*dv:t*vd+(j+1)*dv], l.gatedNorm, c.RMSNormEps)
			}
		}
	})
	m.pool.MatMul(out, &l.out, core, T)
}
