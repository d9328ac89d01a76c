package layout

import (
	"fmt"
	"math"
)

// Layer mixer kinds in Config.LayerTypes.
const (
	LinearAttention = "linear_attention"
	FullAttention   = "full_attention"
)

// Architecture families (Config.Arch).
const (
	ArchQwen3MoE  = "qwen3_moe"
	ArchQwen3Next = "qwen3_next"
	ArchQwen35MoE = "qwen3_5_moe"
)

// Config is the normalized model configuration: every number the runtime uses,
// resolved from config.json once by the converter (nested text_config, both rope
// spellings, layer_types or full_attention_interval, class defaults).
type Config struct {
	Arch            string `json:"arch"`              // qwen3_moe | qwen3_next | qwen3_5_moe
	SourceModelType string `json:"source_model_type"` // model_type as found (e.g. qwen3_5_moe_text)

	VocabSize             int     `json:"vocab_size"`
	HiddenSize            int     `json:"hidden_size"`
	NumLayers             int     `json:"num_hidden_layers"`
	RMSNormEps            float64 `json:"rms_norm_eps"`
	TieWordEmbeddings     bool    `json:"tie_word_embeddings"`
	MaxPositionEmbeddings int     `json:"max_position_embeddings"`

	// LayerTypes[i] is LinearAttention or FullAttention.
	LayerTypes []string `json:"layer_types"`
	// SparseLayers[i] is true when layer i has a routed-expert MoE block, false for
	// a dense SwiGLU MLP (mlp_only_layers / decoder_sparse_step).
	SparseLayers []bool `json:"sparse_layers"`

	// Full attention.
	NumAttentionHeads   int     `json:"num_attention_heads"`
	NumKeyValueHeads    int     `json:"num_key_value_heads"`
	HeadDim             int     `json:"head_dim"`
	RopeTheta           float64 `json:"rope_theta"`
	PartialRotaryFactor float64 `json:"partial_rotary_factor"`
	RotaryDim           int     `json:"rotary_dim"`       // int(HeadDim * PartialRotaryFactor)
	AttnOutputGate      bool    `json:"attn_output_gate"` // q_proj carries a per-head sigmoid gate (Next, 3.5)

	// Gated DeltaNet (linear attention).
	LinearConvKernelDim int `json:"linear_conv_kernel_dim,omitempty"`
	LinearKeyHeadDim    int `json:"linear_key_head_dim,omitempty"`
	LinearValueHeadDim  int `json:"linear_value_head_dim,omitempty"`
	LinearNumKeyHeads   int `json:"linear_num_key_heads,omitempty"`
	LinearNumValueHeads int `json:"linear_num_value_heads,omitempty"`

	// Mixture of experts.
	NumExperts                   int  `json:"num_experts"`
	NumExpertsPerTok             int  `json:"num_experts_per_tok"`
	MoEIntermediateSize          int  `json:"moe_intermediate_size"`
	SharedExpertIntermediateSize int  `json:"shared_expert_intermediate_size,omitempty"` // 0: no shared expert
	NormTopKProb                 bool `json:"norm_topk_prob"`
	IntermediateSize             int  `json:"intermediate_size,omitempty"` // dense MLP layers only

	// Tokens.
	EOSTokenIDs []int `json:"eos_token_ids"` // config + generation_config, deduplicated
	BOSTokenID  *int  `json:"bos_token_id,omitempty"`
	PadTokenID  *int  `json:"pad_token_id,omitempty"`
}

// ZeroCenteredNorms reports whether the checkpoint's RMSNorms are (1+w) ones.
// The layout has already folded the 1 in; this is informational.
func (c *Config) ZeroCenteredNorms() bool { return c.Arch != ArchQwen3MoE }

