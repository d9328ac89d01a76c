package synth

// HeldOut returns the synthetic models that stand in for the held-out
// acceptance models, all different from the goldens (hidden 128, 4 layers,
// 16 experts, top-4, two heads per group):
//
//   - hidden 192 and 256, 6–8 layers, 24–64 experts, top-6, top-8 and top-10;
//   - attention heads per kv head 1, 4 and 8 (with one and with several kv
//     heads, so a wrong head mapping shows), head_dim 128 and 256, partial
//     rotary 0.25 and 0.5, given or left to the class default;
//   - GatedDeltaNet value heads per key head 1 and 4 (one and several key
//     heads), key/value head dims unequal, conv kernel 4 and 3;
//   - tied embeddings (no lm_head), fused and per-expert expert tensors;
//   - qwen3_moe with norm_topk_prob false, an mlp_only dense layer,
//     decoder_sparse_step 2, num_local_experts, head_dim left out (hidden/heads);
//   - qwen3_next with a dense layer, explicit layer_types, hub-style top-level
//     rope keys, mtp.* tensors to skip, head_dim and partial_rotary_factor left
//     out (256 and 0.25), full_attention_interval 3;
//   - more than 256 experts (260);
//   - qwen3_5_moe (text_config, model.language_model. names, a vision tower to
//     skip) and qwen3_5_moe_text (flat), full_attention_interval 3;
//   - a vocabulary larger than the tokenizer's, rms_norm_eps 1e-5, 1–5 shards,
//     F16 and F32 checkpoints besides BF16, unrounded F32 norms, A_log and
//     dt_bias in BF16 ones.
//
// Every model converts and runs in about a second. mlx names the specs that
// the tests also write with WriteMLX, one per architecture: qwen3_moe with
// the older mlx-lm config (4-bit router, true/false module entries),
// qwen3_next with a shared expert too narrow to quantize (left bf16) and
// A_log cast to bf16, qwen3_5_moe tied with a vision_tower.
func HeldOut(tokenizerDir string) (all []Spec, mlx []string) {
	all = []Spec{
		{
			Name: "qwen3moe-h192-l6-e24-k6-gqa8-dense-tied", ModelType: Qwen3MoE,
			Hidden: 192, Layers: 6, Vocab: 4032, Heads: 8, KVHeads: 1, HeadDim: 128,
			RopeTheta: 1e6, LegacyRope: true,
			Experts: 24, TopK: 6, MoEInter: 64, DenseInter: 384, NormTopK: false, MLPOnlyLayers: []int{2},
			Tied: true, Shards: 3, Seed: 11, MLXLegacy: true,
		},
		{
			Name: "qwen3moe-h256-l7-e40-k8-gqa4-fused-v4096", ModelType: Qwen3MoE,
			Hidden: 256, Layers: 7, Vocab: 4096, Heads: 8, KVHeads: 2, HeadDim: 128,
			RopeTheta: 1e7,
			Experts:   40, TopK: 8, MoEInter: 64, NormTopK: true, NumLocalExperts: true,
			FusedExperts: true, Shards: 2, Seed: 12,
		},
		{
			Name: "qwen3moe-h256-l6-e28-k8-mha-d64-sparsestep2-f16", ModelType: Qwen3MoE,
			Hidden: 256, Layers: 6, Vocab: 4032, Heads: 4, KVHeads: 4, HeadDim: 64, OmitHeadDim: true,
			RMSNormEps: 1e-5,
			Experts:    28, TopK: 8, MoEInter: 64, DenseInter: 256, NormTopK: true, DecoderSparseStep: 2,
			Seed: 13,
		},
		{
			Name: "qwen3next-h256-l8-e32-k8-r4-gqa4-p05-mtp", ModelType: Qwen3Next,
			Hidden: 256, Layers: 8, Vocab: 4032, Heads: 8, KVHeads: 2, HeadDim: 128,
			PartialRotary: 0.5, RopeTheta: 1e7, LegacyRope: true,
			LinearKeyHeads: 2, LinearValueHeads: 8, LinearKeyDim: 64, LinearValueDim: 96,
			Experts: 32, TopK: 8, MoEInter: 64, SharedInter: 96, NormTopK: true,
			MTP: true, Shards: 4, Seed: 21,
		},
		{
			// Many experts (more than 256, not a power of two), small ones.
			Name: "qwen3moe-h128-l3-e260-k8-i32-f32", ModelType: Qwen3MoE,
			Hidden: 128, Layers: 3, Vocab: 4032, Heads: 4, KVHeads: 2, HeadDim: 64,
			Experts: 260, TopK: 8, MoEInter: 32, NormTopK: true, Seed: 14, DType: "F32",
		},
		{
			Name: "qwen3next-h192-l6-e48-k6-r1-mha-fused-tied-dense", ModelType: Qwen3Next,
			Hidden: 192, Layers: 6, Vocab: 4032, Heads: 8, KVHeads: 8, HeadDim: 128,
			PartialRotary: 0.25, RopeTheta: 1e6,
			LinearKeyHeads: 4, LinearValueHeads: 4, LinearKeyDim: 48, LinearValueDim: 64,
			LayerTypes: []string{"linear_attention", "full_attention", "linear_attention", "linear_attention", "full_attention", "linear_attention"},
			Experts:    48, TopK: 6, MoEInter: 64, SharedInter: 64, DenseInter: 256, MLPOnlyLayers: []int{4},
			NormTopK: false, Tied: true, FusedExperts: true, Shards: 2, Seed: 22, F32Params: true,
		},
		{
			Name: "qwen3next-h192-l6-e24-k6-r4-nk1-gqa8-d256-conv3-defaults", ModelType: Qwen3Next,
			Hidden: 192, Layers: 6, Vocab: 4032, Heads: 8, KVHeads: 1, HeadDim: 256, OmitHeadDim: true,
			LinearKeyHeads: 1, LinearValueHeads: 4, LinearKeyDim: 64, LinearValueDim: 32, ConvKernel: 3,
			FullAttentionInterval: 3,
			Experts:               24, TopK: 6, MoEInter: 64, SharedInter: 64, NormTopK: true, Seed: 23,
		},
		{
			Name: "qwen35moe-h192-l6-e64-k8-r4-gqa8-fused-vision", ModelType: Qwen35MoE,
			Hidden: 192, Layers: 6, Vocab: 4032, Heads: 16, KVHeads: 2, HeadDim: 128,
			PartialRotary: 0.25, RopeTheta: 1e7,
			LinearKeyHeads: 2, LinearValueHeads: 8, LinearKeyDim: 64, LinearValueDim: 96,
			LayerTypes: []string{"linear_attention", "linear_attention", "full_attention", "linear_attention", "linear_attention", "full_attention"},
			Experts:    64, TopK: 8, MoEInter: 64, SharedInter: 192,
			FusedExperts: true, MTP: true, Vision: true, Shards: 5, Seed: 31,
		},
		{
			Name: "qwen35moe-h256-l6-e32-k10-d256-dk128-tied-vision", ModelType: Qwen35MoE,
			Hidden: 256, Layers: 6, Vocab: 4032, Heads: 4, KVHeads: 1, HeadDim: 256,
			PartialRotary: 0.25, PartialInRopeOnly: true, RopeTheta: 1e7,
			LinearKeyHeads: 2, LinearValueHeads: 2, LinearKeyDim: 128, LinearValueDim: 128,
			Experts: 32, TopK: 10, MoEInter: 64, SharedInter: 64,
			Tied: true, Shards: 2, Seed: 33, Vision: true,
		},
		{
			Name: "qwen35moetext-h256-l6-e24-k6-r1-gqa4-p05-tied", ModelType: Qwen35MoEText,
			Hidden: 256, Layers: 6, Vocab: 4032, Heads: 4, KVHeads: 1, HeadDim: 128,
			PartialRotary: 0.5, RopeTheta: 1e6, FullAttentionInterval: 3,
			LinearKeyHeads: 4, LinearValueHeads: 4, LinearKeyDim: 64, LinearValueDim: 48,
			Experts: 24, TopK: 6, MoEInter: 64, SharedInter: 128,
			Tied: true, Shards: 2, Seed: 32, F32Params: true,
		},
	}
	for i := range all {
		all[i].TokenizerDir = tokenizerDir
	}
	mlx = []string{all[0].Name, all[3].Name, all[8].Name}
	return all, mlx
}

