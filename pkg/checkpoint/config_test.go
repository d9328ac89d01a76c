package checkpoint

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/fm-moe/fm/pkg/layout"
)

func TestParseConfigGolden(t *testing.T) {
	lin, full := layout.LinearAttention, layout.FullAttention
	hybrid := []string{lin, lin, lin, full}
	all := []bool{true, true, true, true}
	cases := []struct {
		dir  string
		want layout.Config
	}{
		{testdata + "golden/qwen35moe-tiny/hf", layout.Config{Arch: "qwen3_5_moe", SourceModelType: "qwen3_5_moe",
			VocabSize: 4032, HiddenSize: 128, NumLayers: 4, RMSNormEps: 1e-6, MaxPositionEmbeddings: 4096,
			LayerTypes: hybrid, SparseLayers: all, NumAttentionHeads: 4, NumKeyValueHeads: 2, HeadDim: 64,
			RopeTheta: 1e7, PartialRotaryFactor: 0.25, RotaryDim: 16, AttnOutputGate: true,
			LinearConvKernelDim: 4, LinearKeyHeadDim: 32, LinearValueHeadDim: 48, LinearNumKeyHeads: 2, LinearNumValueHeads: 4,
			NumExperts: 16, NumExpertsPerTok: 4, MoEIntermediateSize: 64, SharedExpertIntermediateSize: 192, NormTopKProb: true,
			EOSTokenIDs: []int{4002}}},
		{testdata + "golden/qwen3next-tiny/hf", layout.Config{Arch: "qwen3_next", SourceModelType: "qwen3_next",
			VocabSize: 4032, HiddenSize: 128, NumLayers: 4, RMSNormEps: 1e-6, MaxPositionEmbeddings: 4096,
			LayerTypes: hybrid, SparseLayers: all, NumAttentionHeads: 4, NumKeyValueHeads: 2, HeadDim: 64,
			RopeTheta: 1e7, PartialRotaryFactor: 0.25, RotaryDim: 16, AttnOutputGate: true,
			LinearConvKernelDim: 4, LinearKeyHeadDim: 32, LinearValueHeadDim: 48, LinearNumKeyHeads: 2, LinearNumValueHeads: 4,
			NumExperts: 16, NumExpertsPerTok: 4, MoEIntermediateSize: 64, SharedExpertIntermediateSize: 192, NormTopKProb: true,
			EOSTokenIDs: []int{4002}}},
		{testdata + "golden/qwen3moe-tiny/hf", layout.Config{Arch: "qwen3_moe", SourceModelType: "qwen3_moe",
			VocabSize: 4032, HiddenSize: 128, NumLayers: 4, RMSNormEps: 1e-6, MaxPositionEmbeddings: 4096,
			LayerTypes: []string{full, full, full, full}, SparseLayers: all, NumAttentionHeads: 4, NumKeyValueHeads: 2, HeadDim: 32,
			RopeTheta: 1e6, PartialRotaryFactor: 1, RotaryDim: 32,
			NumExperts: 16, NumExpertsPerTok: 4, MoEIntermediateSize: 64, NormTopKProb: true,
			EOSTokenIDs: []int{4002}}},
	}
	for _, c := range cases {
		cfgJSON, _ := os.ReadFile(c.dir + "/config.json")
		genJSON, _ := os.ReadFile(c.dir + "/generation_config.json")
		got, err := ParseConfig(cfgJSON, genJSON)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", c.dir, got, c.want)
		}
		// The MLX conversion of the same model normalizes identically.
		mlxJSON, _ := os.ReadFile(strings.Replace(c.dir, "/hf", "/mlx4", 1) + "/config.json")
		if m, err := ParseConfig(mlxJSON, genJSON); err != nil || !reflect.DeepEqual(m, got) {
			t.Errorf("%s mlx4: %v %+v", c.dir, err, m)
		}
	}
	code, _ := os.ReadFile(testdata + "models/tiny-code/config.json")
	got, err := ParseConfig(code, nil)
	if err != nil || got.Arch != "qwen3_5_moe" || got.SourceModelType != "qwen3_5_moe_text" || got.NumExperts != 32 || got.LayerTypes[7] != full || got.LayerTypes[6] != lin {
		t.Fatalf("tiny-code: %v %+v", err, got)
	}
}

