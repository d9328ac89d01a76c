package checkpoint

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"

	"github.com/fm-moe/fm/pkg/layout"
)

// Supported values of config.json's model_type.
const (
	ModelTypeQwen3MoE      = "qwen3_moe"
	ModelTypeQwen3Next     = "qwen3_next"
	ModelTypeQwen35MoE     = "qwen3_5_moe"
	ModelTypeQwen35MoEText = "qwen3_5_moe_text"
)

// jsonObject is one level of config.json with typed getters whose errors name
// the key (with its path prefix, e.g. "text_config.num_experts").
type jsonObject struct {
	path string
	m    map[string]json.RawMessage
}

func parseObject(path string, b []byte) (jsonObject, error) {
	o := jsonObject{path: path}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&o.m); err != nil {
		if path == "" {
			return o, fmt.Errorf("malformed JSON: %w", err)
		}
		return o, fmt.Errorf("%s: not a JSON object: %w", path, err)
	}
	return o, nil
}

func (o jsonObject) name(key string) string {
	if o.path == "" {
		return key
	}
	return o.path + "." + key
}

// has reports whether key is present and not null.
func (o jsonObject) has(key string) bool {
	v, ok := o.m[key]
	return ok && string(bytes.TrimSpace(v)) != "null"
}

func (o jsonObject) object(key string) (jsonObject, bool, error) {
	if !o.has(key) {
		return jsonObject{}, false, nil
	}
	sub, err := parseObject(o.name(key), o.m[key])
	return sub, err == nil, err
}

func (o jsonObject) number(key string) (float64, bool, error) {
	if !o.has(key) {
		return 0, false, nil
	}
	var n json.Number
	if err := json.Unmarshal(o.m[key], &n); err != nil {
		return 0, false, fmt.Errorf("config: %s: want a number, got %s", o.name(key), o.m[key])
	}
	f, err := n.Float64()
	if err != nil {
		return 0, false, fmt.Errorf("config: %s: %w", o.name(key), err)
	}
	return f, true, nil
}

func (o jsonObject) integer(key string) (int, bool, error) {
	f, ok, err := o.number(key)
	if err != nil || !ok {
		return 0, ok, err
	}
	if f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, false, fmt.Errorf("config: %s: want an integer, got %v", o.name(key), f)
	}
	return int(f), true, nil
}

func (o jsonObject) boolean(key string) (bool, bool, error) {
	if !o.has(key) {
		return false, false, nil
	}
	var b bool
	if err := json.Unmarshal(o.m[key], &b); err != nil {
		return false, false, fmt.Errorf("config: %s: want true or false, got %s", o.name(key), o.m[key])
	}
	return b, true, nil
}

func (o jsonObject) str(key string) (string, bool, error) {
	if !o.has(key) {
		return "", false, nil
	}
	var s string
	if err := json.Unmarshal(o.m[key], &s); err != nil {
		return "", false, fmt.Errorf("config: %s: want a string, got %s", o.name(key), o.m[key])
	}
	return s, true, nil
}

// ints reads an integer or a list of integers (eos_token_id's two spellings).
func (o jsonObject) ints(key string) ([]int, error) {
	if !o.has(key) {
		return nil, nil
	}
	var one int
	if err := json.Unmarshal(o.m[key], &one); err == nil {
		return []int{one}, nil
	}
	var list []int
	if err := json.Unmarshal(o.m[key], &list); err != nil {
		return nil, fmt.Errorf("config: %s: want an integer or a list of integers, got %s", o.name(key), o.m[key])
	}
	return list, nil
}

func (o jsonObject) strings(key string) ([]string, bool, error) {
	if !o.has(key) {
		return nil, false, nil
	}
	var list []string
	if err := json.Unmarshal(o.m[key], &list); err != nil {
		return nil, false, fmt.Errorf("config: %s: want a list of strings, got %s", o.name(key), o.m[key])
	}
	return list, true, nil
}

// getter accumulates the first error of a sequence of reads.
type getter struct {
	o   jsonObject
	err error
}

func (g *getter) intOr(key string, def int) int {
	v, ok, err := g.o.integer(key)
	if err != nil && g.err == nil {
		g.err = err
	}
	if !ok {
		return def
	}
	return v
}

// intReq reads a key the model cannot do without.
func (g *getter) intReq(key string) int {
	v, ok, err := g.o.integer(key)
	if err != nil && g.err == nil {
		g.err = err
	}
	if !ok && g.err == nil {
		g.err = fmt.Errorf("config: %s is missing", g.o.name(key))
	}
	return v
}

