package refmodel

import (
	"fmt"
)

// Model is a loaded checkpoint, ready for Forward.
type Model struct {
	Config *Config

	embed     matrix // [V, H]
	head      matrix // [V, H] (embed when tied)
	finalNorm []float64
	layers    []layer
}

type layer struct {
	inNorm, postNorm []float64

	// Full attention.
	q, k, v, o   matrix
	qNorm, kNorm []float64

	// GatedDeltaNet. Qwen3-Next keeps the interleaved qkvz/ba projections
	// (split per token in forward, as HF does); Qwen3.5 has the four plain ones.
	qkvz, ba      matrix
	qkv, z, b, a  matrix
	conv          [][]float64 // [C][K]
	aLog, dtBias  []float64
	gatedNorm     []float64
	out           matrix
	interleavedLA bool

	// Feed-forward.
	router     matrix
	experts    []expert
	shared     *expert
	sharedGate []float64
	dense      *expert
}

// expert is one SwiGLU block: down · (silu(gate·x) ⊙ (up·x)).
type expert struct{ gate, up, down matrix }

// Load reads config.json and every weight the forward pass needs from an HF
// or MLX checkpoint directory.
func Load(dir string) (*Model, error) {
	cfg, err := ReadConfig(dir)
	if err != nil {
		return nil, err
	}
	src, err := openSource(dir, cfg)
	if err != nil {
		return nil, err
	}
	defer src.close()
	m := &Model{Config: cfg}
	if err := m.load(src); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Model) load(s *source) error {
	c := m.Config
	H := c.Hidden
	var err error
	if m.embed, err = s.matrix(s.text+"embed_tokens", c.Vocab, H); err != nil {
		return err
	}
	m.head = m.embed
	if !c.Tied {
		if m.head, err = s.matrix(s.head, c.Vocab, H); err != nil {
			return err
		}
	}
	// Zero-centred norms: HF stores w and means 1+w; mlx-lm stores 1+w
	// (reference-math.md §2.5 item 3). Either way we keep the multiplier.
	zeroCentred := c.Family != Qwen3MoE
	norm := func(name string, n int, centred bool) ([]float64, error) {
		v, err := s.vector(name, n)
		if err != nil {
			return nil, err
		}
		if centred && !s.mlx {
			for i := range v {
				v[i] += 1
			}
		}
		return v, nil
	}
	if m.finalNorm, err = norm(s.text+"norm.weight", H, zeroCentred); err != nil {
		return err
	}
	m.layers = make([]layer, c.Layers)
	for i := range m.layers {
		if err := m.loadLayer(s, i, norm, zeroCentred); err != nil {
			return fmt.Errorf("layer %d: %w", i, err)
		}
	}
	return nil
}

