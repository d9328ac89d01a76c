package quant

import (
	"math"
	"testing"

	"github.com/fm-moe/fm/pkg/safetensors"
)

// The golden mlx4 checkpoints hold the hf/ bf16 weights quantized by an MLX
// conversion. Dequantizing them with this package's packing and formula must
// land within one quantization step of the bf16 originals for every element,
// and within half a step for most: a wrong nibble order, row layout or
// scale/bias pairing fails this at once. (Their codes were chosen with the older
// min/max rule, scale = (max−min)/n and bias = min, so they are not compared
// bit for bit with Quantize.)
func TestDequantizeMLXGolden(t *testing.T) {
	const dir = "../../testdata/golden/qwen3moe-tiny/"
	hf, err := safetensors.OpenDir(dir + "hf")
	if err != nil {
		t.Fatal(err)
	}
	defer hf.Close()
	mlx, err := safetensors.OpenDir(dir + "mlx4")
	if err != nil {
		t.Fatal(err)
	}
	defer mlx.Close()
	read := func(c *safetensors.Checkpoint, name string) []byte {
		tt := c.Tensor(name)
		if tt == nil {
			t.Fatalf("tensor %q missing", name)
		}
		b, err := tt.ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, c := range []struct {
		hf, mlx string
		bits    int
	}{
		{"model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.q_proj", 4},
		{"model.layers.1.self_attn.o_proj.weight", "model.layers.1.self_attn.o_proj", 4},
		{"model.embed_tokens.weight", "model.embed_tokens", 4},
		{"model.layers.2.mlp.gate.weight", "model.layers.2.mlp.gate", 8},
	} {
		tt := hf.Tensor(c.hf)
		rows, cols := int(tt.Shape[0]), int(tt.Shape[1])
		want := make([]float32, rows*cols)
		if err := DecodeFloats(want, read(hf, c.hf), "BF16"); err != nil {
			t.Fatal(err)
		}
		got := make([]float32, rows*cols)
		scales := read(mlx, c.mlx+".scales")
		if err := DequantizeBytes(got, read(mlx, c.mlx+".weight"), scales, read(mlx, c.mlx+".biases"), "BF16", rows, cols, c.bits, 64); err != nil {
			t.Fatal(err)
		}
		s := make([]float32, rows*cols/64)
		DecodeFloats(s, scales, "BF16")
		within := 0
		for i := range want {
			step := math.Abs(float64(s[i/64]))
			d := math.Abs(float64(got[i] - want[i]))
			if d > step*1.01 {
				t.Fatalf("%s element %d: dequantized %v, bf16 %v, step %v", c.mlx, i, got[i], want[i], step)
			}
			if d <= step*0.51 {
				within++
			}
		}
		if within < len(want)*99/100 {
			t.Fatalf("%s: only %d of %d elements within half a step", c.mlx, within, len(want))
		}
	}
}
