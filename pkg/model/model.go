package model

import (
	"fmt"
	"math"

	"github.com/fm-moe/fm/pkg/backend"
	"github.com/fm-moe/fm/pkg/layout"
)

// DefaultPrefillChunk is the prefill step's default size. Larger chunks give
// each routed expert more tokens per pass over its weights (and a model
// larger than RAM reads each expert file once per chunk): at 128 tokens,
// Qwen3-30B-A3B's experts saw 8 tokens each on average and the remainder of
// each went through the one-token kernel; 512 prefilled 1.09–1.18× faster in
// int8 mode on the 2-core machine, about the same in exact mode, for 30–60 MB
// more peak RSS (docs/PERF.md, round seven).
const DefaultPrefillChunk = 512

// Options tune a Model without changing its definition, except ExpertsPerToken.
type Options struct {
	// ExpertsPerToken lowers the router's K below the config's
	// num_experts_per_tok (0 keeps the config's value). Any other value changes
	// the model's output; it exists for speed studies.
	ExpertsPerToken int
	// Device computes the model. Nil opens backend "auto" (the best
	// registered backend) with Workers threads; the Model then owns it and
	// Close closes it.
	Device backend.Device
	// Workers is the number of host threads of a Device the model opens
	// itself (0: GOMAXPROCS).
	Workers int
	// PrefillChunk is the most tokens one batched step processes (0:
	// DefaultPrefillChunk).
	PrefillChunk int
	// ExpertBatch is the most expert files being read or held at once, which
	// bounds the expert buffers (0: 32, at least K).
	ExpertBatch int
	// OnRoute, when set, is called after each sparse layer's routing with the
	// experts chosen for each of the step's tokens, in token order: ids[t] holds
	// token t's K expert ids. It records routing traces (cache-policy studies);
	// ids must not be retained.
	OnRoute func(layer int, ids [][]int)
	// OnBlock, when set, is called after each layer's mixer and after its FFN
	// with the residual stream h (the step's T rows of hidden_size floats,
	// row-major) and the block's name ("full_attention", "linear_attention",
	// "MoE", "dense MLP"). The model downloads h for it, which synchronizes
	// the device at every block: it is for debugging (fm-infer compare runs
	// two backends side by side with it), not for speed. h must not be
	// retained.
	OnBlock func(layer int, block string, h []float32)
}

// Model is a loaded architecture ready to run: its weights bound to a
// backend.Device, and the host-side logic (routing, expert fetching, the
// order of the blocks) that drives it.
type Model struct {
	cfg     layout.Config
	opts    Options
	dev     backend.Device
	ownDev  bool
	experts Experts

	k         int // active experts per token
	embed     backend.Matrix
	lmHead    backend.Matrix
	finalNorm backend.Tensor
	layers    []*layer
	specs     []backend.LayerSpec // per-layer state, for Device.NewState

	expertLayout *backend.ExpertLayout
	// cacheOwner keys this model's experts in a device's expert cache.
	cacheOwner uint64

	// Derived dimensions.
	qRows, kvDim, attnDim int // full attention: q_proj rows, nKV·D, nH·D
	kd, vd, cc            int // delta net: nk·dk, nv·dv, conv channels
	// Which blocks occur, so that a State allocates only what they need.
	hasAttention, hasDeltaNet, hasSparse, hasDense bool
	// denseBytes is the dense weight bytes one decode token reads.
	denseBytes int64
}

type layerKind uint8

const (
	fullAttention layerKind = iota
	linearAttention
)

func (k layerKind) String() string {
	if k == fullAttention {
		return "full attention"
	}
	return "linear attention"
}

type layer struct {
	index            int
	kind             layerKind
	inNorm, postNorm backend.Tensor

	// Full attention.
	attn       *backend.AttentionParams
	q, k, v, o backend.Matrix
	// GatedDeltaNet.
	dn                *backend.DeltaNetParams
	qkv, z, b, a, out backend.Matrix
	// inProj lists the projections that read the normed input (q, k, v or
	// qkv, z, b, a), for a device's MatMuls (backend.SharedMatMuler).
	inProj []backend.Matrix

	sparse     bool
	router     backend.Matrix
	hasShared  bool
	sharedGate backend.Matrix // shared_expert_gate [1, H]
	sgProj     backend.Matrix // shared expert gate_proj, up_proj, down_proj
	suProj     backend.Matrix
	sdProj     backend.Matrix
	mlpGate    backend.Matrix // dense MLP (mlp_only_layers)
	mlpUp      backend.Matrix
	mlpDown    backend.Matrix
}

// Config returns the model's normalized configuration.
func (m *Model) Config() *layout.Config { return &m.cfg }

// ExpertsPerToken is the K routing actually uses.
func (m *Model) ExpertsPerToken() int { return m.k }

// Device is the backend the model computes on.
func (m *Model) Device() backend.Device { return m.dev }

// Close closes the Device if the model opened it (Options.Device nil).
func (m *Model) Close() error {
	if m.ownDev {
		m.ownDev = false
		return m.dev.Close()
	}
	return nil
}

