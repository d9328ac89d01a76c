package model

import (
	"fmt"
	"math"

	"github.com/fm-moe/fm/pkg/backend/cpu"
	"github.com/fm-moe/fm/pkg/layout"
)

// Options tune a Model without changing its definition, except ExpertsPerToken.
type Options struct {
	// ExpertsPerToken lowers the router's K below the config's
	// num_experts_per_tok (0 keeps the config's value). Any other value changes
	// the model's output; it exists for speed studies.
	ExpertsPerToken int
	// Workers is the number of goroutines kernels split rows over (0: GOMAXPROCS).
	Workers int
	// PrefillChunk is the most tokens one batched step processes (0: 128).
	PrefillChunk int
	// ExpertBatch is the most expert files being read or held at once, which
	// bounds the expert buffers (0: 32, at least K).
	ExpertBatch int
	// OnRoute, when set, is called after each sparse layer's routing with the
	// experts chosen for each of the step's tokens, in token order: ids[t] holds
	// token t's K expert ids. It records routing traces (cache-policy studies);
	// ids must not be retained.
	OnRoute func(layer int, ids [][]int)
}

// Model is a loaded architecture ready to run.
type Model struct {
	cfg     layout.Config
	opts    Options
	pool    *cpu.Pool
	experts Experts

	k         int // active experts per token
	embed     cpu.Matrix
	lmHead    cpu.Matrix
	finalNorm []float32
	layers    []*layer
	rope      *cpu.Rope

	expertGate, expertUp, expertDown *matrixTemplate
	expertFileSize                   int64

	// Derived dimensions.
	qRows, kvDim, attnDim int // full attention: q_proj rows, nKV·D, nH·D
	kd, vd, cc, r         int // delta net: nk·dk, nv·dv, conv channels, value heads per key head
}

type layerKind uint8

const (
	fullAttention layerKind = iota
	linearAttention
)

type layer struct {
	index             int
	kind              layerKind
	inNorm, postNorm  []float32
	q, k, v, o        cpu.Matrix
	qNorm, kNorm      []float32
	qkv, z, b, a, out cpu.Matrix
	conv              []float32 // [cc, Kc]
	negA              []float32 // −exp(A_log), per value head
	dtBias            []float32
	gatedNorm         []float32
	sparse            bool
	router            cpu.Matrix
	hasShared         bool
	sharedGate        cpu.Matrix // shared_expert_gate [1, H]
	sgProj, suProj    cpu.Matrix // shared expert gate_proj / up_proj
	sdProj            cpu.Matrix // shared expert down_proj
	mlpGate, mlpUp    cpu.Matrix // dense MLP (mlp_only_layers)
	mlpDown           cpu.Matrix
}

// Config returns the model's normalized configuration.
func (m *Model) Config() *layout.Config { return &m.cfg }

// ExpertsPerToken is the K routing actually uses.
func (m *Model) ExpertsPerToken() int { return m.k }

// Pool is the kernel worker pool.
func (m *Model) Pool() *cpu.Pool { return m.pool }

