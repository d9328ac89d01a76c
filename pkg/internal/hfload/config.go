package hfload

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fm-moe/fm/pkg/layout"
)

// jsonObj is a decoded JSON object with typed getters.
type jsonObj map[string]any

func (o jsonObj) num(k string) (float64, bool) {
	v, ok := o[k].(float64)
	return v, ok
}

func (o jsonObj) obj(k string) jsonObj {
	v, _ := o[k].(map[string]any)
	return v
}

// parseConfig is a minimal config.json reader for the test checkpoints (the
// converter owns the real parser). It follows reference-math.md §1.
func parseConfig(dir string) (layout.Config, jsonObj, error) {
	var c layout.Config
	path := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return c, nil, err
	}
	var top jsonObj
	if err := json.Unmarshal(b, &top); err != nil {
		return c, nil, fmt.Errorf("%s: %w", path, err)
	}
	text := top
	if tc := top.obj("text_config"); tc != nil {
		text = tc
	}
	mt, _ := top["model_type"].(string)
	c.SourceModelType = mt
	switch mt {
	case "qwen3_moe":
		c.Arch = layout.ArchQwen3MoE
	case "qwen3_next":
		c.Arch = layout.ArchQwen3Next
	case "qwen3_5_moe", "qwen3_5_moe_text":
		c.Arch = layout.ArchQwen35MoE
	default:
		return c, nil, fmt.Errorf("%s: unsupported model_type %q", path, mt)
	}
	intOf := func(k string, def int) int {
		if v, ok := text.num(k); ok {
			return int(v)
		}
		if v, ok := top.num(k); ok {
			return int(v)
		}
		return def
	}
	c.VocabSize = intOf("vocab_size", 0)
	c.HiddenSize = intOf("hidden_size", 0)
	c.NumLayers = intOf("num_hidden_layers", 0)
	c.MaxPositionEmbeddings = intOf("max_position_embeddings", 0)
	c.RMSNormEps = 1e-6
	if v, ok := text.num("rms_norm_eps"); ok {
		c.RMSNormEps = v
	}
	if v, ok := text["tie_word_embeddings"].(bool); ok {
		c.TieWordEmbeddings = v
	} else if v, ok := top["tie_word_embeddings"].(bool); ok {
		c.TieWordEmbeddings = v
	}
	c.NumAttentionHeads = intOf("num_attention_heads", 0)
	c.NumKeyValueHeads = intOf("num_key_value_heads", c.NumAttentionHeads)
	c.HeadDim = intOf("head_dim", 0)
	if c.HeadDim == 0 && c.NumAttentionHeads > 0 {
		c.HeadDim = c.HiddenSize / c.NumAttentionHeads
	}
	rp := text.obj("rope_parameters")
	c.RopeTheta = 10000
	if v, ok := rp.num("rope_theta"); ok {
		c.RopeTheta = v
	} else if v, ok := text.num("rope_theta"); ok {
		c.RopeTheta = v
	}
	c.PartialRotaryFactor = 1
	if c.Arch != layout.ArchQwen3MoE {
		c.PartialRotaryFactor = 0.25
	}
	if v, ok := rp.num("partial_rotary_factor"); ok {
		c.PartialRotaryFactor = v
	} else if v, ok := text.num("partial_rotary_factor"); ok {
		c.PartialRotaryFactor = v
	}
	c.RotaryDim = int(float64(c.HeadDim) * c.PartialRotaryFactor)
	c.AttnOutputGate = c.Arch != layout.ArchQwen3MoE

	c.LinearConvKernelDim = intOf("linear_conv_kernel_dim", 0)
	c.LinearKeyHeadDim = intOf("linear_key_head_dim", 0)
	c.LinearValueHeadDim = intOf("linear_value_head_dim", 0)
	c.LinearNumKeyHeads = intOf("linear_num_key_heads", 0)
	c.LinearNumValueHeads = intOf("linear_num_value_heads", 0)

	c.NumExperts = intOf("num_experts", intOf("num_local_experts", 0))
	c.NumExpertsPerTok = intOf("num_experts_per_tok", 0)
	c.MoEIntermediateSize = intOf("moe_intermediate_size", 0)
	c.SharedExpertIntermediateSize = intOf("shared_expert_intermediate_size", 0)
	c.IntermediateSize = intOf("intermediate_size", 0)
	switch c.Arch {
	case layout.ArchQwen35MoE:
		c.NormTopKProb = true
	case layout.ArchQwen3Next:
		c.NormTopKProb = true
		if v, ok := text["norm_topk_prob"].(bool); ok {
			c.NormTopKProb = v
		}
	default:
		if v, ok := text["norm_topk_prob"].(bool); ok {
			c.NormTopKProb = v
		}
	}

	c.LayerTypes = make([]string, c.NumLayers)
	if lt, ok := text["layer_types"].([]any); ok && len(lt) == c.NumLayers {
		for i, v := range lt {
			c.LayerTypes[i], _ = v.(string)
		}
	} else {
		interval := intOf("full_attention_interval", 4)
		for i := range c.LayerTypes {
			if c.Arch == layout.ArchQwen3MoE || (i+1)%interval == 0 {
				c.LayerTypes[i] = layout.FullAttention
			} else {
				c.LayerTypes[i] = layout.LinearAttention
			}
		}
	}
	step := intOf("decoder_sparse_step", 1)
	mlpOnly := map[int]bool{}
	if l, ok := text["mlp_only_layers"].([]any); ok {
		for _, v := range l {
			if f, ok := v.(float64); ok {
				mlpOnly[int(f)] = true
			}
		}
	}
	c.SparseLayers = make([]bool, c.NumLayers)
	for i := range c.SparseLayers {
		c.SparseLayers[i] = c.NumExperts > 0 && !mlpOnly[i] && (step <= 1 || (i+1)%step == 0)
	}

	addEOS := func(v any) {
		switch x := v.(type) {
		case float64:
			c.EOSTokenIDs = appendUnique(c.EOSTokenIDs, int(x))
		case []any:
			for _, e := range x {
				if f, ok := e.(float64); ok {
					c.EOSTokenIDs = appendUnique(c.EOSTokenIDs, int(f))
				}
			}
		}
	}
	addEOS(text["eos_token_id"])
	if gb, err := os.ReadFile(filepath.Join(dir, "generation_config.json")); err == nil {
		var gen jsonObj
		if json.Unmarshal(gb, &gen) == nil {
			addEOS(gen["eos_token_id"])
		}
	}
	if err := c.Validate(); err != nil {
		return c, nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, top, nil
}

func appendUnique(s []int, v int) []int {
	for _, x := range s {
		if x == v {
			return s
		}
	}
	return append(s, v)
}