// New checks every tensor the config implies against w, binds them to the
// device and builds the model. Errors name the tensor and the expectation.
// experts may be nil only for a model without sparse layers.
func New(cfg *layout.Config, w Weights, experts Experts, opts Options) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	switch cfg.Arch {
	case layout.ArchQwen3MoE, layout.ArchQwen3Next, layout.ArchQwen35MoE:
	default:
		return nil, fmt.Errorf("config: unsupported architecture %q", cfg.Arch)
	}
	m := &Model{cfg: *cfg, opts: opts, dev: opts.Device, experts: experts, cacheOwner: backend.NewCacheOwner()}
	if m.opts.PrefillChunk <= 0 {
		m.opts.PrefillChunk = DefaultPrefillChunk
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
	if m.dev == nil {
		d, err := backend.Open(backend.Auto, backend.Options{Threads: opts.Workers})
		if err != nil {
			return nil, err
		}
		m.dev, m.ownDev = d, true
	}
	ok := false
	defer func() {
		if !ok {
			m.Close()
		}
	}()

	nH, nKV, D := cfg.NumAttentionHeads, cfg.NumKeyValueHeads, cfg.HeadDim
	m.attnDim, m.kvDim = nH*D, nKV*D
	m.qRows = nH * D
	if cfg.AttnOutputGate {
		m.qRows *= 2
	}
	nk, nv := cfg.LinearNumKeyHeads, cfg.LinearNumValueHeads
	m.kd, m.vd = nk*cfg.LinearKeyHeadDim, nv*cfg.LinearValueHeadDim
	m.cc = 2*m.kd + m.vd

	H, V := cfg.HiddenSize, cfg.VocabSize
	ld := loader{m: m, w: w}
	m.embed = ld.matrix("embed_tokens", V, H)
	switch {
	case w.Tensor("lm_head") != nil:
		m.lmHead = ld.matrix("lm_head", V, H)
	case cfg.TieWordEmbeddings:
		m.lmHead = m.embed
	default:
		ld.fail(fmt.Errorf("tensor %q missing and tie_word_embeddings is false", "lm_head"))
	}
	m.finalNorm = ld.vector("norm", 1, H)
	if ld.err != nil {
		return nil, ld.err
	}
	m.denseBytes = size(m.embed.Desc())/int64(V) + size(m.lmHead.Desc()) // one embedding row and the head

	for i := 0; i < cfg.NumLayers; i++ {
		ld.bytes = 0
		l := ld.layer(i)
		if ld.err != nil {
			return nil, ld.err
		}
		m.denseBytes += ld.bytes
		m.layers = append(m.layers, l)
		m.specs = append(m.specs, backend.LayerSpec{Attention: l.attn, DeltaNet: l.dn})
		m.hasAttention = m.hasAttention || l.kind == fullAttention
		m.hasDeltaNet = m.hasDeltaNet || l.kind == linearAttention
		m.hasSparse = m.hasSparse || l.sparse
		m.hasDense = m.hasDense || !l.sparse
	}
	if m.hasSparse {
		if experts == nil {
			return nil, fmt.Errorf("the model has routed experts but no expert source was given")
		}
		var err error
		if m.expertLayout, err = expertLayout(experts.ExpertSet(), H, cfg.MoEIntermediateSize); err != nil {
			return nil, err
		}
	}
	ok = true
	return m, nil
}

// loader binds a model's tensors, keeping the first error (so that the list
// of a layer's tensors reads as a list) and counting the matrix bytes bound.
type loader struct {
	m     *Model
	w     Weights
	err   error
	bytes int64
}

func (ld *loader) fail(err error) {
	if ld.err == nil {
		ld.err = err
	}
}

// matrix binds the named dense matrix, checked against its expected shape.
func (ld *loader) matrix(name string, rows, cols int) backend.Matrix {
	if ld.err != nil {
		return nil
	}
	t := ld.w.Tensor(name)
	if t == nil {
		ld.fail(fmt.Errorf("tensor %q missing", name))
		return nil
	}
	desc, err := describe(t, rows, cols)
	if err != nil {
		ld.fail(err)
		return nil
	}
	var scales, biases []byte
	if q := t.Quant; q != nil {
		scales, biases = ld.w.Bytes(q.Scales), ld.w.Bytes(q.Biases)
	}
	mat, err := ld.m.dev.BindDense(desc, ld.w.Bytes(t.Data), scales, biases)
	if err != nil {
		ld.fail(fmt.Errorf("tensor %q: %w", name, err))
		return nil
	}
	ld.bytes += size(desc)
	return mat
}

// vector uploads a float tensor (norm weights, dt_bias, conv taps) as a
// [rows × cols] tensor; transform, when given, maps each value first.
func (ld *loader) vector(name string, rows, cols int, transform ...func(float32) float32) backend.Tensor {
	if ld.err != nil {
		return nil
	}
	v, err := loadVector(ld.w, name, rows*cols)
	if err != nil {
		ld.fail(err)
		return nil
	}
	for _, f := range transform {
		for i := range v {
			v[i] = f(v[i])
		}
	}
	t, err := ld.m.dev.NewTensor(rows, cols)
	if err != nil {
		ld.fail(fmt.Errorf("tensor %q: %w", name, err))
		return nil
	}
	ld.m.dev.Upload(t, v)
	return t
}

