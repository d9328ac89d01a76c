package bench

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/fm-moe/fm/pkg/layout"
)

// Shape is a named model's architecture: the normalized config of the whole
// model, and where its numbers come from.
type Shape struct {
	Name   string
	Config layout.Config
	// Params is the model's advertised size, for messages ("30B total, 3B active").
	Params string
	// Source says where the numbers were read, and what had to be assumed.
	Source string
}

// intervalLayers returns the Qwen3-Next / Qwen3.5 layer pattern: layer i is
// full attention iff (i+1) % interval == 0, the rest GatedDeltaNet.
func intervalLayers(n, interval int) []string {
	t := make([]string, n)
	for i := range t {
		t[i] = layout.LinearAttention
		if (i+1)%interval == 0 {
			t[i] = layout.FullAttention
		}
	}
	return t
}

func fullLayers(n int) []string {
	t := make([]string, n)
	for i := range t {
		t[i] = layout.FullAttention
	}
	return t
}

func allSparse(n int) []bool {
	s := make([]bool, n)
	for i := range s {
		s[i] = true
	}
	return s
}

// qwen3MoE is a qwen3_moe config (every layer full attention and sparse).
func qwen3MoE(layers, hidden, heads, kv, headDim, experts, k, moe, inter, maxPos int, theta float64) layout.Config {
	return layout.Config{
		Arch: layout.ArchQwen3MoE, SourceModelType: "qwen3_moe",
		VocabSize: 151936, HiddenSize: hidden, NumLayers: layers, RMSNormEps: 1e-6, MaxPositionEmbeddings: maxPos,
		LayerTypes: fullLayers(layers), SparseLayers: allSparse(layers),
		NumAttentionHeads: heads, NumKeyValueHeads: kv, HeadDim: headDim, RopeTheta: theta,
		PartialRotaryFactor: 1, RotaryDim: headDim,
		NumExperts: experts, NumExpertsPerTok: k, MoEIntermediateSize: moe, NormTopKProb: true, IntermediateSize: inter,
		EOSTokenIDs: []int{151645, 151643},
	}
}

// hybrid is a qwen3_next / qwen3_5_moe config: GatedDeltaNet layers with a full
// attention layer every fourth, output-gated attention with a quarter of the
// head rotated, a shared expert in every sparse layer.
func hybrid(arch, srcType string, vocab, layers, hidden, heads, kv, nk, nv, experts, k, moe, shared, inter int, eos []int) layout.Config {
	return layout.Config{
		Arch: arch, SourceModelType: srcType,
		VocabSize: vocab, HiddenSize: hidden, NumLayers: layers, RMSNormEps: 1e-6, MaxPositionEmbeddings: 262144,
		LayerTypes: intervalLayers(layers, 4), SparseLayers: allSparse(layers),
		NumAttentionHeads: heads, NumKeyValueHeads: kv, HeadDim: 256, RopeTheta: 1e7,
		PartialRotaryFactor: 0.25, RotaryDim: 64, AttnOutputGate: true,
		LinearConvKernelDim: 4, LinearKeyHeadDim: 128, LinearValueHeadDim: 128, LinearNumKeyHeads: nk, LinearNumValueHeads: nv,
		NumExperts: experts, NumExpertsPerTok: k, MoEIntermediateSize: moe, SharedExpertIntermediateSize: shared,
		NormTopKProb: true, IntermediateSize: inter, EOSTokenIDs: eos,
	}
}

var qwen35EOS = []int{248046, 248044}