func (g *getter) floatOr(key string, def float64) float64 {
	v, ok, err := g.o.number(key)
	if err != nil && g.err == nil {
		g.err = err
	}
	if !ok {
		return def
	}
	return v
}

func (g *getter) boolOr(key string, def bool) bool {
	v, ok, err := g.o.boolean(key)
	if err != nil && g.err == nil {
		g.err = err
	}
	if !ok {
		return def
	}
	return v
}

// archDefaults are the transformers 5.x class defaults (reference-math.md §1.3)
// for keys a config may omit.
type archDefaults struct {
	vocab, hidden, layers, heads, kvHeads int
	intermediate                          int
	experts, topK, moeInter, sharedInter  int
	normTopK                              bool
	partialRotary                         float64
	convKernel, keyHeadDim, valueHeadDim  int
	keyHeads, valueHeads                  int
	fullAttentionInterval                 int
	maxPositions                          int
}

var defaults = map[string]archDefaults{
	layout.ArchQwen3MoE: {vocab: 151936, hidden: 2048, layers: 24, heads: 32, kvHeads: 4, intermediate: 6144,
		experts: 128, topK: 8, moeInter: 768, normTopK: false, partialRotary: 1, maxPositions: 32768},
	layout.ArchQwen3Next: {vocab: 151936, hidden: 2048, layers: 48, heads: 16, kvHeads: 2, intermediate: 5632,
		experts: 512, topK: 10, moeInter: 512, sharedInter: 512, normTopK: true, partialRotary: 0.25,
		convKernel: 4, keyHeadDim: 128, valueHeadDim: 128, keyHeads: 16, valueHeads: 32, fullAttentionInterval: 4, maxPositions: 32768},
	layout.ArchQwen35MoE: {vocab: 248320, hidden: 2048, layers: 40, heads: 16, kvHeads: 2,
		experts: 256, topK: 8, moeInter: 512, sharedInter: 512, normTopK: true, partialRotary: 0.25,
		convKernel: 4, keyHeadDim: 128, valueHeadDim: 128, keyHeads: 16, valueHeads: 32, fullAttentionInterval: 4, maxPositions: 32768},
}

