package synth

import (
	"fmt"
	"slices"
)

// Model types a Spec can ask for.
const (
	Qwen3MoE      = "qwen3_moe"
	Qwen3Next     = "qwen3_next"
	Qwen35MoE     = "qwen3_5_moe"      // ConditionalGeneration: text keys in text_config, model.language_model. names
	Qwen35MoEText = "qwen3_5_moe_text" // CausalLM: flat config, model. names
)

// Spec describes one synthetic checkpoint. Zero values mean "leave the key
// out of config.json" where the architecture has a class default, and are an
// error where it has none.
type Spec struct {
	// Name identifies the variant in test names.
	Name      string
	ModelType string

	Hidden, Layers, Vocab int
	Heads, KVHeads        int
	HeadDim               int
	// OmitHeadDim leaves head_dim out of config.json; HeadDim must then be
	// the class default: hidden/heads for qwen3_moe, 256 otherwise.
	OmitHeadDim bool
	// RMSNormEps is rms_norm_eps (0: 1e-6).
	RMSNormEps float64
	// PartialRotary is partial_rotary_factor (0: omitted, the class default
	// applies: 1.0 for qwen3_moe, 0.25 otherwise).
	PartialRotary float64
	RopeTheta     float64
	// LegacyRope writes rope_theta / partial_rotary_factor at the top level
	// (hub configs of Qwen3-30B-A3B and Qwen3-Next) instead of in
	// rope_parameters (transformers 5.x).
	LegacyRope bool
	// PartialInRopeOnly writes partial_rotary_factor only inside
	// rope_parameters, not also at the text level.
	PartialInRopeOnly bool

	// GatedDeltaNet dimensions (qwen3_next, qwen3_5*).
	LinearKeyHeads, LinearValueHeads int
	LinearKeyDim, LinearValueDim     int
	ConvKernel                       int // 0: 4
	// LayerTypes, when set, is written as layer_types; otherwise
	// FullAttentionInterval (0: 4, the class default, omitted) decides.
	LayerTypes            []string
	FullAttentionInterval int

	Experts, TopK int
	MoEInter      int
	SharedInter   int // qwen3_next, qwen3_5*
	DenseInter    int // intermediate_size, used by mlp_only / non-sparse layers
	// NormTopK is norm_topk_prob (qwen3_moe, qwen3_next; qwen3_5 always
	// renormalises and has no key).
	NormTopK          bool
	MLPOnlyLayers     []int
	DecoderSparseStep int // 0: 1 (omitted)
	// NumLocalExperts spells num_experts as num_local_experts, as
	// transformers 5.x saves Qwen3MoeConfig.
	NumLocalExperts bool

	Tied bool
	// FusedExperts stores experts as mlp.experts.gate_up_proj [E, 2I, H] and
	// mlp.experts.down_proj [E, H, I] (no .weight), as Qwen3.5 hub
	// checkpoints and transformers' runtime layout do.
	FusedExperts bool
	// Shards is the number of safetensors files (≤ 1: one model.safetensors
	// without an index).
	Shards int
	// MTP adds multi-token-prediction tensors (mtp.*) that inference skips;
	// Vision adds a small model.visual.* tower (qwen3_5_moe only).
	MTP, Vision bool
	// F32Params stores the small parameters (norm weights, A_log, dt_bias)
	// as unrounded F32, as some hub checkpoints do, instead of BF16.
	F32Params bool
	// MLXLegacy makes WriteMLX write what older mlx-lm versions wrote: the
	// router gates at the global 4 bits, a "quantization" object without
	// "mode" that lists every quantized module as true.
	MLXLegacy bool
	// MLXBits is the global bit width of WriteMLX (0: 4; 2, 4 or 8).
	MLXBits int
	// DType is the float dtype of WriteHF's tensors: "BF16" (default), "F16"
	// or "F32" (values are still drawn on the bf16 grid).
	DType string

	Seed uint64
	// TokenizerDir holds tokenizer.json (and optionally tokenizer_config.json,
	// chat_template.jinja) copied into the checkpoint.
	TokenizerDir string
}

func (s *Spec) family() string {
	if s.ModelType == Qwen35MoEText {
		return Qwen35MoE
	}
	return s.ModelType
}

