package synth

import (
	"fmt"
	"github.com/fm-moe/fm/pkg/internal/half"
	"math"
	"math/rand/v2"
)

// tensor is one generated parameter, named relative to the text tower
// ("embed_tokens.weight", "layers.3.mlp.gate.weight"; "lm_head.weight" and
// "mtp.*" are top-level). Values are already rounded to bf16.
type tensor struct {
	name  string
	shape []int64
	data  []float32
	kind  kind
}

type kind int

const (
	kindLinear kind = iota
	kindEmbed
	kindRouter
	kindCentredNorm // zero-centred RMSNorm weight (used as 1+w)
	kindPlainNorm   // plain RMSNorm weight
	kindALog
	kindDtBias
	kindConv
	kindOther // mtp / vision: never read by inference
)

// generator draws parameters from one deterministic stream.
type generator struct{ rng *rand.Rand }

func (g *generator) fill(k kind, shape []int64, keepF32 bool) []float32 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	v := make([]float32, n)
	in := float64(shape[len(shape)-1])
	for i := range v {
		var x float64
		switch k {
		case kindLinear, kindOther:
			x = g.uniform() / math.Sqrt(in)
		case kindRouter:
			// Wide router logits make routing decisive, so a float32
			// runtime picks the reference's experts.
			x = 2 * g.uniform() / math.Sqrt(in)
		case kindEmbed:
			x = 0.5 * g.rng.NormFloat64()
		case kindCentredNorm:
			x = g.rng.Float64() - 0.5
		case kindPlainNorm:
			x = 0.5 + g.rng.Float64()
		case kindALog:
			// log(U(1, 16)): decays spread over (0, 1) without all vanishing.
			x = math.Log(1 + 15*g.rng.Float64())
		case kindDtBias:
			x = 2*g.rng.Float64() - 0.5
		case kindConv:
			x = 0.5 * g.rng.NormFloat64()
		}
		v[i] = float32(x)
		if !keepF32 {
			v[i] = half.BF16ToF32(half.F32ToBF16(v[i]))
		}
	}
	return v
}

// tensors generates every parameter of the spec in checkpoint order, experts
// per expert (the writers fuse or stack them).
func (s *Spec) tensors() []tensor {
	g := &generator{rand.New(rand.NewPCG(s.Seed, 0x73796e7468))}
	var out []tensor
	add := func(k kind, name string, shape ...int64) {
		out = append(out, tensor{name, shape, g.fill(k, shape, s.F32Params && k.small()), k})
	}
	H, V := int64(s.Hidden), int64(s.Vocab)
	normKind := kindPlainNorm
	if s.hybrid() {
		normKind = kindCentredNorm
	}
	add(kindEmbed, "embed_tokens.weight", V, H)
	for i := 0; i < s.Layers; i++ {
		p := fmt.Sprintf("layers.%d.", i)
		add(normKind, p+"input_layernorm.weight", H)
		add(normKind, p+"post_attention_layernorm.weight", H)
		if s.linear(i) {
			s.linearAttention(add, p+"linear_attn.")
		} else {
			D := int64(s.HeadDim)
			qRows := int64(s.Heads) * D
			if s.hybrid() {
				qRows *= 2
			}
			a := p + "self_attn."
			add(kindLinear, a+"q_proj.weight", qRows, H)
			add(kindLinear, a+"k_proj.weight", int64(s.KVHeads)*D, H)
			add(kindLinear, a+"v_proj.weight", int64(s.KVHeads)*D, H)
			add(kindLinear, a+"o_proj.weight", H, int64(s.Heads)*D)
			add(normKind, a+"q_norm.weight", D)
			add(normKind, a+"k_norm.weight", D)
		}
		m := p + "mlp."
		if !s.sparse(i) {
			I := int64(s.DenseInter)
			add(kindLinear, m+"gate_proj.weight", I, H)
			add(kindLinear, m+"up_proj.weight", I, H)
			add(kindLinear, m+"down_proj.weight", H, I)
			continue
		}
		add(kindRouter, m+"gate.weight", int64(s.Experts), H)
		I := int64(s.MoEInter)
		for e := 0; e < s.Experts; e++ {
			ep := fmt.Sprintf("%sexperts.%d.", m, e)
			add(kindLinear, ep+"gate_proj.weight", I, H)
			add(kindLinear, ep+"up_proj.weight", I, H)
			add(kindLinear, ep+"down_proj.weight", H, I)
		}
		if s.hybrid() {
			Is := int64(s.SharedInter)
			add(kindLinear, m+"shared_expert.gate_proj.weight", Is, H)
			add(kindLinear, m+"shared_expert.up_proj.weight", Is, H)
			add(kindLinear, m+"shared_expert.down_proj.weight", H, Is)
			add(kindLinear, m+"shared_expert_gate.weight", 1, H)
		}
	}
	add(normKind, "norm.weight", H)
	if !s.Tied {
		add(kindLinear, "lm_head.weight", V, H)
	}
	if s.MTP {
		add(kindOther, "mtp.fc.weight", H, 2*H)
		add(kindOther, "mtp.norm.weight", H)
		add(kindOther, "mtp.pre_fc_norm_embedding.weight", H)
		add(kindOther, "mtp.pre_fc_norm_hidden.weight", H)
		add(kindOther, "mtp.layers.0.input_layernorm.weight", H)
	}
	if s.Vision {
		add(kindOther, "visual.patch_embed.proj.weight", 32, 3, 2, 16, 16)
		add(kindOther, "visual.blocks.0.attn.qkv.weight", 96, 32)
		add(kindOther, "visual.blocks.0.attn.qkv.bias", 96)
		add(kindOther, "visual.merger.linear_fc2.weight", H, 128)
	}
	return out
}

func (s *Spec) linearAttention(add func(kind, string, ...int64), a string) {
	H := int64(s.Hidden)
	nk, nv := int64(s.LinearKeyHeads), int64(s.LinearValueHeads)
	dk, dv := int64(s.LinearKeyDim), int64(s.LinearValueDim)
	Kd, Vd := nk*dk, nv*dv
	Cc := 2*Kd + Vd
	if s.family() == Qwen3Next {
		add(kindLinear, a+"in_proj_qkvz.weight", 2*Kd+2*Vd, H)
		add(kindLinear, a+"in_proj_ba.weight", 2*nv, H)
	} else {
		add(kindLinear, a+"in_proj_qkv.weight", Cc, H)
		add(kindLinear, a+"in_proj_z.weight", Vd, H)
		add(kindLinear, a+"in_proj_b.weight", nv, H)
		add(kindLinear, a+"in_proj_a.weight", nv, H)
	}
	add(kindConv, a+"conv1d.weight", Cc, 1, int64(s.convKernel()))
	add(kindDtBias, a+"dt_bias", nv)
	add(kindALog, a+"A_log", nv)
	add(kindPlainNorm, a+"norm.weight", dv)
	add(kindLinear, a+"out_proj.weight", H, Vd)
}

// small reports whether F32Params stores parameters of this kind as F32.
func (k kind) small() bool {
	return k == kindCentredNorm || k == kindPlainNorm || k == kindALog || k == kindDtBias
}

// uniform draws from U(−√3, √3): mean 0, variance 1, cheaper than a normal
// (the bulk of every checkpoint is drawn from it).
func (g *generator) uniform() float64 { return (2*g.rng.Float64() - 1) * math.Sqrt(3) }
