package model

import (
	"math"

	"github.com/fm-moe/fm/pkg/backend/cpu"
)

// attention is the full-attention mixer (reference-math.md §3.4): q/k/v
// projections, per-head q/k RMSNorm, partial NeoX RoPE, causal GQA softmax
// attention over the KV cache, the optional per-head sigmoid output gate, o_proj.
// x holds T normed rows at positions pos0…pos0+T−1; out receives T rows.
func (m *Model) attention(l *layer, ls *layerState, ws *workspace, x, out []float32, T, pos0 int) {
	c := &m.cfg
	nH, nKV, D := c.NumAttentionHeads, c.NumKeyValueHeads, c.HeadDim
	kvDim, attnDim := m.kvDim, m.attnDim
	qp := grow(&ws.qp, T*m.qRows)
	kp := grow(&ws.kp, T*kvDim)
	vp := grow(&ws.vp, T*kvDim)
	m.pool.MatMul(qp, &l.q, x, T)
	m.pool.MatMul(kp, &l.k, x, T)
	m.pool.MatMul(vp, &l.v, x, T)

	q := grow(&ws.attn, T*attnDim)
	gate := grow(&ws.gate, T*attnDim)
	half := m.rope.Dim / 2
	cos, sin := make([]float32, half), make([]float32, half)
	qStride := D // q_proj rows per head: [q_h | gate_h] when gated
	if c.AttnOutputGate {
		qStride = 2 * D
	}
	for t := 0; t < T; t++ {
		m.rope.Tables(cos, sin, pos0+t)
		for h := 0; h < nH; h++ {
			src := qp[t*m.qRows+h*qStride:]
			qh := q[t*attnDim+h*D : t*attnDim+(h+1)*D]
			cpu.RMSNorm(qh, src[:D], l.qNorm, c.RMSNormEps)
			m.rope.Apply(qh, cos, sin)
			if c.AttnOutputGate {
				copy(gate[t*attnDim+h*D:t*attnDim+(h+1)*D], src[D:2*D])
			}
		}
		for g := 0; g < nKV; g++ {
			kg := kp[t*kvDim+g*D : t*kvDim+(g+1)*D]
			cpu.RMSNorm(kg, kg, l.kNorm, c.RMSNormEps)
			m.rope.Apply(kg, cos, sin)
		}
	}
	ls.k = append(ls.k, kp...)
	ls.v = append(ls.v, vp...)

	o := grow(&ws.core, T*attnDim)
	scale := float32(1 / math.Sqrt(float64(D)))
	group := nH / nKV
	keys, vals := ls.k, ls.v
	n := pos0 + T
	m.pool.For(T*nH, n*D*2, func(lo, hi int) {
		scores := make([]float32, n)
		for idx := lo; idx < hi; idx++ {
			t, h := idx/nH, idx%nH
			g := h / group
			span := pos0 + t + 1 // causal: positions 0…pos0+t
			qh := q[t*attnDim+h*D : t*attnDim+(h+1)*D]
			sc := scores[:span]
			for s := range sc {
				sc[s] = cpu.Dot(qh, keys[s*kvDim+g*D:s*kvDim+(g+1)*D]) * scale
			}
			cpu.Softmax(sc)
			oh := o[t*attnDim+h*D : t*attnDim+(h+1)*D]
			clear(oh)
			for s, p := range sc {
				cpu.Axpy(oh, p, vals[s*kvDim+g*D:s*kvDim+(g+1)*D])
			}
			if c.AttnOutputGate {
				gh := gate[t*attnDim+h*D : t*attnDim+(h+1)*D]
				for i := range oh {
					oh[i] *= cpu.Sigmoid(gh[i])
				}
			}
		}
	})
	m.pool.MatMul(out, &l.o, o, T)
}
