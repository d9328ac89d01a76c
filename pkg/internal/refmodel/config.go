package refmodel

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Family is the architecture family a config belongs to.
type Family int

// The three families of reference-math.md §1.1 (qwen3_5_moe and
// qwen3_5_moe_text share one).
const (
	Qwen3MoE Family = iota
	Qwen3Next
	Qwen35
)

// Config holds every number the forward pass uses, resolved per
// reference-math.md §1 (class defaults included).
type Config struct {
	Family    Family
	ModelType string // the top-level model_type

	Hidden, Layers, Vocab int
	Heads, KVHeads        int
	HeadDim               int
	RotaryDim             int // int(HeadDim · partial_rotary_factor)
	RopeTheta             float64
	Eps                   float64
	Tied                  bool

	// GatedDeltaNet (qwen3_next, qwen3_5).
	LinearKeyHeads, LinearValueHeads int
	LinearKeyDim, LinearValueDim     int
	ConvKernel                       int
	// Linear[i] reports whether layer i is a GatedDeltaNet layer.
	Linear []bool

	// Feed-forward.
	Experts, TopK  int
	MoEInter       int
	SharedInter    int // 0: no shared expert
	DenseInter     int // intermediate_size of dense (mlp_only) layers
	NormTopK       bool
	Sparse         []bool // Sparse[i]: layer i is a MoE layer (else dense SwiGLU)
	quantization   map[string]any
	quantBits      int
	quantGroupSize int
}

type object map[string]any

func (o object) num(key string) (float64, bool) {
	v, ok := o[key].(float64)
	return v, ok
}

func (o object) intOr(key string, def int) int {
	if v, ok := o.num(key); ok {
		return int(v)
	}
	return def
}

func (o object) sub(key string) object {
	v, _ := o[key].(map[string]any)
	return v
}