// Validate checks internal consistency; errors name the offending key.
func (c *Config) Validate() error {
	pos := func(name string, v int) error {
		if v <= 0 {
			return fmt.Errorf("config: %s must be positive, got %d", name, v)
		}
		return nil
	}
	for _, kv := range []struct {
		n string
		v int
	}{{"vocab_size", c.VocabSize}, {"hidden_size", c.HiddenSize}, {"num_hidden_layers", c.NumLayers},
		{"num_experts", c.NumExperts}, {"num_experts_per_tok", c.NumExpertsPerTok}, {"moe_intermediate_size", c.MoEIntermediateSize}} {
		if err := pos(kv.n, kv.v); err != nil {
			return err
		}
	}
	if err := c.checkRanges(); err != nil {
		return err
	}
	if len(c.LayerTypes) != c.NumLayers {
		return fmt.Errorf("config: layer_types has %d entries, num_hidden_layers is %d", len(c.LayerTypes), c.NumLayers)
	}
	if len(c.SparseLayers) != c.NumLayers {
		return fmt.Errorf("config: sparse_layers has %d entries, num_hidden_layers is %d", len(c.SparseLayers), c.NumLayers)
	}
	if c.NumExpertsPerTok > c.NumExperts {
		return fmt.Errorf("config: num_experts_per_tok %d exceeds num_experts %d", c.NumExpertsPerTok, c.NumExperts)
	}
	hasFull, hasLinear := false, false
	for i, t := range c.LayerTypes {
		switch t {
		case FullAttention:
			hasFull = true
		case LinearAttention:
			hasLinear = true
		default:
			return fmt.Errorf("config: layer_types[%d] = %q, want %q or %q", i, t, LinearAttention, FullAttention)
		}
	}
	if hasFull {
		if !(c.RopeTheta > 0) || math.IsInf(c.RopeTheta, 0) {
			return fmt.Errorf("config: rope_theta %v must be a positive finite number", c.RopeTheta)
		}
		for _, kv := range []struct {
			n string
			v int
		}{{"num_attention_heads", c.NumAttentionHeads}, {"num_key_value_heads", c.NumKeyValueHeads}, {"head_dim", c.HeadDim}} {
			if err := pos(kv.n, kv.v); err != nil {
				return err
			}
		}
		if c.NumAttentionHeads%c.NumKeyValueHeads != 0 {
			return fmt.Errorf("config: num_attention_heads %d is not a multiple of num_key_value_heads %d", c.NumAttentionHeads, c.NumKeyValueHeads)
		}
		if c.RotaryDim <= 0 || c.RotaryDim > c.HeadDim || c.RotaryDim%2 != 0 {
			return fmt.Errorf("config: rotary_dim %d must be even and in (0, head_dim %d]", c.RotaryDim, c.HeadDim)
		}
	}
	if hasLinear {
		for _, kv := range []struct {
			n string
			v int
		}{{"linear_conv_kernel_dim", c.LinearConvKernelDim}, {"linear_key_head_dim", c.LinearKeyHeadDim},
			{"linear_value_head_dim", c.LinearValueHeadDim}, {"linear_num_key_heads", c.LinearNumKeyHeads}, {"linear_num_value_heads", c.LinearNumValueHeads}} {
			if err := pos(kv.n, kv.v); err != nil {
				return err
			}
		}
		if c.LinearNumValueHeads%c.LinearNumKeyHeads != 0 {
			return fmt.Errorf("config: linear_num_value_heads %d is not a multiple of linear_num_key_heads %d", c.LinearNumValueHeads, c.LinearNumKeyHeads)
		}
	}
	return nil
}

// checkRanges refuses values a model cannot run with, which would otherwise
// turn into NaN or nonsense at run time (a negative rms_norm_eps, say).
func (c *Config) checkRanges() error {
	if !(c.RMSNormEps > 0 && c.RMSNormEps < 1) {
		return fmt.Errorf("config: rms_norm_eps %v must be in (0, 1)", c.RMSNormEps)
	}
	if !(c.PartialRotaryFactor >= 0 && c.PartialRotaryFactor <= 1) {
		return fmt.Errorf("config: partial_rotary_factor %v must be in [0, 1]", c.PartialRotaryFactor)
	}
	for _, kv := range []struct {
		n string
		v int
	}{{"max_position_embeddings", c.MaxPositionEmbeddings}, {"intermediate_size", c.IntermediateSize},
		{"shared_expert_intermediate_size", c.SharedExpertIntermediateSize}, {"rotary_dim", c.RotaryDim}} {
		if kv.v < 0 {
			return fmt.Errorf("config: %s %d must not be negative", kv.n, kv.v)
		}
	}
	ids := append([]int(nil), c.EOSTokenIDs...)
	for _, p := range []*int{c.BOSTokenID, c.PadTokenID} {
		if p != nil {
			ids = append(ids, *p)
		}
	}
	for _, id := range ids {
		if id < 0 || id >= c.VocabSize {
			return fmt.Errorf("config: token id %d (eos/bos/pad) is outside the vocabulary [0, %d)", id, c.VocabSize)
		}
	}
	return nil
}