// ParseConfig normalizes config.json (and, when not nil, generation_config.json)
// into a layout.Config. It reads text keys from text_config when present,
// resolves rope keys from rope_parameters then the top level then class
// defaults, derives layer_types from full_attention_interval when absent and
// the sparse layers from mlp_only_layers / decoder_sparse_step, and merges the
// eos ids of both files. Unknown model types and options this runtime does not
// implement (rope scaling, attention biases, sliding windows, activations other
// than silu) are errors that name the key.
func ParseConfig(configJSON, generationConfigJSON []byte) (layout.Config, error) {
	var c layout.Config
	top, err := parseObject("", configJSON)
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	modelType, ok, err := top.str("model_type")
	if err != nil {
		return c, err
	}
	if !ok {
		return c, fmt.Errorf("config: model_type is missing")
	}
	text := top
	if sub, ok, err := top.object("text_config"); err != nil {
		return c, fmt.Errorf("config: %w", err)
	} else if ok {
		text = sub
	}
	c.SourceModelType = modelType
	switch modelType {
	case ModelTypeQwen3MoE:
		c.Arch = layout.ArchQwen3MoE
	case ModelTypeQwen3Next:
		c.Arch = layout.ArchQwen3Next
	case ModelTypeQwen35MoE, ModelTypeQwen35MoEText:
		c.Arch = layout.ArchQwen35MoE
	default:
		return c, fmt.Errorf("config: model_type %q is not supported (want %s, %s, %s or %s)", modelType,
			ModelTypeQwen3MoE, ModelTypeQwen3Next, ModelTypeQwen35MoE, ModelTypeQwen35MoEText)
	}
	if text.path != "" {
		if tt, ok, err := text.str("model_type"); err != nil {
			return c, err
		} else if ok && tt != ModelTypeQwen35MoEText {
			return c, fmt.Errorf("config: text_config.model_type %q is not supported (want %s)", tt, ModelTypeQwen35MoEText)
		}
	}
	d := defaults[c.Arch]
	g := &getter{o: text}

	if err := rejectUnsupported(text, c.Arch); err != nil {
		return c, err
	}

	c.VocabSize = g.intOr("vocab_size", d.vocab)
	c.HiddenSize = g.intOr("hidden_size", d.hidden)
	c.NumLayers = g.intOr("num_hidden_layers", d.layers)
	c.RMSNormEps = g.floatOr("rms_norm_eps", 1e-6)
	c.MaxPositionEmbeddings = g.intOr("max_position_embeddings", d.maxPositions)
	// tie_word_embeddings lives at the top level of Qwen3.5 configs and may be
	// repeated in text_config; either being true ties.
	c.TieWordEmbeddings = g.boolOr("tie_word_embeddings", false)
	if text.path != "" {
		tg := &getter{o: top}
		c.TieWordEmbeddings = c.TieWordEmbeddings || tg.boolOr("tie_word_embeddings", false)
		if tg.err != nil {
			return c, tg.err
		}
	}

	c.NumAttentionHeads = g.intOr("num_attention_heads", d.heads)
	c.NumKeyValueHeads = g.intOr("num_key_value_heads", d.kvHeads)
	if c.NumAttentionHeads > 0 {
		// Qwen3MoeConfig has no head_dim attribute (the attention derives
		// hidden/heads); Qwen3NextConfig and Qwen3_5MoeTextConfig default it
		// to 256 whatever hidden/heads is (reference-math.md §1.3).
		headDim := c.HiddenSize / c.NumAttentionHeads
		if c.Arch != layout.ArchQwen3MoE {
			headDim = 256
		}
		c.HeadDim = g.intOr("head_dim", headDim)
	}
	c.AttnOutputGate = c.Arch != layout.ArchQwen3MoE

	// RoPE: rope_parameters.X, then X at the text level, then the top level
	// (Qwen3.5 may keep partial_rotary_factor outside text_config), then the default.
	rope, hasRope, err := text.object("rope_parameters")
	if err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	ropeFloat := func(key string, def float64) float64 {
		if hasRope {
			rg := &getter{o: rope}
			if v := rg.floatOr(key, math.NaN()); rg.err != nil {
				g.err = rg.err
			} else if !math.IsNaN(v) {
				return v
			}
		}
		if v := g.floatOr(key, math.NaN()); !math.IsNaN(v) {
			return v
		}
		if text.path != "" {
			tg := &getter{o: top}
			if v := tg.floatOr(key, math.NaN()); !math.IsNaN(v) {
				return v
			}
		}
		return def
	}
	c.RopeTheta = ropeFloat("rope_theta", 10000)
	c.PartialRotaryFactor = ropeFloat("partial_rotary_factor", d.partialRotary)
	c.RotaryDim = int(float64(c.HeadDim) * c.PartialRotaryFactor)

	c.NumExperts = g.intOr("num_experts", -1)
	if c.NumExperts < 0 {
		c.NumExperts = g.intOr("num_local_experts", d.experts)
	}
	c.NumExpertsPerTok = g.intOr("num_experts_per_tok", d.topK)
	c.MoEIntermediateSize = g.intOr("moe_intermediate_size", d.moeInter)
	if c.Arch != layout.ArchQwen3MoE {
		c.SharedExpertIntermediateSize = g.intOr("shared_expert_intermediate_size", d.sharedInter)
	}
	switch c.Arch {
	case layout.ArchQwen35MoE:
		c.NormTopKProb = true // Qwen3.5 always renormalizes; the key does not exist
	default:
		c.NormTopKProb = g.boolOr("norm_topk_prob", d.normTopK)
	}

	if c.Arch != layout.ArchQwen3MoE {
		c.LinearConvKernelDim = g.intOr("linear_conv_kernel_dim", d.convKernel)
		c.LinearKeyHeadDim = g.intOr("linear_key_head_dim", d.keyHeadDim)
		c.LinearValueHeadDim = g.intOr("linear_value_head_dim", d.valueHeadDim)
		c.LinearNumKeyHeads = g.intOr("linear_num_key_heads", d.keyHeads)
		c.LinearNumValueHeads = g.intOr("linear_num_value_heads", d.valueHeads)
	}
	if g.err != nil {
		return c, g.err
	}
	if c.NumLayers <= 0 || c.NumLayers > 1<<16 {
		return c, fmt.Errorf("config: %s %d out of range", text.name("num_hidden_layers"), c.NumLayers)
	}
	if c.NumExperts <= 0 || c.NumExperts > 1<<20 {
		return c, fmt.Errorf("config: %s %d out of range", text.name("num_experts"), c.NumExperts)
	}

	// Layer types.
	if lt, ok, err := text.strings("layer_types"); err != nil {
		return c, err
	} else if ok && c.Arch != layout.ArchQwen3MoE {
		c.LayerTypes = lt
	} else if c.Arch == layout.ArchQwen3MoE {
		for range c.NumLayers {
			c.LayerTypes = append(c.LayerTypes, layout.FullAttention)
		}
	} else {
		interval := g.intOr("full_attention_interval", d.fullAttentionInterval)
		if g.err != nil {
			return c, g.err
		}
		if interval <= 0 {
			return c, fmt.Errorf("config: %s must be positive, got %d", text.name("full_attention_interval"), interval)
		}
		for i := range c.NumLayers {
			if (i+1)%interval == 0 {
				c.LayerTypes = append(c.LayerTypes, layout.FullAttention)
			} else {
				c.LayerTypes = append(c.LayerTypes, layout.LinearAttention)
			}
		}
	}

	// Sparse (MoE) layers.
	c.SparseLayers = make([]bool, c.NumLayers)
	if c.Arch == layout.ArchQwen35MoE {
		for i := range c.SparseLayers {
			c.SparseLayers[i] = true
		}
	} else {
		step := g.intOr("decoder_sparse_step", 1)
		if g.err != nil {
			return c, g.err
		}
		if step <= 0 {
			return c, fmt.Errorf("config: %s must be positive, got %d", text.name("decoder_sparse_step"), step)
		}
		var mlpOnly []int
		if text.has("mlp_only_layers") {
			if err := json.Unmarshal(text.m["mlp_only_layers"], &mlpOnly); err != nil {
				return c, fmt.Errorf("config: %s: want a list of layer indices, got %s", text.name("mlp_only_layers"), text.m["mlp_only_layers"])
			}
		}
		dense := map[int]bool{}
		for _, l := range mlpOnly {
			if l < 0 || l >= c.NumLayers {
				return c, fmt.Errorf("config: %s names layer %d, model has %d", text.name("mlp_only_layers"), l, c.NumLayers)
			}
			dense[l] = true
		}
		anyDense := false
		for i := range c.SparseLayers {
			c.SparseLayers[i] = !dense[i] && (i+1)%step == 0
			anyDense = anyDense || !c.SparseLayers[i]
		}
		if anyDense {
			c.IntermediateSize = g.intOr("intermediate_size", d.intermediate)
			if g.err != nil {
				return c, g.err
			}
			if c.IntermediateSize <= 0 {
				return c, fmt.Errorf("config: %s must be positive for dense MLP layers, got %d", text.name("intermediate_size"), c.IntermediateSize)
			}
		}
	}

	// Tokens.
	eos, err := text.ints("eos_token_id")
	if err != nil {
		return c, err
	}
	if text.path != "" && len(eos) == 0 {
		if eos, err = top.ints("eos_token_id"); err != nil {
			return c, err
		}
	}
	if generationConfigJSON != nil {
		gen, err := parseObject("", generationConfigJSON)
		if err != nil {
			return c, fmt.Errorf("generation_config: %w", err)
		}
		ge, err := gen.ints("eos_token_id")
		if err != nil {
			return c, fmt.Errorf("generation_%w", err)
		}
		eos = append(eos, ge...)
	}
	seen := map[int]bool{}
	c.EOSTokenIDs = []int{}
	for _, id := range eos {
		if !seen[id] {
			seen[id] = true
			c.EOSTokenIDs = append(c.EOSTokenIDs, id)
		}
	}
	for _, k := range []struct {
		key string
		dst **int
	}{{"bos_token_id", &c.BOSTokenID}, {"pad_token_id", &c.PadTokenID}} {
		if v, ok, err := text.integer(k.key); err != nil {
			return c, err
		} else if ok {
			*k.dst = &v
		}
	}
	if err := c.Validate(); err != nil {
		return c, err
	}
	if c.HiddenSize <= 0 {
		return c, fmt.Errorf("config: %s must be positive", text.name("hidden_size"))
	}
	if c.Arch != layout.ArchQwen3MoE && c.SharedExpertIntermediateSize <= 0 {
		return c, fmt.Errorf("config: %s must be positive for %s", text.name("shared_expert_intermediate_size"), c.Arch)
	}
	return c, nil
}

