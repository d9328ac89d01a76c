package model

import "github.com/fm-moe/fm/pkg/backend"

// attention is the full-attention mixer (reference-math.md §3.4): q/k/v
// projections, then the device's attention core (per-head q/k RMSNorm,
// partial NeoX RoPE, KV-cache append, causal GQA softmax attention, the
// optional sigmoid output gate), then o_proj. It reads x.xn and writes x.mix.
func (m *Model) attention(l *layer, st *State, x *tensors) {
	d := m.dev
	x.proj = [4]backend.Tensor{x.qp, x.kp, x.vp}
	m.inputProjections(l, x, x.proj[:3])
	d.Attention(x.attn, x.qp, x.kp, x.vp, st.st, l.index, st.pos, l.attn)
	d.MatMul(x.mix, l.o, x.attn)
}

// deltaNet is the GatedDeltaNet mixer (reference-math.md §3.2): the qkv, z, b
// and a projections, then the device's recurrent core (causal conv + SiLU,
// L2-normed q/k, decay and beta gates, the delta rule, the gated RMSNorm with
// z), then out_proj. It reads x.xn and writes x.mix.
func (m *Model) deltaNet(l *layer, st *State, x *tensors) {
	d := m.dev
	x.proj = [4]backend.Tensor{x.qkv, x.z, x.b, x.a}
	m.inputProjections(l, x, x.proj[:])
	d.DeltaNet(x.core, x.qkv, x.z, x.b, x.a, st.st, l.index, l.dn)
	d.MatMul(x.mix, l.out, x.core)
}

// inputProjections computes ys[i] = l.inProj[i]·x.xn: in one MatMuls call
// where the device has it (backend.SharedMatMuler), else one MatMul each.
func (m *Model) inputProjections(l *layer, x *tensors, ys []backend.Tensor) {
	if s, ok := m.dev.(backend.SharedMatMuler); ok {
		s.MatMuls(ys, l.inProj, x.xn)
		return
	}
	for i, w := range l.inProj {
		m.dev.MatMul(ys[i], w, x.xn)
	}
}
