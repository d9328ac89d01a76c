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

	"github.com/fm-moe/fm/pkg/backend"
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

func (e damagedExperts) FetchExperts(ctx context.Context, layer int, ids []int, data [][]byte) (func(), error) {
	release, err := e.Experts.FetchExperts(ctx, layer, ids, data)
	if err != nil || layer != e.layer {
		return release, err
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
	return release, nil
}

// deferringDevice gives a device without backend.NonFiniteMarker one made of
// its NonFinite, so the model's deferred checks run on the CPU too.
type deferringDevice struct{ backend.Device }

func (d deferringDevice) NewMarks(n int) (backend.Marks, error) {
	m := &hostMarks{d: d.Device, rows: make([]int, n)}
	m.reset()
	return m, nil
}

type hostMarks struct {
	d    backend.Device
	rows []int
	err  error
}

func (m *hostMarks) reset() {
	for i := range m.rows {
		m.rows[i] = -1
	}
}

func (m *hostMarks) Mark(i int, x backend.Tensor) {
	r, err := m.d.NonFinite(x)
	if err != nil && m.err == nil {
		m.err = err
	}
	if r >= 0 && (m.rows[i] < 0 || r < m.rows[i]) {
		m.rows[i] = r
	}
}

func (m *hostMarks) Read(dst []int) error {
	copy(dst, m.rows)
	m.reset()
	return m.err
}

func (m *hostMarks) Release() {}

// TestNonFiniteStops: damaged weights that turn activations into NaN stop
// Forward with a NonFiniteError naming the layer and block — and the routed
// expert, when one is to blame — on the prefill and the decode paths, for a
// float and a quantized checkpoint, with the checks made at once and deferred
// (backend.NonFiniteMarker).
func TestNonFiniteStops(t *testing.T) {
	cpu, err := backend.Open("cpu", backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cpu.Close()
	for _, dev := range []struct {
		name string
		d    backend.Device
	}{{"auto", nil}, {"deferred", deferringDevice{cpu}}} {
		t.Run(dev.name, func(t *testing.T) { testNonFiniteStops(t, dev.d) })
	}
}

func testNonFiniteStops(t *testing.T, dev backend.Device) {
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
		// The experts that the first token routes to in the first and the
		// last layer (a first layer's check is read after the second ran).
		last := cfg.NumLayers - 1
		if !cfg.SparseLayers[0] || !cfg.SparseLayers[last] {
			t.Fatalf("%s: want sparse first and last layers", src)
		}
		var routed, routed0 int
		probe, err := model.New(cfg, ck, ck, model.Options{Device: dev, OnRoute: func(layer int, ids [][]int) {
			switch layer {
			case last:
				routed = ids[0][0]
			case 0:
				routed0 = ids[0][0]
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
			{"routed expert of layer 0", ck, damagedExperts{ck, 0, routed0},
				model.NonFiniteError{Layer: 0, Block: "routed expert", Expert: routed0}},
			{"lm_head", damagedWeights{ck, scalesOr("lm_head")}, ck,
				model.NonFiniteError{Layer: -1, Block: "final norm and lm_head", Expert: -1}},
		} {
			t.Run(src+"/"+tc.name, func(t *testing.T) {
				m, err := model.New(cfg, tc.weights, tc.experts, model.Options{Device: dev})
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