// OddSizes returns small models whose every dimension is a size no real model
// has — hidden 200 and 136, head dims 40/72/80, linear head dims 20–40,
// expert widths 40 and 48, 5 or 3 heads, conv kernel 2, an odd vocabulary —
// so vector kernels' tails and any power-of-two assumption are exercised
// end to end. They have no MLX form (widths are not multiples of 64).
func OddSizes(tokenizerDir string) []Spec {
	specs := []Spec{
		{Name: "odd-qwen3moe-h200-d40-i48", ModelType: Qwen3MoE, Hidden: 200, Layers: 3, Vocab: 4032, Heads: 5, KVHeads: 1, HeadDim: 40,
			Experts: 20, TopK: 5, MoEInter: 48, NormTopK: true, Seed: 5},
		{Name: "odd-qwen3next-h200-d80-dk40-dv24", ModelType: Qwen3Next, Hidden: 200, Layers: 4, Vocab: 4031, Heads: 6, KVHeads: 3, HeadDim: 80,
			PartialRotary: 0.25, LinearKeyHeads: 3, LinearValueHeads: 6, LinearKeyDim: 40, LinearValueDim: 24,
			Experts: 20, TopK: 5, MoEInter: 48, SharedInter: 72, NormTopK: true, Seed: 6},
		{Name: "odd-qwen35text-h136-d72-conv2", ModelType: Qwen35MoEText, Hidden: 136, Layers: 4, Vocab: 4032, Heads: 3, KVHeads: 1, HeadDim: 72,
			PartialRotary: 0.5, LinearKeyHeads: 1, LinearValueHeads: 3, LinearKeyDim: 36, LinearValueDim: 20, ConvKernel: 2,
			Experts: 9, TopK: 3, MoEInter: 40, SharedInter: 24, Seed: 7},
	}
	for i := range specs {
		specs[i].TokenizerDir = tokenizerDir
	}
	return specs
}