// layer binds layer i's tensors.
func (ld *loader) layer(i int) *layer {
	m, cfg := ld.m, &ld.m.cfg
	H, eps := cfg.HiddenSize, cfg.RMSNormEps
	p := fmt.Sprintf("layers.%d.", i)
	l := &layer{index: i, sparse: cfg.SparseLayers[i]}
	l.inNorm = ld.vector(p+"input_layernorm", 1, H)
	l.postNorm = ld.vector(p+"post_attention_layernorm", 1, H)
	switch cfg.LayerTypes[i] {
	case layout.FullAttention:
		l.kind = fullAttention
		D := cfg.HeadDim
		l.q = ld.matrix(p+"self_attn.q_proj", m.qRows, H)
		l.k = ld.matrix(p+"self_attn.k_proj", m.kvDim, H)
		l.v = ld.matrix(p+"self_attn.v_proj", m.kvDim, H)
		l.o = ld.matrix(p+"self_attn.o_proj", H, m.attnDim)
		l.inProj = []backend.Matrix{l.q, l.k, l.v}
		l.attn = &backend.AttentionParams{
			Heads: cfg.NumAttentionHeads, KVHeads: cfg.NumKeyValueHeads, HeadDim: D,
			RotaryDim: cfg.RotaryDim, RopeTheta: cfg.RopeTheta, Gated: cfg.AttnOutputGate,
			QNorm: ld.vector(p+"self_attn.q_norm", 1, D), KNorm: ld.vector(p+"self_attn.k_norm", 1, D), Eps: eps,
		}
	case layout.LinearAttention:
		l.kind = linearAttention
		nv, dv := cfg.LinearNumValueHeads, cfg.LinearValueHeadDim
		l.qkv = ld.matrix(p+"linear_attn.in_proj_qkv", m.cc, H)
		l.z = ld.matrix(p+"linear_attn.in_proj_z", m.vd, H)
		l.b = ld.matrix(p+"linear_attn.in_proj_b", nv, H)
		l.a = ld.matrix(p+"linear_attn.in_proj_a", nv, H)
		l.out = ld.matrix(p+"linear_attn.out_proj", H, m.vd)
		l.inProj = []backend.Matrix{l.qkv, l.z, l.b, l.a}
		l.dn = &backend.DeltaNetParams{
			KeyHeads: cfg.LinearNumKeyHeads, ValueHeads: nv, KeyDim: cfg.LinearKeyHeadDim, ValueDim: dv,
			ConvKernel: cfg.LinearConvKernelDim,
			Conv:       ld.vector(p+"linear_attn.conv1d", m.cc, cfg.LinearConvKernelDim),
			// The decay rate is −exp(A_log) in float32 (transformers: -A_log.float().exp()).
			NegA:   ld.vector(p+"linear_attn.A_log", 1, nv, func(v float32) float32 { return -float32(math.Exp(float64(v))) }),
			DtBias: ld.vector(p+"linear_attn.dt_bias", 1, nv),
			Norm:   ld.vector(p+"linear_attn.norm", 1, dv),
			Eps:    eps,
		}
	}
	if l.sparse {
		l.router = ld.matrix(p+"mlp.gate", cfg.NumExperts, H)
		if Is := cfg.SharedExpertIntermediateSize; Is > 0 {
			l.hasShared = true
			l.sgProj = ld.matrix(p+"mlp.shared_expert.gate_proj", Is, H)
			l.suProj = ld.matrix(p+"mlp.shared_expert.up_proj", Is, H)
			l.sdProj = ld.matrix(p+"mlp.shared_expert.down_proj", H, Is)
			l.sharedGate = ld.matrix(p+"mlp.shared_expert_gate", 1, H)
		}
	} else {
		I := cfg.IntermediateSize
		if I <= 0 {
			ld.fail(fmt.Errorf("config: layer %d is a dense MLP layer but intermediate_size is %d", i, I))
			return l
		}
		l.mlpGate = ld.matrix(p+"mlp.gate_proj", I, H)
		l.mlpUp = ld.matrix(p+"mlp.up_proj", I, H)
		l.mlpDown = ld.matrix(p+"mlp.down_proj", H, I)
	}
	return l
}

// size is the bytes a product with the matrix reads.
func size(d backend.MatrixDesc) int64 { return int64(d.DataBytes() + 2*d.ScaleBytes()) }

// WeightBytesPerToken is the weight bytes one decode token reads: the dense
// matrices (every layer's projections, router and shared expert, the output
// head, one embedding row) and the routed experts (K per sparse layer, whole
// files).
func (m *Model) WeightBytesPerToken() (dense, experts int64) {
	for _, l := range m.layers {
		if l.sparse {
			experts += int64(m.k) * int64(m.expertLayout.FileSize)
		}
	}
	return m.denseBytes, experts
}
