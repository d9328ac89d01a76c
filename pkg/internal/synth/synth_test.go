package synth_test

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/fm-moe/fm/pkg/internal/refmodel"
	"github.com/fm-moe/fm/pkg/internal/synth"
	"github.com/fm-moe/fm/pkg/safetensors"
)

const tokenizerDir = "../../../testdata/golden/tokenizer-tiny"

func small(modelType string) synth.Spec {
	s := synth.Spec{
		Name: "small-" + modelType, ModelType: modelType,
		Hidden: 128, Layers: 3, Vocab: 4032, Heads: 4, KVHeads: 2, HeadDim: 64,
		Experts: 8, TopK: 3, MoEInter: 64, NormTopK: true, Seed: 3, TokenizerDir: tokenizerDir,
	}
	if modelType != synth.Qwen3MoE {
		s.LinearKeyHeads, s.LinearValueHeads, s.LinearKeyDim, s.LinearValueDim = 1, 2, 64, 32
		s.SharedInter = 64
		s.LayerTypes = []string{"linear_attention", "full_attention", "linear_attention"}
	}
	return s
}

func logits(t *testing.T, dir string) [][]float64 {
	t.Helper()
	m, err := refmodel.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := m.Forward([]int{1, 200, 3000, 17, 4001, 9})
	if err != nil {
		t.Fatal(err)
	}
	return tr.Logits
}

// TestLayoutsHoldTheSameModel: per-expert and fused expert tensors, one file
// or several shards, carry the same weights, so the reference computes the
// same logits bit for bit; the 8-bit MLX form of the same spec is the same
// model up to quantization noise.
func TestLayoutsHoldTheSameModel(t *testing.T) {
	for _, mt := range []string{synth.Qwen3MoE, synth.Qwen3Next, synth.Qwen35MoE} {
		t.Run(mt, func(t *testing.T) {
			base := small(mt)
			dir := t.TempDir()
			write := func(name string, s synth.Spec, mlx bool) string {
				p := filepath.Join(dir, name)
				w := synth.WriteHF
				if mlx {
					w = synth.WriteMLX
				}
				if err := w(p, s); err != nil {
					t.Fatal(err)
				}
				return p
			}
			want := logits(t, write("per-expert", base, false))
			fused := base
			fused.FusedExperts, fused.Shards = true, 3
			if got := logits(t, write("fused", fused, false)); !equal(got, want) {
				t.Errorf("fused, sharded checkpoint computes other logits than the per-expert one")
			}
			// The 8-bit MLX form must be the same model up to quantization
			// noise, which routing flips amplify in random models: far closer
			// to it than a model drawn from another seed.
			q8 := base
			q8.MLXBits = 8
			other := base
			other.Seed++
			near := relErr(logits(t, write("mlx8", q8, true)), want)
			far := relErr(logits(t, write("other", other, false)), want)
			if near > 0.25 || near > far/4 {
				t.Errorf("8-bit MLX form differs from the bf16 model by %.3g (relative); another seed by %.3g", near, far)
			}
			t.Logf("8-bit MLX form: %.3g; another seed: %.3g", near, far)
		})
	}
}

func relErr(got, want [][]float64) float64 {
	var worst float64
	for r := range want {
		row := make([]float32, len(got[r]))
		for i, v := range got[r] {
			row[i] = float32(v)
		}
		worst = math.Max(worst, refmodel.CompareRow(row, want[r]).RelErr)
	}
	return worst
}

func equal(a, b [][]float64) bool {
	for r := range a {
		for i := range a[r] {
			if a[r][i] != b[r][i] {
				return false
			}
		}
	}
	return len(a) == len(b)
}

// TestShardedIndex: every tensor is in the index, under the shard that holds it.
func TestShardedIndex(t *testing.T) {
	s := small(synth.Qwen35MoE)
	s.Shards, s.MTP, s.Vision = 4, true, true
	dir := t.TempDir()
	if err := synth.WriteHF(dir, s); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, safetensors.IndexName))
	if err != nil {
		t.Fatal(err)
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	files := map[string]bool{}
	for name, file := range idx.WeightMap {
		f, err := safetensors.Open(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		if f.Tensor(name) == nil {
			t.Errorf("%s: index says %s holds it", name, file)
		}
		f.Close()
		files[file] = true
	}
	if len(files) != 4 {
		t.Errorf("%d shards, want 4", len(files))
	}
	for _, name := range []string{"model.language_model.embed_tokens.weight", "lm_head.weight", "mtp.fc.weight", "model.visual.blocks.0.attn.qkv.weight"} {
		if idx.WeightMap[name] == "" {
			t.Errorf("%s missing from the index", name)
		}
	}
}

func TestValidate(t *testing.T) {
	cases := map[string]func(*synth.Spec){
		"unknown type":       func(s *synth.Spec) { s.ModelType = "llama" },
		"heads not grouped":  func(s *synth.Spec) { s.KVHeads = 3 },
		"top-k > experts":    func(s *synth.Spec) { s.TopK = 9 },
		"linear heads":       func(s *synth.Spec) { s.LinearKeyHeads, s.LinearValueHeads = 2, 3 },
		"no shared expert":   func(s *synth.Spec) { s.SharedInter = 0 },
		"layer types":        func(s *synth.Spec) { s.LayerTypes = s.LayerTypes[:2] },
		"dense without size": func(s *synth.Spec) { s.MLPOnlyLayers = []int{1} },
		"head dim omitted":   func(s *synth.Spec) { s.OmitHeadDim = true },
		"vision on next":     func(s *synth.Spec) { s.Vision = true },
		"dtype":              func(s *synth.Spec) { s.DType = "I8" },
		"no tokenizer":       func(s *synth.Spec) { s.TokenizerDir = "" },
	}
	for name, edit := range cases {
		s := small(synth.Qwen3Next)
		edit(&s)
		if err := s.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, s)
		}
	}
	s := small(synth.Qwen3Next)
	if err := s.Validate(); err != nil {
		t.Errorf("valid spec rejected: %v", err)
	}
}
