package checkpoint

import (
	"context"
	"fmt"
	"math"
	"os"
	"testing"

	"github.com/fm-moe/fm/pkg/layout"
	"github.com/fm-moe/fm/pkg/quant"
	"github.com/fm-moe/fm/pkg/safetensors"
)

// From a bf16 source, --bits 4/8 (extract) and 2/4/8 (repack) quantize the
// large matrices. Dequantizing them must stay within the affine error bound
// (1.5 steps at clamped ends, half a step elsewhere, plus the bf16 rounding of
// scales and biases); routers, norms, conv and gates stay exact.
func TestQuantizedReadBack(t *testing.T) {
	for _, c := range []struct {
		src        string
		dense, exp int
	}{
		{testdata + "golden/qwen3next-tiny/hf", 4, 2},
		{testdata + "golden/qwen3moe-tiny/hf", 8, 4},
		{testdata + "golden/qwen35moe-tiny/hf", 4, 8},
	} {
		t.Run(fmt.Sprintf("%s-%d-%d", c.src[len(testdata)+7:], c.dense, c.exp), func(t *testing.T) {
			out := t.TempDir()
			ctx := context.Background()
			if _, err := Extract(ctx, c.src, out, Options{Bits: c.dense}); err != nil {
				t.Fatal(err)
			}
			if _, err := Repack(ctx, c.src, out, Options{Bits: c.exp}); err != nil {
				t.Fatal(err)
			}
			if p, err := layout.Verify(ctx, out, 0, nil); err != nil || len(p) > 0 {
				t.Fatalf("verify: %v %v", p, err)
			}
			d, err := layout.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			src := openSource(t, c.src)
			cfg := &d.Manifest.Config
			nQuant := 0
			for _, tt := range d.Manifest.Tensors {
				leaf := tt.Name[len(tt.Name)-len("gate"):]
				if tt.Quant == nil {
					if len(tt.Shape) == 2 && tt.Shape[1]%64 == 0 && leaf != "gate" && tt.Data.DType != "F32" && !contains(tt.Name, "conv1d") {
						t.Fatalf("%s: matrix left unquantized", tt.Name)
					}
					continue
				}
				if leaf == "gate" {
					t.Fatalf("%s: router/gate must stay exact", tt.Name)
				}
				if tt.Quant.Bits != c.dense || tt.Quant.Scales.DType != "BF16" {
					t.Fatalf("%s: %d-bit %s", tt.Name, tt.Quant.Bits, tt.Quant.Scales.DType)
				}
				nQuant++
				var ref []float32
				if cfg.Arch == layout.ArchQwen3Next && contains(tt.Name, "in_proj_") {
					continue // row permutation is covered bit-exactly by TestConvertReadBack
				}
				st := src.find(tt.Name, "weight")
				ref = floats(t, src, st)
				checkQuantized(t, tt.Name, ref, d.Bytes(tt.Data), d.Bytes(tt.Quant.Scales), d.Bytes(tt.Quant.Biases), tt.Shape, tt.Quant)
			}
			if nQuant == 0 {
				t.Fatal("nothing quantized")
			}
			set := d.Manifest.ExpertSet(layout.ExpertsDir)
			if set.Bits != c.exp {
				t.Fatalf("expert set bits %d", set.Bits)
			}
			for _, l := range []int{0, cfg.NumLayers - 1} {
				for _, e := range []int{0, cfg.NumExperts - 1} {
					b, err := os.ReadFile(set.Path(out, l, e))
					if err != nil {
						t.Fatal(err)
					}
					for _, comp := range set.Components {
						st := src.find(fmt.Sprintf("layers.%d.mlp.experts.%d.%s", l, e, comp.Name), "weight")
						q := comp.Quant
						checkQuantized(t, fmt.Sprintf("layer %d expert %d %s", l, e, comp.Name), floats(t, src, st),
							b[comp.Data.Offset:comp.Data.Offset+comp.Data.Size], b[q.Scales.Offset:q.Scales.Offset+q.Scales.Size], b[q.Biases.Offset:q.Biases.Offset+q.Biases.Size], comp.Shape, q)
					}
				}
			}
		})
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func floats(t *testing.T, src *source, st *safetensors.Tensor) []float32 {
	t.Helper()
	v := make([]float32, st.NumElements())
	if err := quant.DecodeFloats(v, src.bytes(st), string(st.DType)); err != nil {
		t.Fatal(err)
	}
	return v
}

func checkQuantized(t *testing.T, name string, ref []float32, codes, scales, biases []byte, shape []int64, q *layout.Quant) {
	t.Helper()
	rows, cols := int(shape[0]), int(shape[1])
	got := make([]float32, rows*cols)
	if err := quant.DequantizeBytes(got, codes, scales, biases, q.Scales.DType, rows, cols, q.Bits, q.GroupSize); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	s := make([]float32, rows*cols/q.GroupSize)
	b := make([]float32, len(s))
	quant.DecodeFloats(s, scales, q.Scales.DType)
	quant.DecodeFloats(b, biases, q.Scales.DType)
	n := float64(int(1)<<q.Bits - 1)
	var worst float64
	for i := range ref {
		g := i / q.GroupSize
		step, bias := math.Abs(float64(s[g])), math.Abs(float64(b[g]))
		bound := 1.5*step + (n*step+bias)/256 + 1e-6
		d := math.Abs(float64(got[i] - ref[i]))
		if d > bound {
			t.Fatalf("%s element %d: dequantized %v, source %v (bound %g)", name, i, got[i], ref[i], bound)
		}
		worst = max(worst, d/max(step, 1e-12))
	}
	if worst > 1.51 {
		t.Fatalf("%s: worst error %.3f steps", name, worst)
	}
}