func (m *Model) loadLayer(s *source, i int, norm func(string, int, bool) ([]float64, error), zeroCentred bool) error {
	c := m.Config
	H := c.Hidden
	L := &m.layers[i]
	p := fmt.Sprintf("%slayers.%d.", s.text, i)
	var err error
	if L.inNorm, err = norm(p+"input_layernorm.weight", H, zeroCentred); err != nil {
		return err
	}
	if L.postNorm, err = norm(p+"post_attention_layernorm.weight", H, zeroCentred); err != nil {
		return err
	}
	load := func(dst *matrix, name string, rows, cols int) {
		if err == nil {
			*dst, err = s.matrix(name, rows, cols)
		}
	}
	if c.Linear[i] {
		nk, nv, dk, dv := c.LinearKeyHeads, c.LinearValueHeads, c.LinearKeyDim, c.LinearValueDim
		Kd, Vd := nk*dk, nv*dv
		Cc := 2*Kd + Vd
		a := p + "linear_attn."
		if s.has(a + "in_proj_qkvz.weight") {
			L.interleavedLA = true
			load(&L.qkvz, a+"in_proj_qkvz", 2*Kd+2*Vd, H)
			load(&L.ba, a+"in_proj_ba", 2*nv, H)
		} else {
			load(&L.qkv, a+"in_proj_qkv", Cc, H)
			load(&L.z, a+"in_proj_z", Vd, H)
			load(&L.b, a+"in_proj_b", nv, H)
			load(&L.a, a+"in_proj_a", nv, H)
		}
		load(&L.out, a+"out_proj", H, Vd)
		if err != nil {
			return err
		}
		// conv1d is [C, 1, K] in HF and [C, K, 1] in MLX: the same bytes.
		w, err := s.vector(a+"conv1d.weight", Cc*c.ConvKernel)
		if err != nil {
			return err
		}
		L.conv = make([][]float64, Cc)
		for ch := range L.conv {
			L.conv[ch] = w[ch*c.ConvKernel : (ch+1)*c.ConvKernel]
		}
		if L.aLog, err = s.vector(a+"A_log", nv); err != nil {
			return err
		}
		if L.dtBias, err = s.vector(a+"dt_bias", nv); err != nil {
			return err
		}
		if L.gatedNorm, err = norm(a+"norm.weight", dv, false); err != nil {
			return err
		}
	} else {
		D := c.HeadDim
		qRows := c.Heads * D
		if c.Family != Qwen3MoE {
			qRows *= 2 // per-head [query | gate]
		}
		a := p + "self_attn."
		load(&L.q, a+"q_proj", qRows, H)
		load(&L.k, a+"k_proj", c.KVHeads*D, H)
		load(&L.v, a+"v_proj", c.KVHeads*D, H)
		load(&L.o, a+"o_proj", H, c.Heads*D)
		if err != nil {
			return err
		}
		if L.qNorm, err = norm(a+"q_norm.weight", D, zeroCentred); err != nil {
			return err
		}
		if L.kNorm, err = norm(a+"k_norm.weight", D, zeroCentred); err != nil {
			return err
		}
	}

	mp := p + "mlp."
	if !c.Sparse[i] {
		L.dense = &expert{}
		load(&L.dense.gate, mp+"gate_proj", c.DenseInter, H)
		load(&L.dense.up, mp+"up_proj", c.DenseInter, H)
		load(&L.dense.down, mp+"down_proj", H, c.DenseInter)
		return err
	}
	E, I := c.Experts, c.MoEInter
	load(&L.router, mp+"gate", E, H)
	if err != nil {
		return err
	}
	L.experts = make([]expert, E)
	switch {
	case s.has(mp + "experts.gate_up_proj"):
		// HF fused: gate_up_proj [E, 2I, H] with the gate rows first.
		gu, err := s.stack(mp+"experts.gate_up_proj", E, 2*I, H)
		if err != nil {
			return err
		}
		down, err := s.stack(mp+"experts.down_proj", E, H, I)
		if err != nil {
			return err
		}
		for e := range L.experts {
			L.experts[e] = expert{
				gate: matrix{I, H, gu[e].w[:I*H]},
				up:   matrix{I, H, gu[e].w[I*H:]},
				down: down[e],
			}
		}
	case s.has(mp + "switch_mlp.gate_proj.weight"):
		// MLX: stacked [E, I, H], [E, I, H], [E, H, I].
		gate, err := s.stack(mp+"switch_mlp.gate_proj", E, I, H)
		if err != nil {
			return err
		}
		up, err := s.stack(mp+"switch_mlp.up_proj", E, I, H)
		if err != nil {
			return err
		}
		down, err := s.stack(mp+"switch_mlp.down_proj", E, H, I)
		if err != nil {
			return err
		}
		for e := range L.experts {
			L.experts[e] = expert{gate[e], up[e], down[e]}
		}
	default:
		for e := range L.experts {
			ep := fmt.Sprintf("%sexperts.%d.", mp, e)
			load(&L.experts[e].gate, ep+"gate_proj", I, H)
			load(&L.experts[e].up, ep+"up_proj", I, H)
			load(&L.experts[e].down, ep+"down_proj", H, I)
		}
		if err != nil {
			return err
		}
	}
	if c.Family != Qwen3MoE {
		L.shared = &expert{}
		load(&L.shared.gate, mp+"shared_expert.gate_proj", c.SharedInter, H)
		load(&L.shared.up, mp+"shared_expert.up_proj", c.SharedInter, H)
		load(&L.shared.down, mp+"shared_expert.down_proj", H, c.SharedInter)
		var sg matrix
		load(&sg, mp+"shared_expert_gate", 1, H)
		if err != nil {
			return err
		}
		L.sharedGate = make([]float64, H)
		for j, v := range sg.w {
			L.sharedGate[j] = float64(v)
		}
	}
	return nil
}