// ReadConfig reads and resolves dir/config.json.
func ReadConfig(dir string) (*Config, error) {
	path := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var top object
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c := &Config{}
	c.ModelType, _ = top["model_type"].(string)
	switch c.ModelType {
	case "qwen3_moe":
		c.Family = Qwen3MoE
	case "qwen3_next":
		c.Family = Qwen3Next
	case "qwen3_5_moe", "qwen3_5_moe_text":
		c.Family = Qwen35
	default:
		return nil, fmt.Errorf("%s: model_type %q: want qwen3_moe, qwen3_next, qwen3_5_moe or qwen3_5_moe_text", path, c.ModelType)
	}
	text := top
	if t := top.sub("text_config"); t != nil {
		text = t
	}
	need := func(key string) (int, error) {
		v, ok := text.num(key)
		if !ok {
			return 0, fmt.Errorf("%s: key %q missing", path, key)
		}
		return int(v), nil
	}
	for _, f := range []struct {
		dst *int
		key string
	}{
		{&c.Hidden, "hidden_size"}, {&c.Layers, "num_hidden_layers"}, {&c.Vocab, "vocab_size"},
		{&c.Heads, "num_attention_heads"}, {&c.KVHeads, "num_key_value_heads"},
		{&c.TopK, "num_experts_per_tok"}, {&c.MoEInter, "moe_intermediate_size"},
	} {
		if *f.dst, err = need(f.key); err != nil {
			return nil, err
		}
	}
	// Qwen3MoeConfig has no head_dim (hidden/heads is used);
	// Qwen3NextConfig and Qwen3_5MoeTextConfig default it to 256.
	defaultHeadDim := c.Hidden / c.Heads
	if c.Family != Qwen3MoE {
		defaultHeadDim = 256
	}
	c.HeadDim = text.intOr("head_dim", defaultHeadDim)
	c.Experts = text.intOr("num_experts", text.intOr("num_local_experts", 0))
	if c.Experts == 0 {
		return nil, fmt.Errorf("%s: neither num_experts nor num_local_experts", path)
	}
	c.Eps = 1e-6
	if v, ok := text.num("rms_norm_eps"); ok {
		c.Eps = v
	}
	c.DenseInter = text.intOr("intermediate_size", 0)

	// RoPE: rope_parameters.X, then top-level X, then the class default (§1.2).
	rope := text.sub("rope_parameters")
	c.RopeTheta = 10000
	partial := 1.0
	if c.Family != Qwen3MoE {
		partial = 0.25
	}
	if v, ok := text.num("rope_theta"); ok {
		c.RopeTheta = v
	}
	if v, ok := text.num("partial_rotary_factor"); ok {
		partial = v
	}
	if rope != nil {
		if typ, ok := rope["rope_type"].(string); ok && typ != "default" {
			return nil, fmt.Errorf("%s: rope_type %q not supported", path, typ)
		}
		if v, ok := rope.num("rope_theta"); ok {
			c.RopeTheta = v
		}
		if v, ok := rope.num("partial_rotary_factor"); ok {
			partial = v
		}
	}
	c.RotaryDim = int(float64(c.HeadDim) * partial)

	// Tied embeddings: the outer (ConditionalGeneration) config decides when
	// there is one.
	if v, ok := top["tie_word_embeddings"].(bool); ok {
		c.Tied = v
	} else if v, ok := text["tie_word_embeddings"].(bool); ok {
		c.Tied = v
	}

	c.Linear = make([]bool, c.Layers)
	c.Sparse = make([]bool, c.Layers)
	if c.Family != Qwen3MoE {
		for _, f := range []struct {
			dst *int
			key string
		}{
			{&c.LinearKeyHeads, "linear_num_key_heads"}, {&c.LinearValueHeads, "linear_num_value_heads"},
			{&c.LinearKeyDim, "linear_key_head_dim"}, {&c.LinearValueDim, "linear_value_head_dim"},
			{&c.SharedInter, "shared_expert_intermediate_size"},
		} {
			if *f.dst, err = need(f.key); err != nil {
				return nil, err
			}
		}
		c.ConvKernel = text.intOr("linear_conv_kernel_dim", 4)
		if lt, ok := text["layer_types"].([]any); ok && lt != nil {
			if len(lt) != c.Layers {
				return nil, fmt.Errorf("%s: layer_types has %d entries, want %d", path, len(lt), c.Layers)
			}
			for i, v := range lt {
				switch v {
				case "linear_attention":
					c.Linear[i] = true
				case "full_attention":
				default:
					return nil, fmt.Errorf("%s: layer_types[%d] = %v", path, i, v)
				}
			}
		} else {
			interval := text.intOr("full_attention_interval", 4)
			for i := range c.Linear {
				c.Linear[i] = (i+1)%interval != 0
			}
		}
		if c.LinearValueHeads%c.LinearKeyHeads != 0 {
			return nil, fmt.Errorf("%s: %d linear value heads are not a multiple of %d key heads", path, c.LinearValueHeads, c.LinearKeyHeads)
		}
	}

	// Which layers are MoE (§1.3): qwen3_5 always; the others honour
	// mlp_only_layers and decoder_sparse_step.
	mlpOnly := map[int]bool{}
	if l, ok := text["mlp_only_layers"].([]any); ok {
		for _, v := range l {
			f, _ := v.(float64)
			mlpOnly[int(f)] = true
		}
	}
	step := text.intOr("decoder_sparse_step", 1)
	for i := range c.Sparse {
		c.Sparse[i] = c.Family == Qwen35 || (!mlpOnly[i] && step > 0 && (i+1)%step == 0)
		if !c.Sparse[i] && c.DenseInter == 0 {
			return nil, fmt.Errorf("%s: layer %d is dense but intermediate_size is missing", path, i)
		}
	}

	switch c.Family {
	case Qwen35:
		c.NormTopK = true
	case Qwen3Next:
		c.NormTopK = true
		if v, ok := text["norm_topk_prob"].(bool); ok {
			c.NormTopK = v
		}
	default:
		if v, ok := text["norm_topk_prob"].(bool); ok {
			c.NormTopK = v
		}
	}

	if q := top.sub("quantization"); q != nil {
		c.quantization = q
		c.quantBits = q.intOr("bits", 0)
		c.quantGroupSize = q.intOr("group_size", 64)
		if mode, ok := q["mode"].(string); ok && mode != "affine" {
			return nil, fmt.Errorf("%s: quantization mode %q: only affine is supported", path, mode)
		}
	}
	return c, nil
}

// quantFor returns the bits and group size of the MLX module at path (per-path
// override first, then the global setting).
func (c *Config) quantFor(module string) (bits, groupSize int) {
	if o, ok := c.quantization[module].(map[string]any); ok {
		ob := object(o)
		return ob.intOr("bits", c.quantBits), ob.intOr("group_size", c.quantGroupSize)
	}
	return c.quantBits, c.quantGroupSize
}