// New checks every tensor the config implies against w and builds the model.
// Errors name the tensor and the expectation. experts may be nil only for a
// model without sparse layers.
func New(cfg *layout.Config, w Weights, experts Experts, opts Options) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	switch cfg.Arch {
	case layout.ArchQwen3MoE, layout.ArchQwen3Next, layout.ArchQwen35MoE:
	default:
		return nil, fmt.Errorf("config: unsupported architecture %q", cfg.Arch)
	}
	m := &Model{cfg: *cfg, opts: opts, pool: cpu.NewPool(opts.Workers), experts: experts}
	if m.opts.PrefillChunk <= 0 {
		m.opts.PrefillChunk = 128
	}
	m.k = cfg.NumExpertsPerTok
	if opts.ExpertsPerToken > 0 {
		if opts.ExpertsPerToken > cfg.NumExpertsPerTok {
			return nil, fmt.Errorf("experts per token %d exceeds the model's num_experts_per_tok %d (it may only be lowered)", opts.ExpertsPerToken, cfg.NumExpertsPerTok)
		}
		m.k = opts.ExpertsPerToken
	}
	if m.opts.ExpertBatch <= 0 {
		m.opts.ExpertBatch = 32
	}
	m.opts.ExpertBatch = max(m.opts.ExpertBatch, m.k)

	H, V := cfg.HiddenSize, cfg.VocabSize
	var err error
	if m.embed, err = loadMatrix(w, "embed_tokens", V, H); err != nil {
		return nil, err
	}
	if w.Tensor("lm_head") != nil {
		if m.lmHead, err = loadMatrix(w, "lm_head", V, H); err != nil {
			return nil, err
		}
	} else if cfg.TieWordEmbeddings {
		m.lmHead = m.embed
	} else {
		return nil, fmt.Errorf("tensor %q missing and tie_word_embeddings is false", "lm_head")
	}
	if m.finalNorm, err = loadVector(w, "norm", H); err != nil {
		return nil, err
	}

	nH, nKV, D := cfg.NumAttentionHeads, cfg.NumKeyValueHeads, cfg.HeadDim
	m.attnDim, m.kvDim = nH*D, nKV*D
	m.qRows = nH * D
	if cfg.AttnOutputGate {
		m.qRows *= 2
	}
	if cfg.RotaryDim > 0 {
		m.rope = cpu.NewRope(cfg.RotaryDim, cfg.RopeTheta)
	}
	nk, nv := cfg.LinearNumKeyHeads, cfg.LinearNumValueHeads
	m.kd, m.vd = nk*cfg.LinearKeyHeadDim, nv*cfg.LinearValueHeadDim
	m.cc = 2*m.kd + m.vd
	if nk > 0 {
		m.r = nv / nk
	}

	anySparse := false
	for i := 0; i < cfg.NumLayers; i++ {
		l, err := m.loadLayer(w, i)
		if err != nil {
			return nil, err
		}
		m.layers = append(m.layers, l)
		anySparse = anySparse || l.sparse
	}
	if anySparse {
		if experts == nil {
			return nil, fmt.Errorf("the model has routed experts but no expert source was given")
		}
		if err := m.loadExpertSet(experts.ExpertSet()); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *Model) loadLayer(w Weights, i int) (*layer, error) {
	cfg := &m.cfg
	H := cfg.HiddenSize
	p := fmt.Sprintf("layers.%d.", i)
	l := &layer{index: i, sparse: cfg.SparseLayers[i]}
	var err error
	if l.inNorm, err = loadVector(w, p+"input_layernorm", H); err != nil {
		return nil, err
	}
	if l.postNorm, err = loadVector(w, p+"post_attention_layernorm", H); err != nil {
		return nil, err
	}
	type mat struct {
		dst        *cpu.Matrix
		name       string
		rows, cols int
	}
	type vec struct {
		dst  *[]float32
		name string
		n    int
	}
	var mats []mat
	var vecs []vec
	var aLog []float32
	switch cfg.LayerTypes[i] {
	case layout.FullAttention:
		l.kind = fullAttention
		D := cfg.HeadDim
		mats = append(mats, mat{&l.q, "self_attn.q_proj", m.qRows, H}, mat{&l.k, "self_attn.k_proj", m.kvDim, H},
			mat{&l.v, "self_attn.v_proj", m.kvDim, H}, mat{&l.o, "self_attn.o_proj", H, m.attnDim})
		vecs = append(vecs, vec{&l.qNorm, "self_attn.q_norm", D}, vec{&l.kNorm, "self_attn.k_norm", D})
	case layout.LinearAttention:
		l.kind = linearAttention
		nv, kc := cfg.LinearNumValueHeads, cfg.LinearConvKernelDim
		mats = append(mats, mat{&l.qkv, "linear_attn.in_proj_qkv", m.cc, H}, mat{&l.z, "linear_attn.in_proj_z", m.vd, H},
			mat{&l.b, "linear_attn.in_proj_b", nv, H}, mat{&l.a, "linear_attn.in_proj_a", nv, H},
			mat{&l.out, "linear_attn.out_proj", H, m.vd})
		vecs = append(vecs, vec{&l.conv, "linear_attn.conv1d", m.cc * kc}, vec{&aLog, "linear_attn.A_log", nv},
			vec{&l.dtBias, "linear_attn.dt_bias", nv}, vec{&l.gatedNorm, "linear_attn.norm", cfg.LinearValueHeadDim})
	}
	if l.sparse {
		E := cfg.NumExperts
		mats = append(mats, mat{&l.router, "mlp.gate", E, H})
		if Is := cfg.SharedExpertIntermediateSize; Is > 0 {
			l.hasShared = true
			mats = append(mats, mat{&l.sgProj, "mlp.shared_expert.gate_proj", Is, H}, mat{&l.suProj, "mlp.shared_expert.up_proj", Is, H},
				mat{&l.sdProj, "mlp.shared_expert.down_proj", H, Is}, mat{&l.sharedGate, "mlp.shared_expert_gate", 1, H})
		}
	} else {
		I := cfg.IntermediateSize
		if I <= 0 {
			return nil, fmt.Errorf("config: layer %d is a dense MLP layer but intermediate_size is %d", i, I)
		}
		mats = append(mats, mat{&l.mlpGate, "mlp.gate_proj", I, H}, mat{&l.mlpUp, "mlp.up_proj", I, H}, mat{&l.mlpDown, "mlp.down_proj", H, I})
	}
	for _, x := range mats {
		if *x.dst, err = loadMatrix(w, p+x.name, x.rows, x.cols); err != nil {
			return nil, err
		}
	}
	for _, x := range vecs {
		if *x.dst, err = loadVector(w, p+x.name, x.n); err != nil {
			return nil, err
		}
	}
	// The decay rate is −exp(A_log) in float32 (transformers: -A_log.float().exp()).
	for _, v := range aLog {
		l.negA = append(l.negA, -float32(math.Exp(float64(v))))
	}
	return l, nil
}