// rejectUnsupported fails on options the runtime does not implement, naming the key.
func rejectUnsupported(text jsonObject, arch string) error {
	if rope, ok, err := text.object("rope_parameters"); err != nil {
		return fmt.Errorf("config: %w", err)
	} else if ok {
		if t, ok, err := rope.str("rope_type"); err != nil {
			return err
		} else if ok && t != "default" {
			return fmt.Errorf("config: %s %q is not supported (only \"default\")", rope.name("rope_type"), t)
		}
	}
	if rs, ok, err := text.object("rope_scaling"); err != nil {
		return fmt.Errorf("config: %w", err)
	} else if ok {
		for _, k := range []string{"rope_type", "type"} {
			if t, ok, err := rs.str(k); err != nil {
				return err
			} else if ok && t != "default" {
				return fmt.Errorf("config: %s %q is not supported (only \"default\")", rs.name(k), t)
			}
		}
	}
	for _, k := range []string{"attention_bias", "use_sliding_window"} {
		if v, _, err := text.boolean(k); err != nil {
			return err
		} else if v {
			return fmt.Errorf("config: %s true is not supported", text.name(k))
		}
	}
	if act, ok, err := text.str("hidden_act"); err != nil {
		return err
	} else if ok && act != "silu" {
		return fmt.Errorf("config: %s %q is not supported (only \"silu\")", text.name("hidden_act"), act)
	}
	return nil
}

