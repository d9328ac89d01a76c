package refmodel

import (
	"encoding/binary"
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/fm-moe/fm/pkg/safetensors"
)

const goldenDir = "../../../testdata/golden"

// readReference returns p{i}.ids and p{i}.logits ([T][V] as float32 rows)
// from a transformers reference file.
func readReference(t *testing.T, path string, prompt int) ([]int, [][]float32) {
	t.Helper()
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	idT := f.Tensor(fmt.Sprintf("p%d.ids", prompt))
	lgT := f.Tensor(fmt.Sprintf("p%d.logits", prompt))
	if idT == nil || lgT == nil || idT.DType != safetensors.I64 || lgT.DType != safetensors.F32 {
		t.Fatalf("%s: prompt %d: want I64 ids and F32 logits", path, prompt)
	}
	ib, err := idT.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	lb, err := lgT.ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]int, len(ib)/8)
	for i := range ids {
		ids[i] = int(binary.LittleEndian.Uint64(ib[8*i:]))
	}
	T, V := int(lgT.Shape[0]), int(lgT.Shape[1])
	rows := make([][]float32, T)
	for r := range rows {
		rows[r] = make([]float32, V)
		for c := range rows[r] {
			rows[r][c] = math.Float32frombits(binary.LittleEndian.Uint32(lb[4*(r*V+c):]))
		}
	}
	return ids, rows
}

// TestGolden checks the reference against the transformers float32 logits of
// the three golden models, for the bf16 HF checkpoints and for the MLX 4-bit
// ones (whose references were computed on the dequantized weights), and of
// the trained tiny-code model (its short prompt). The transformers side is
// float32, so agreement is expected at ~1e-5.
func TestGolden(t *testing.T) {
	type golden struct {
		name, src, ref string
		prompts        int
	}
	var cases []golden
	for _, name := range []string{"qwen3moe-tiny", "qwen3next-tiny", "qwen35moe-tiny"} {
		cases = append(cases,
			golden{filepath.Join(goldenDir, name), "hf", "reference.safetensors", 3},
			golden{filepath.Join(goldenDir, name), "mlx4", "reference-mlx4.safetensors", 3})
	}
	cases = append(cases, golden{"../../../testdata/models/tiny-code", ".", "reference.safetensors", 1})
	for _, c := range cases {
		label := c.src
		if label == "." {
			label = "hf"
		}
		t.Run(filepath.Base(c.name)+"/"+label, func(t *testing.T) {
			t.Parallel()
			m, err := Load(filepath.Join(c.name, c.src))
			if err != nil {
				t.Fatal(err)
			}
			var worst float64
			for p := 0; p < c.prompts; p++ {
				ids, ref := readReference(t, filepath.Join(c.name, c.ref), p)
				tr, err := m.Forward(ids)
				if err != nil {
					t.Fatal(err)
				}
				for r := range ref {
					d := CompareRow(ref[r], tr.Logits[r])
					worst = math.Max(worst, d.RelErr)
					if d.RelErr > 5e-5 {
						t.Errorf("prompt %d row %d: relative error %.3g", p, r, d.RelErr)
					}
					if d.Margin > 1e-3 && d.ArgmaxGot != d.ArgmaxRef {
						t.Errorf("prompt %d row %d: argmax %d, transformers %d", p, r, d.ArgmaxRef, d.ArgmaxGot)
					}
				}
			}
			t.Logf("worst relative error %.3g", worst)
		})
	}
}
