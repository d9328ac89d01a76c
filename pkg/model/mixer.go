package model

// attention is the full-attention mixer (reference-math.md §3.4): q/k/v
// projections, then the device's attention core (per-head q/k RMSNorm,
// partial NeoX RoPE, KV-cache append, causal GQA softmax attention, the
// optional sigmoid output gate), then o_proj. It reads x.xn and writes x.mix.
func (m *Model) attention(l *layer, st *State, x *tensors) {
	d := m.dev
	d.MatMul(x.qp, l.q, x.xn)
	d.MatMul(x.kp, l.k, x.xn)
	d.MatMul(x.vp, l.v, x.xn)
	d.Attention(x.attn, x.qp, x.kp, x.vp, st.st, l.index, st.pos, l.attn)
	d.MatMul(x.mix, l.o, x.attn)
}

// deltaNet is the GatedDeltaNet mixer (reference-math.md §3.2): the qkv, z, b
// and a projections, then the device's recurrent core (causal conv + SiLU,
// L2-normed q/k, decay and beta gates, the delta rule, the gated RMSNorm with
// z), then out_proj. It reads x.xn and writes x.mix.
func (m *Model) deltaNet(l *layer, st *State, x *tensors) {
	d := m.dev
	d.MatMul(x.qkv, l.qkv, x.xn)
	d.MatMul(x.z, l.z, x.xn)
	d.MatMul(x.b, l.b, x.xn)
	d.MatMul(x.a, l.a, x.xn)
	d.DeltaNet(x.core, x.qkv, x.z, x.b, x.a, st.st, l.index, l.dn)
	d.MatMul(x.mix, l.out, x.core)
}
