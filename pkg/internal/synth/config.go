package synth

// config returns config.json for the spec, spelled as transformers 5.x (or,
// with LegacyRope, as the hub configs) write it for the model type.
func (s *Spec) config() map[string]any {
	text := map[string]any{
		"hidden_size":             s.Hidden,
		"num_hidden_layers":       s.Layers,
		"vocab_size":              s.Vocab,
		"num_attention_heads":     s.Heads,
		"num_key_value_heads":     s.KVHeads,
		"hidden_act":              "silu",
		"max_position_embeddings": 4096,
		"attention_bias":          false,
		"attention_dropout":       0.0,
		"initializer_range":       0.02,
		"tie_word_embeddings":     s.Tied,
		"num_experts_per_tok":     s.TopK,
		"moe_intermediate_size":   s.MoEInter,
		"router_aux_loss_coef":    0.001,
		"output_router_logits":    false,
		"use_cache":               true,
		"bos_token_id":            nil,
		"eos_token_id":            EOS,
		"pad_token_id":            nil,
	}
	if !s.OmitHeadDim {
		text["head_dim"] = s.HeadDim
	}
	text["rms_norm_eps"] = 1e-6
	if s.RMSNormEps != 0 {
		text["rms_norm_eps"] = s.RMSNormEps
	}
	expertsKey := "num_experts"
	if s.NumLocalExperts {
		expertsKey = "num_local_experts"
	}
	text[expertsKey] = s.Experts
	if s.DenseInter > 0 {
		text["intermediate_size"] = s.DenseInter
	}

	rope := map[string]any{"rope_type": "default"}
	if s.RopeTheta != 0 {
		if s.LegacyRope {
			text["rope_theta"] = s.RopeTheta
			text["rope_scaling"] = nil
		} else {
			rope["rope_theta"] = s.RopeTheta
		}
	}
	if s.PartialRotary != 0 {
		if s.LegacyRope {
			text["partial_rotary_factor"] = s.PartialRotary
		} else {
			rope["partial_rotary_factor"] = s.PartialRotary
			if !s.PartialInRopeOnly {
				// transformers 5.x also keeps the attribute at the text level.
				text["partial_rotary_factor"] = s.PartialRotary
			}
		}
	}
	if s.family() == Qwen35MoE && !s.LegacyRope {
		rope["mrope_interleaved"] = true
		// Interleaved M-RoPE sections over the R/2 frequency slots (text-only
		// input makes them irrelevant, but real configs carry them).
		partial := s.PartialRotary
		if partial == 0 {
			partial = 0.25
		}
		n := int(float64(s.HeadDim)*partial) / 2
		rope["mrope_section"] = []int{(n + 2) / 3, (n + 1) / 3, n / 3}
	}
	if !s.LegacyRope {
		text["rope_parameters"] = rope
	}

	if s.family() != Qwen35MoE {
		text["norm_topk_prob"] = s.NormTopK
		mlpOnly := s.MLPOnlyLayers
		if mlpOnly == nil {
			mlpOnly = []int{}
		}
		text["mlp_only_layers"] = mlpOnly
		step := s.DecoderSparseStep
		if step == 0 {
			step = 1
		}
		text["decoder_sparse_step"] = step
	}
	if s.family() == Qwen3MoE {
		text["use_sliding_window"] = false
		text["sliding_window"] = nil
	}
	if s.hybrid() {
		text["linear_num_key_heads"] = s.LinearKeyHeads
		text["linear_num_value_heads"] = s.LinearValueHeads
		text["linear_key_head_dim"] = s.LinearKeyDim
		text["linear_value_head_dim"] = s.LinearValueDim
		text["linear_conv_kernel_dim"] = s.convKernel()
		text["shared_expert_intermediate_size"] = s.SharedInter
		if s.LayerTypes != nil {
			text["layer_types"] = s.LayerTypes
		}
		if s.FullAttentionInterval != 0 {
			text["full_attention_interval"] = s.FullAttentionInterval
		}
	}

	switch s.ModelType {
	case Qwen3MoE:
		text["architectures"] = []string{"Qwen3MoeForCausalLM"}
	case Qwen3Next:
		text["architectures"] = []string{"Qwen3NextForCausalLM"}
	case Qwen35MoEText:
		text["architectures"] = []string{"Qwen3_5MoeForCausalLM"}
	case Qwen35MoE:
		text["model_type"] = Qwen35MoEText
		top := map[string]any{
			"architectures":         []string{"Qwen3_5MoeForConditionalGeneration"},
			"model_type":            Qwen35MoE,
			"dtype":                 "bfloat16",
			"text_config":           text,
			"tie_word_embeddings":   s.Tied,
			"image_token_id":        248056,
			"video_token_id":        248057,
			"vision_start_token_id": 248053,
			"vision_end_token_id":   248054,
			"transformers_version":  "5.17.0",
			"vision_config": map[string]any{
				"model_type": "qwen3_5_moe_vision", "depth": 1, "hidden_size": 32, "intermediate_size": 64,
				"num_heads": 2, "out_hidden_size": s.Hidden, "patch_size": 16, "spatial_merge_size": 2,
				"temporal_patch_size": 2, "in_channels": 3,
			},
		}
		return top
	}
	text["model_type"] = s.ModelType
	text["dtype"] = "bfloat16"
	text["transformers_version"] = "5.17.0"
	return text
}