// QuantParams are MLX affine quantization parameters of one module.
type QuantParams struct {
	Bits, GroupSize int
}

// Quantization is config.json's MLX "quantization" object: global parameters
// and per-module overrides keyed by the MLX module path as it appears in the
// tensor names (e.g. "language_model.model.layers.0.mlp.gate"). A module whose
// override is false is not quantized.
type Quantization struct {
	QuantParams
	Overrides map[string]*QuantParams // nil value: explicitly not quantized
}

// For returns the parameters of the module at path (tensor name without
// ".weight"): its override, else the global parameters.
func (q *Quantization) For(path string) (QuantParams, bool) {
	if o, ok := q.Overrides[path]; ok {
		if o == nil {
			return QuantParams{}, false
		}
		return *o, true
	}
	return q.QuantParams, true
}

// ParseQuantization reads the "quantization" (or "quantization_config") object
// of an MLX config.json; it returns nil when there is none. Only mode "affine"
// (or no mode, as older files have) is accepted.
func ParseQuantization(configJSON []byte) (*Quantization, error) {
	top, err := parseObject("", configJSON)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	key := "quantization"
	if !top.has(key) {
		key = "quantization_config"
		if !top.has(key) {
			return nil, nil
		}
	}
	qo, _, err := top.object(key)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if m, ok, err := qo.str("mode"); err != nil {
		return nil, err
	} else if ok && m != "affine" {
		return nil, fmt.Errorf("config: %s %q is not supported (only \"affine\")", qo.name("mode"), m)
	}
	if qm, ok, _ := qo.str("quant_method"); ok && qm != "mlx" && qm != "" {
		return nil, fmt.Errorf("config: %s %q is not an MLX affine quantization", qo.name("quant_method"), qm)
	}
	g := &getter{o: qo}
	q := &Quantization{QuantParams: QuantParams{Bits: g.intReq("bits"), GroupSize: g.intReq("group_size")}, Overrides: map[string]*QuantParams{}}
	if g.err != nil {
		return nil, g.err
	}
	if err := checkParams(qo.path, q.QuantParams); err != nil {
		return nil, err
	}
	for k, v := range qo.m {
		switch k {
		case "bits", "group_size", "mode", "quant_method":
			continue
		}
		var b bool
		if json.Unmarshal(v, &b) == nil {
			if !b {
				q.Overrides[k] = nil
			}
			continue
		}
		sub, err := parseObject(qo.name(k), v)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		sg := &getter{o: sub}
		p := &QuantParams{Bits: sg.intOr("bits", q.Bits), GroupSize: sg.intOr("group_size", q.GroupSize)}
		if sg.err != nil {
			return nil, sg.err
		}
		if m, ok, err := sub.str("mode"); err != nil {
			return nil, err
		} else if ok && m != "affine" {
			return nil, fmt.Errorf("config: %s %q is not supported (only \"affine\")", sub.name("mode"), m)
		}
		if err := checkParams(sub.path, *p); err != nil {
			return nil, err
		}
		q.Overrides[k] = p
	}
	return q, nil
}

func checkParams(path string, p QuantParams) error {
	switch p.Bits {
	case 2, 3, 4, 5, 6, 8:
	default:
		return fmt.Errorf("config: %s.bits %d is not supported", path, p.Bits)
	}
	switch p.GroupSize {
	case 32, 64, 128:
	default:
		return fmt.Errorf("config: %s.group_size %d is not supported (want 32, 64 or 128)", path, p.GroupSize)
	}
	return nil
}