// shapes are the named models. Numbers are those of each release's
// config.json as collected in docs/reference-math.md §1.4 (the mlx-community
// model cards, vLLM / Megatron / ollama fixtures and transcribed config
// dumps, cross-checked), re-checked where a config.json or a training
// recipe could be found: Qwen3-30B-A3B's architecture in the config.json of
// Qwen3-Coder-30B-A3B-Instruct (same shapes), Qwen3-235B-A22B in MindSpeed and
// Megatron recipes (hidden 4096, 94 layers, 64/4 heads, head_dim 128, 128
// experts top-8, moe 1536).
var shapes = []Shape{
	{Name: "qwen3-30b-a3b", Params: "30B total, 3B active",
		Config: qwen3MoE(48, 2048, 32, 4, 128, 128, 8, 768, 6144, 40960, 1e6),
		Source: "Qwen/Qwen3-30B-A3B config.json"},
	{Name: "qwen3-235b-a22b", Params: "235B total, 22B active",
		Config: qwen3MoE(94, 4096, 64, 4, 128, 128, 8, 1536, 12288, 40960, 1e6),
		Source: "Qwen/Qwen3-235B-A22B config.json"},
	{Name: "qwen3-next-80b-a3b", Params: "80B total, 3B active",
		Config: hybrid(layout.ArchQwen3Next, "qwen3_next", 151936, 48, 2048, 16, 2, 16, 32, 512, 10, 512, 512, 5120, []int{151645, 151643}),
		Source: "Qwen/Qwen3-Next-80B-A3B-Instruct config.json (full_attention_interval 4)"},
	{Name: "qwen3.5-35b-a3b", Params: "35B total, 3B active",
		Config: hybrid(layout.ArchQwen35MoE, "qwen3_5_moe_text", 248320, 40, 2048, 16, 2, 16, 32, 256, 8, 512, 512, 0, qwen35EOS),
		Source: "Qwen/Qwen3.5-35B-A3B config.json text_config"},
	{Name: "qwen3.5-122b-a10b", Params: "122B total, 10B active",
		Config: hybrid(layout.ArchQwen35MoE, "qwen3_5_moe_text", 248320, 48, 3072, 32, 2, 16, 64, 256, 8, 1024, 1024, 0, qwen35EOS),
		Source: "Qwen/Qwen3.5-122B-A10B: hidden, layers, heads, experts and MoE sizes from published summaries; " +
			"its config.json was not found here, so head_dim 256, linear head dims 128, conv 4, rope and the " +
			"every-fourth-layer pattern are assumed to be the Qwen3.5 family's"},
	{Name: "qwen3.5-397b-a17b", Params: "397B total, 17B active",
		Config: hybrid(layout.ArchQwen35MoE, "qwen3_5_moe_text", 248320, 60, 4096, 32, 2, 16, 64, 512, 10, 1024, 1024, 0, qwen35EOS),
		Source: "Qwen/Qwen3.5-397B-A17B config.json text_config (and the mlx-community 4-bit card)"},
}

// Names lists the named shapes.
func Names() []string {
	var n []string
	for _, s := range shapes {
		n = append(n, s.Name)
	}
	sort.Strings(n)
	return n
}

// Lookup returns the named shape (case-insensitive).
func Lookup(name string) (Shape, error) {
	for _, s := range shapes {
		if strings.EqualFold(s.Name, name) {
			s.Config = cloneConfig(s.Config)
			return s, nil
		}
	}
	return Shape{}, fmt.Errorf("--synthetic %q: unknown model; want one of %s", name, strings.Join(Names(), ", "))
}

func cloneConfig(c layout.Config) layout.Config {
	c.LayerTypes = slices.Clone(c.LayerTypes)
	c.SparseLayers = slices.Clone(c.SparseLayers)
	c.EOSTokenIDs = slices.Clone(c.EOSTokenIDs)
	return c
}

// Truncate returns the config of the model's first n layers (same layer-type
// pattern, same everything else).
func Truncate(c layout.Config, n int) (layout.Config, error) {
	if n < 1 || n > c.NumLayers {
		return c, fmt.Errorf("--layers %d: want 1 to %d (the model's layers)", n, c.NumLayers)
	}
	c = cloneConfig(c)
	c.NumLayers = n
	c.LayerTypes = c.LayerTypes[:n]
	c.SparseLayers = c.SparseLayers[:n]
	return c, nil
}
