package model

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/fm-moe/fm/pkg/backend/cpu"
	"github.com/fm-moe/fm/pkg/internal/hfload"
	"github.com/fm-moe/fm/pkg/layout"
)

// kernelMatrix is the CPU kernels' view of a weight tensor, for reading rows
// in the reference computations.
func kernelMatrix(t *testing.T, w Weights, name string, rows, cols int) *cpu.Matrix {
	t.Helper()
	tt := w.Tensor(name)
	desc, err := describe(tt, rows, cols)
	if err != nil {
		t.Fatal(err)
	}
	var scales, biases []byte
	if q := tt.Quant; q != nil {
		scales, biases = w.Bytes(q.Scales), w.Bytes(q.Biases)
	}
	m, err := cpu.View(desc, w.Bytes(tt.Data), scales, biases)
	if err != nil {
		t.Fatal(err)
	}
	return &m
}

// aliasWeights serves some tensors under other names.
type aliasWeights struct {
	w     Weights
	alias map[string]string
}

func (a aliasWeights) Tensor(name string) *layout.Tensor {
	if src, ok := a.alias[name]; ok {
		t := *a.w.Tensor(src)
		t.Name = name
		return &t
	}
	return a.w.Tensor(name)
}

func (a aliasWeights) Bytes(p layout.Part) []byte { return a.w.Bytes(p) }

// TestDenseMLPLayer: a dense (mlp_only) layer computes down(silu(gate x) ⊙ up x),
// checked against a float64 evaluation of the dequantized weights, for float
// and quantized weights. (No golden model has dense layers, so the layer is
// made from a shared expert's tensors.)
func TestDenseMLPLayer(t *testing.T) {
	for _, src := range []string{"hf", "mlx4"} {
		ck, err := hfload.Load(filepath.Join("../../testdata/golden/qwen35moe-tiny", src))
		if err != nil {
			t.Fatal(err)
		}
		cfg := ck.Config
		cfg.SparseLayers = append([]bool(nil), cfg.SparseLayers...)
		cfg.SparseLayers[1] = false
		cfg.IntermediateSize = cfg.SharedExpertIntermediateSize
		w := aliasWeights{ck, map[string]string{
			"layers.1.mlp.gate_proj": "layers.1.mlp.shared_expert.gate_proj",
			"layers.1.mlp.up_proj":   "layers.1.mlp.shared_expert.up_proj",
			"layers.1.mlp.down_proj": "layers.1.mlp.shared_expert.down_proj",
		}}
		m, err := New(&cfg, w, ck, Options{})
		if err != nil {
			t.Fatal(err)
		}
		l := m.layers[1]
		if l.sparse {
			t.Fatal("layer 1 is still sparse")
		}
		H, I, T := cfg.HiddenSize, cfg.IntermediateSize, 3
		rng := rand.New(rand.NewPCG(1, 2))
		x := make([]float32, T*H)
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		xin, _ := m.dev.NewTensor(T, H)
		ot, _ := m.dev.NewTensor(T, H)
		m.dev.Upload(xin, x)
		m.dev.MLP(ot, xin, l.mlpGate, l.mlpUp, l.mlpDown)
		out := make([]float32, T*H)
		if err := m.dev.Download(out, ot); err != nil {
			t.Fatal(err)
		}
		gate := kernelMatrix(t, w, "layers.1.mlp.gate_proj", I, H)
		up := kernelMatrix(t, w, "layers.1.mlp.up_proj", I, H)
		down := kernelMatrix(t, w, "layers.1.mlp.down_proj", H, I)

		row := make([]float32, H)
		for tok := 0; tok < T; tok++ {
			xt := x[tok*H : (tok+1)*H]
			h := make([]float64, I)
			for i := 0; i < I; i++ {
				var g, u float64
				gate.Row(row, i)
				for c, v := range row {
					g += float64(v) * float64(xt[c])
				}
				up.Row(row, i)
				for c, v := range row {
					u += float64(v) * float64(xt[c])
				}
				h[i] = g / (1 + math.Exp(-g)) * u
			}
			downRow := make([]float32, I)
			for o := 0; o < H; o++ {
				down.Row(downRow, o)
				var want, mag float64
				for i, v := range downRow {
					want += float64(v) * h[i]
					mag += math.Abs(float64(v) * h[i])
				}
				if got := float64(out[tok*H+o]); math.Abs(got-want) > 1e-4*mag+1e-5 {
					t.Fatalf("%s token %d out[%d] = %g, want %g", src, tok, o, got, want)
				}
			}
		}
		// The whole model runs with the dense layer in place.
		if _, err := m.Forward(t.Context(), m.NewState(), []int{5, 6, 7}, true); err != nil {
			t.Fatal(err)
		}
	}
}