func (s *Spec) hybrid() bool { return s.family() != Qwen3MoE }

func (s *Spec) convKernel() int {
	if s.ConvKernel == 0 {
		return 4
	}
	return s.ConvKernel
}

// linear reports whether layer i is a GatedDeltaNet layer.
func (s *Spec) linear(i int) bool {
	if !s.hybrid() {
		return false
	}
	if s.LayerTypes != nil {
		return s.LayerTypes[i] == "linear_attention"
	}
	interval := s.FullAttentionInterval
	if interval == 0 {
		interval = 4
	}
	return (i+1)%interval != 0
}

// sparse reports whether layer i is a MoE layer.
func (s *Spec) sparse(i int) bool {
	if s.family() == Qwen35MoE {
		return true
	}
	step := s.DecoderSparseStep
	if step == 0 {
		step = 1
	}
	return !slices.Contains(s.MLPOnlyLayers, i) && (i+1)%step == 0
}

// Validate checks that the spec describes a model the architecture allows.
func (s *Spec) Validate() error {
	switch s.ModelType {
	case Qwen3MoE, Qwen3Next, Qwen35MoE, Qwen35MoEText:
	default:
		return fmt.Errorf("synth: model type %q", s.ModelType)
	}
	for _, v := range []struct {
		name string
		n    int
	}{{"hidden", s.Hidden}, {"layers", s.Layers}, {"vocab", s.Vocab}, {"heads", s.Heads}, {"kv heads", s.KVHeads},
		{"head dim", s.HeadDim}, {"experts", s.Experts}, {"top k", s.TopK}, {"moe intermediate", s.MoEInter}} {
		if v.n <= 0 {
			return fmt.Errorf("synth: %s must be positive, got %d", v.name, v.n)
		}
	}
	if s.Heads%s.KVHeads != 0 {
		return fmt.Errorf("synth: %d heads are not a multiple of %d kv heads", s.Heads, s.KVHeads)
	}
	if s.TopK > s.Experts {
		return fmt.Errorf("synth: top-k %d > %d experts", s.TopK, s.Experts)
	}
	if s.hybrid() {
		if s.LinearKeyHeads <= 0 || s.LinearValueHeads%s.LinearKeyHeads != 0 || s.LinearKeyDim <= 0 || s.LinearValueDim <= 0 {
			return fmt.Errorf("synth: linear heads %d/%d dims %d/%d", s.LinearKeyHeads, s.LinearValueHeads, s.LinearKeyDim, s.LinearValueDim)
		}
		if s.SharedInter <= 0 {
			return fmt.Errorf("synth: %s needs a shared expert size", s.ModelType)
		}
		if s.LayerTypes != nil && len(s.LayerTypes) != s.Layers {
			return fmt.Errorf("synth: %d layer types for %d layers", len(s.LayerTypes), s.Layers)
		}
	}
	for i := 0; i < s.Layers; i++ {
		if !s.sparse(i) && s.DenseInter <= 0 {
			return fmt.Errorf("synth: layer %d is dense but DenseInter is 0", i)
		}
	}
	if s.OmitHeadDim && s.HeadDim != s.defaultHeadDim() {
		return fmt.Errorf("synth: head_dim %d can only be left out when it is the class default %d", s.HeadDim, s.defaultHeadDim())
	}
	if s.Vision && s.ModelType != Qwen35MoE {
		return fmt.Errorf("synth: a vision tower needs model type %s", Qwen35MoE)
	}
	switch s.DType {
	case "", "BF16", "F16", "F32":
	default:
		return fmt.Errorf("synth: dtype %q: want BF16, F16 or F32", s.DType)
	}
	if s.TokenizerDir == "" {
		return fmt.Errorf("synth: no tokenizer directory")
	}
	return nil
}

func (s *Spec) mlxBits() int {
	if s.MLXBits == 0 {
		return 4
	}
	return s.MLXBits
}

// defaultHeadDim is head_dim when config.json leaves it out: Qwen3MoeConfig
// has no such attribute (the attention uses hidden/heads), Qwen3NextConfig and
// Qwen3_5MoeTextConfig default it to 256.
func (s *Spec) defaultHeadDim() int {
	if s.hybrid() {
		return 256
	}
	return s.Hidden / s.Heads
}
