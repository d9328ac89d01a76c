package checkpoint

import (
	"fmt"
	"testing"
)

// TestParseConfigHeadDimDefault: a config without head_dim gets the class
// default — hidden/heads for qwen3_moe, but 256 for qwen3_next and
// qwen3_5_moe_text whatever hidden/heads is (transformers'
// Qwen3NextConfig.head_dim and Qwen3_5MoeTextConfig.head_dim default to 256).
func TestParseConfigHeadDimDefault(t *testing.T) {
	cases := []struct {
		modelType, extra string
		want             int
	}{
		{"qwen3_moe", "", 48},
		{"qwen3_next", `"linear_num_key_heads": 2, "linear_num_value_heads": 4,`, 256},
		{"qwen3_5_moe_text", `"linear_num_key_heads": 2, "linear_num_value_heads": 4,`, 256},
		{"qwen3_next", `"head_dim": 64, "linear_num_key_heads": 2, "linear_num_value_heads": 4,`, 64},
	}
	for _, c := range cases {
		cfg := fmt.Sprintf(`{"model_type": %q, "hidden_size": 192, "num_attention_heads": 4, "num_key_value_heads": 1,
			"num_hidden_layers": 4, "vocab_size": 4032, "num_experts": 8, "num_experts_per_tok": 2,
			"moe_intermediate_size": 64, "shared_expert_intermediate_size": 64, %s "eos_token_id": 1}`, c.modelType, c.extra)
		got, err := ParseConfig([]byte(cfg), nil)
		if err != nil {
			t.Fatalf("%s: %v", c.modelType, err)
		}
		if got.HeadDim != c.want || got.RotaryDim != int(float64(c.want)*got.PartialRotaryFactor) {
			t.Errorf("%s %s: head dim %d (rotary %d), want %d", c.modelType, c.extra, got.HeadDim, got.RotaryDim, c.want)
		}
	}
}
