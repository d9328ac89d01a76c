package model_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fm-moe/fm/pkg/internal/hfload"
	"github.com/fm-moe/fm/pkg/layout"
	"github.com/fm-moe/fm/pkg/model"
)

// damagedWeights serves one tensor part filled with 0xff bytes: NaN in
// bf16, f16 and f32 alike.
type damagedWeights struct {
	model.Weights
	part layout.Part
}

func (w damagedWeights) Bytes(p layout.Part) []byte {
	b := w.Weights.Bytes(p)
	if p.Offset == w.part.Offset && p.Size == w.part.Size {
		return bytes.Repeat([]byte{0xff}, len(b))
	}
	return b
}

// damagedExperts serves one expert of one layer with its gate_proj scales
// (or data, unquantized) filled with 0xff bytes.
type damagedExperts struct {
	model.Experts
	layer, id int
}

func (e damagedExperts) FetchExperts(ctx context.Context, layer int, ids []int) ([][]byte, func(), error) {
	data, release, err := e.Experts.FetchExperts(ctx, layer, ids)
	if err != nil || layer != e.layer {
		return data, release, err
	}
	for i, id := range ids {
		if id == e.id {
			c := e.ExpertSet().Component("gate_proj")
			p := c.Data
			if c.Quant != nil {
				p = c.Quant.Scales
			}
			buf := slices.Clone(data[i])
			copy(buf[p.Offset:p.Offset+p.Size], bytes.Repeat([]byte{0xff}, int(p.Size)))
			data[i] = buf
		}
	}
	return data, release, nil
}

// TestNonFiniteStops: damaged weights that turn activations into NaN stop
// Forward with a NonFiniteError naming the layer and block — and the routed
// expert, when one is to blame — on the prefill and the decode paths, for a
// float and a quantized checkpoint.
func TestNonFiniteStops(t *testing.T) {
	ids := []int{17, 400, 3, 999, 2500}
	for _, src := range []string{"hf", "mlx4"} {
		ck, err := hfload.Load(filepath.Join(goldenDir, "qwen35moe-tiny", src))
		if err != nil {
			t.Fatal(err)
		}
		cfg := &ck.Config
		attnLayer := slices.Index(cfg.LayerTypes, layout.FullAttention)
		deltaLayer := slices.Index(cfg.LayerTypes, layout.LinearAttention)
		if attnLayer < 0 || deltaLayer < 0 {
			t.Fatalf("%s: want both kinds of layer, have %v", src, cfg.LayerTypes)
		}
		// The expert that the first token routes to in the last layer.
		last := cfg.NumLayers - 1
		var routed int
		probe, err := model.New(cfg, ck, ck, model.Options{OnRoute: func(layer int, ids [][]int) {
			if layer == last {
				routed = ids[0][0]
			}
		}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := probe.Forward(t.Context(), probe.NewState(), ids[:1], false); err != nil {
			t.Fatal(err)
		}
		scalesOr := func(name string) layout.Part {
			tt := ck.Tensor(name)
			if tt.Quant != nil {
				return tt.Quant.Scales
			}
			return tt.Data
		}
		for _, tc := range []struct {
			name    string
			weights model.Weights
			experts model.Experts
			want    model.NonFiniteError
		}{
			{"o_proj", damagedWeights{ck, scalesOr(layerName(attnLayer, "self_attn.o_proj"))}, ck,
				model.NonFiniteError{Layer: attnLayer, Block: "full attention", Expert: -1}},
			{"out_proj", damagedWeights{ck, scalesOr(layerName(deltaLayer, "linear_attn.out_proj"))}, ck,
				model.NonFiniteError{Layer: deltaLayer, Block: "linear attention", Expert: -1}},
			{"shared expert", damagedWeights{ck, scalesOr(layerName(last, "mlp.shared_expert.down_proj"))}, ck,
				model.NonFiniteError{Layer: last, Block: "shared expert", Expert: -1}},
			{"routed expert", ck, damagedExperts{ck, last, routed},
				model.NonFiniteError{Layer: last, Block: "routed expert", Expert: routed}},
			{"lm_head", damagedWeights{ck, scalesOr("lm_head")}, ck,
				model.NonFiniteError{Layer: -1, Block: "final norm and lm_head", Expert: -1}},
		} {
			t.Run(src+"/"+tc.name, func(t *testing.T) {
				m, err := model.New(cfg, tc.weights, tc.experts, model.Options{})
				if err != nil {
					t.Fatal(err)
				}
				for _, path := range []struct {
					name string
					run  func() error
				}{
					{"prefill", func() error { _, err := m.Forward(t.Context(), m.NewState(), ids, true); return err }},
					{"decode", func() error {
						st := m.NewState()
						for _, id := range ids {
							if _, err := m.Forward(t.Context(), st, []int{id}, false); err != nil {
								// The half-done step's state is refused until Reset.
								if _, again := m.Forward(t.Context(), st, []int{id}, false); again == nil || !strings.Contains(again.Error(), "Reset") {
									t.Errorf("Forward on the state of a failed step: %v, want an error asking for Reset", again)
								}
								return err
							}
						}
						return nil
					}},
				} {
					err := path.run()
					var nf *model.NonFiniteError
					if !errors.As(err, &nf) {
						t.Fatalf("%s: error %v, want a NonFiniteError", path.name, err)
					}
					got := *nf
					got.Position = 0 // where NaN first shows depends on the weights
					if got != tc.want {
						t.Errorf("%s: %+v, want %+v", path.name, got, tc.want)
					}
					if !strings.Contains(err.Error(), "non-finite") {
						t.Errorf("%s: message %q does not say what happened", path.name, err)
					}
					t.Logf("%s: %v", path.name, err)
				}
			})
		}
	}
}

func layerName(i int, name string) string { return fmt.Sprintf("layers.%d.%s", i, name) }