func (m *Model) loadExpertSet(set *layout.ExpertSet) error {
	if set == nil {
		return fmt.Errorf("expert source has no expert set")
	}
	H, I := m.cfg.HiddenSize, m.cfg.MoEIntermediateSize
	var err error
	for _, c := range []struct {
		dst        **matrixTemplate
		name       string
		rows, cols int
	}{{&m.expertGate, "gate_proj", I, H}, {&m.expertUp, "up_proj", I, H}, {&m.expertDown, "down_proj", H, I}} {
		t := set.Component(c.name)
		if t == nil {
			return fmt.Errorf("%s: expert component %q missing", set.Dir, c.name)
		}
		if *c.dst, err = newTemplate(t, c.rows, c.cols); err != nil {
			return fmt.Errorf("%s: expert component: %w", set.Dir, err)
		}
		for _, p := range []layout.Part{t.Data, (*c.dst).scales, (*c.dst).biases} {
			if p.Offset < 0 || p.Offset+p.Size > set.FileSize {
				return fmt.Errorf("%s: expert component %q: bytes [%d, %d) outside the %d-byte file", set.Dir, c.name, p.Offset, p.Offset+p.Size, set.FileSize)
			}
		}
	}
	m.expertFileSize = set.FileSize
	return nil
}

// WeightBytesPerToken is the weight bytes one decode token reads: the dense
// matrices (every layer's projections, router and shared expert, the output
// head, one embedding row) and the routed experts (K per sparse layer, whole
// files).
func (m *Model) WeightBytesPerToken() (dense, experts int64) {
	size := func(mats ...*cpu.Matrix) int64 {
		var n int64
		for _, x := range mats {
			n += int64(len(x.Data) + len(x.Scales) + len(x.Biases))
		}
		return n
	}
	dense = size(&m.lmHead) + size(&m.embed)/int64(m.cfg.VocabSize)
	for _, l := range m.layers {
		dense += size(&l.q, &l.k, &l.v, &l.o, &l.qkv, &l.z, &l.b, &l.a, &l.out, &l.router,
			&l.sharedGate, &l.sgProj, &l.suProj, &l.sdProj, &l.mlpGate, &l.mlpUp, &l.mlpDown)
		if l.sparse {
			experts += int64(m.k) * m.expertFileSize
		}
	}
	return dense, experts
}