func TestParseConfigVariants(t *testing.T) {
	base := `"vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 8, "num_attention_heads": 4, "num_key_value_heads": 2,
		"num_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 32`
	cases := []struct {
		name, cfg, gen string
		check          func(c layout.Config) bool
		err            string
	}{
		{"next interval and old rope keys", `{"model_type": "qwen3_next", ` + base + `, "full_attention_interval": 2, "rope_theta": 5e6, "partial_rotary_factor": 0.5, "rope_scaling": null, "head_dim": 32, "eos_token_id": [7, 8], "bos_token_id": 3}`, `{"eos_token_id": [8, 9]}`,
			func(c layout.Config) bool {
				return c.LayerTypes[0] == layout.LinearAttention && c.LayerTypes[1] == layout.FullAttention && c.RopeTheta == 5e6 &&
					c.RotaryDim == 16 && reflect.DeepEqual(c.EOSTokenIDs, []int{7, 8, 9}) && *c.BOSTokenID == 3 && c.NormTopKProb && c.SharedExpertIntermediateSize == 512
			}, ""},
		{"moe defaults, num_local_experts, dense layers", `{"model_type": "qwen3_moe", "vocab_size": 100, "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "num_local_experts": 8, "num_experts_per_tok": 2, "moe_intermediate_size": 32, "mlp_only_layers": [0], "decoder_sparse_step": 2, "intermediate_size": 96}`, "",
			func(c layout.Config) bool {
				return c.NumExperts == 8 && c.HeadDim == 16 && c.RopeTheta == 10000 && c.RotaryDim == 16 && !c.NormTopKProb &&
					reflect.DeepEqual(c.SparseLayers, []bool{false, true, false, true}) && c.IntermediateSize == 96
			}, ""},
		{"3.5 partial factor outside text_config", `{"model_type": "qwen3_5_moe", "partial_rotary_factor": 0.5, "tie_word_embeddings": true, "text_config": {"model_type": "qwen3_5_moe_text", ` + base + `, "head_dim": 32, "eos_token_id": 5}}`, "",
			func(c layout.Config) bool {
				return c.RotaryDim == 16 && c.TieWordEmbeddings && c.LayerTypes[3] == layout.FullAttention && c.EOSTokenIDs[0] == 5
			}, ""},
		{"pad id", `{"model_type": "qwen3_5_moe_text", ` + base + `, "pad_token_id": 4}`, "", func(c layout.Config) bool { return *c.PadTokenID == 4 }, ""},
		{"yarn", `{"model_type": "qwen3_next", ` + base + `, "rope_parameters": {"rope_type": "yarn", "factor": 4}}`, "", nil, "rope_parameters.rope_type"},
		{"old yarn", `{"model_type": "qwen3_moe", ` + base + `, "rope_scaling": {"type": "yarn"}}`, "", nil, "rope_scaling.type"},
		{"unknown type", `{"model_type": "mixtral"}`, "", nil, `model_type "mixtral"`},
		{"no type", `{}`, "", nil, "model_type is missing"},
		{"bias", `{"model_type": "qwen3_moe", ` + base + `, "attention_bias": true}`, "", nil, "attention_bias"},
		{"act", `{"model_type": "qwen3_moe", ` + base + `, "hidden_act": "gelu"}`, "", nil, "hidden_act"},
		{"bad number", `{"model_type": "qwen3_moe", ` + base + `, "head_dim": "x"}`, "", nil, "head_dim"},
		{"text type", `{"model_type": "qwen3_5_moe", "text_config": {"model_type": "llama"}}`, "", nil, "text_config.model_type"},
		{"bad layer type", `{"model_type": "qwen3_next", ` + base + `, "layer_types": ["linear_attention", "x", "a", "b", "c", "d", "e", "f"]}`, "", nil, "layer_types[1]"},
		{"malformed", `{"model_type": `, "", nil, "malformed JSON"},
		{"bad eos", `{"model_type": "qwen3_moe", ` + base + `, "eos_token_id": "x"}`, "", nil, "eos_token_id"},
	}
	for _, c := range cases {
		var gen []byte
		if c.gen != "" {
			gen = []byte(c.gen)
		}
		got, err := ParseConfig([]byte(c.cfg), gen)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: err = %v, want %q", c.name, err, c.err)
			}
			continue
		}
		if err != nil || !c.check(got) {
			t.Errorf("%s: %v %+v", c.name, err, got)
		}
	}
}

func TestParseQuantization(t *testing.T) {
	b, _ := os.ReadFile(testdata + "golden/qwen35moe-tiny/mlx4/config.json")
	q, err := ParseQuantization(b)
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := q.For("language_model.model.layers.2.mlp.shared_expert_gate"); !ok || p.Bits != 8 {
		t.Fatalf("override: %v %v", p, ok)
	}
	if p, ok := q.For("language_model.model.layers.2.mlp.switch_mlp.up_proj"); !ok || p.Bits != 4 || p.GroupSize != 64 {
		t.Fatalf("global: %v %v", p, ok)
	}
	for _, c := range []struct{ cfg, err string }{
		{`{"quantization": {"bits": 4, "group_size": 64, "mode": "mxfp4"}}`, "mode"},
		{`{"quantization": {"bits": 7, "group_size": 64}}`, "bits 7"},
		{`{"quantization": {"bits": 4, "group_size": 64, "m.x": {"bits": 4, "group_size": 48}}}`, "m.x.group_size"},
		{`{"quantization_config": {"quant_method": "fp8"}}`, "quant_method"},
	} {
		if _, err := ParseQuantization([]byte(c.cfg)); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%s: err = %v", c.cfg, err)
		}
	}
	q, err = ParseQuantization([]byte(`{"quantization": {"bits": 4, "group_size": 64, "lm_head": false}}`))
	if _, ok := q.For("lm_head"); err != nil || ok {
		t.Fatal("false override means not quantized")
	}
	if q, err := ParseQuantization([]byte(`{}`)); q != nil || err != nil {
		t.Fatal("no quantization")
	}
}
