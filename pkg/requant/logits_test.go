package requant

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/fm-moe/fm/pkg/engine"
	"github.com/fm-moe/fm/pkg/internal/hfload"
	"github.com/fm-moe/fm/pkg/layout"
	"github.com/fm-moe/fm/pkg/quant"
)

// logitsStats runs every reference prompt through the prepared directory with
// the given expert set and compares the logits with transformers' (bf16
// weights in float32): mean and max KL(reference ‖ fm), top-1 agreement, and
// the largest relative logit error.
type logitsStats struct {
	rows, agree   int
	klMean, klMax float64
	relMax        float64
}

func (s logitsStats) String() string {
	return fmt.Sprintf("mean KL %.4f, max KL %.4f, top-1 %d/%d (%.1f%%), max rel err %.3f",
		s.klMean, s.klMax, s.agree, s.rows, 100*float64(s.agree)/float64(s.rows), s.relMax)
}

func compareLogits(t *testing.T, dir, expertsDir, refPath string) logitsStats {
	t.Helper()
	e, err := engine.Open(context.Background(), engine.Options{Dir: dir, ExpertsDir: expertsDir})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if e.Set.Dir != expertsDir {
		t.Fatalf("engine opened %s, want %s", e.Set.Dir, expertsDir)
	}
	ref, err := hfload.OpenReference(refPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	V := e.Model.Config().VocabSize
	var s logitsStats
	prompts, err := ref.Prompts()
	if err != nil {
		t.Fatal(err)
	}
	for p, pr := range prompts {
		ids, want := pr.IDs, pr.Logits
		for _, decode := range []bool{false, true} {
			got, err := e.Logits(context.Background(), ids, decode)
			if err != nil {
				t.Fatal(err)
			}
			for r := range ids {
				g, w := got[r*V:(r+1)*V], want[r*V:(r+1)*V]
				c := hfload.CompareRow(g, w)
				kl := hfload.KL(g, w)
				if math.IsNaN(kl) || math.IsInf(kl, 0) {
					t.Fatalf("%s prompt %d row %d: KL %v", expertsDir, p, r, kl)
				}
				s.rows++
				if c.GotArgmax == c.RefArgmax {
					s.agree++
				}
				s.klMean += kl
				s.klMax = math.Max(s.klMax, kl)
				s.relMax = math.Max(s.relMax, c.RelErr)
			}
		}
	}
	s.klMean /= float64(s.rows)
	return s
}

// TestGoldenLogitsTwoBit requantizes the 16-bit conversion of each golden model
// (dense weights stay bf16, so the difference is the experts' alone) to 2 and
// 3 bits and runs the reference prompts through the engine, prefill and
// decode, with --2bit / --3bit. The gate is the measured mean KL divergence
// from transformers with 1.5× headroom, and 3 bits must land closer than 2.
// Top-1 agreement is logged, not gated: the random golden models' logits have
// top-2 margins of a few hundredths, so any quantization flips many argmaxes
// (the trained tiny-code model is where docs/QUALITY.md measures quality).
// That the runtime computes exactly what the 2-bit files hold is
// TestTwoBitRuntimeExact's job.
func TestGoldenLogitsTwoBit(t *testing.T) {
	if testing.Short() {
		t.Skip("golden logits at 2 and 3 bits skipped in -short mode")
	}
	for _, c := range []struct {
		name string
		// maxKL bounds the mean KL(reference ‖ fm) at 2 bits.
		maxKL float64
	}{
		// Measured mean KL at 2 bits: 0.122 / 0.104 / 0.069 (3 bits: 0.046 /
		// 0.041 / 0.021); the bounds are 1.5× that. (Plain least squares,
		// --no-gain-correction, measures 0.109 / 0.094 / 0.056 here: on random
		// weights there is no learned signal for the gain correction to
		// preserve; on the trained tiny-code model it wins, docs/QUALITY.md.)
		{"qwen35moe-tiny", 0.18},
		{"qwen3next-tiny", 0.16},
		{"qwen3moe-tiny", 0.105},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := convert(t, filepath.Join(goldenDir, c.name, "hf"), 16)
			for _, bits := range []int{2, 3} {
				if _, err := Requantize(context.Background(), dir, Options{Bits: bits}); err != nil {
					t.Fatal(err)
				}
			}
			refPath := filepath.Join(goldenDir, c.name, "reference.safetensors")
			exact := compareLogits(t, dir, layout.ExpertsDir, refPath)
			two := compareLogits(t, dir, layout.Experts2BitDir, refPath)
			three := compareLogits(t, dir, layout.Experts3BitDir, refPath)
			t.Logf("%s 16-bit experts: %v", c.name, exact)
			t.Logf("%s  3-bit experts: %v", c.name, three)
			t.Logf("%s  2-bit experts: %v", c.name, two)
			if exact.relMax > 2e-3 {
				t.Errorf("16-bit experts: max relative error %.3g, the exactness gate is 2e-3", exact.relMax)
			}
			if two.klMean > c.maxKL {
				t.Errorf("2-bit experts: %v; want mean KL ≤ %.3f", two, c.maxKL)
			}
			if !(three.klMean < two.klMean) {
				t.Errorf("3-bit experts (mean KL %.4f) not closer to the reference than 2-bit (%.4f)", three.klMean, two.klMean)
			}
		})
	}
}

// TestTwoBitRuntimeExact: the engine running the 2-bit (and 3-bit) files
// computes the same logits as running float32 experts that hold the
// dequantized 2-bit values, within the exactness gate (relative error ≤ 2e-3,
// same argmax where the margin exceeds 1e-3), prefill and decode. This pins
// the file layout and the kernels, independent of quantization error.
func TestTwoBitRuntimeExact(t *testing.T) {
	for _, name := range []string{"qwen35moe-tiny", "qwen3moe-tiny"} {
		dir := convert(t, filepath.Join(goldenDir, name, "hf"), 16)
		for _, bits := range []int{2, 3} {
			if _, err := Requantize(context.Background(), dir, Options{Bits: bits}); err != nil {
				t.Fatal(err)
			}
			quantDir := DirName(bits)
			floatDir := quantDir + "_f32"
			writeDequantizedSet(t, dir, quantDir, floatDir)
			q := openEngine(t, dir, quantDir)
			f := openEngine(t, dir, floatDir)
			ref, err := hfload.OpenReference(filepath.Join(goldenDir, name, "reference.safetensors"))
			if err != nil {
				t.Fatal(err)
			}
			V := q.Model.Config().VocabSize
			worst := 0.0
			for p := 0; ref.Has(fmt.Sprintf("p%d.ids", p)); p++ {
				ids, err := ref.IDs(fmt.Sprintf("p%d.ids", p))
				if err != nil {
					t.Fatal(err)
				}
				for _, decode := range []bool{false, true} {
					got, err := q.Logits(context.Background(), ids, decode)
					if err != nil {
						t.Fatal(err)
					}
					want, err := f.Logits(context.Background(), ids, decode)
					if err != nil {
						t.Fatal(err)
					}
					for r := range ids {
						c := hfload.CompareRow(got[r*V:(r+1)*V], want[r*V:(r+1)*V])
						worst = math.Max(worst, c.RelErr)
						if !c.OK(2e-3) {
							t.Errorf("%s %d-bit prompt %d decode=%v row %d: rel err %.3g, argmax %d vs %d (margin %.3g)",
								name, bits, p, decode, r, c.RelErr, c.GotArgmax, c.RefArgmax, c.Margin)
						}
					}
				}
			}
			ref.Close()
			t.Logf("%s %d-bit files vs their float32 dequantization: worst relative logit error %.2e", name, bits, worst)
		}
	}
}

func openEngine(t *testing.T, dir, expertsDir string) *engine.Engine {
	t.Helper()
	e, err := engine.Open(context.Background(), engine.Options{Dir: dir, ExpertsDir: expertsDir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// writeDequantizedSet writes, as expert set floatDir, every expert of set
// quantDir dequantized to float32, and lists it in the manifest.
func writeDequantizedSet(t *testing.T, dir, quantDir, floatDir string) {
	t.Helper()
	m, err := layout.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	qs := m.ExpertSet(quantDir)
	fs := layout.ExpertSet{Dir: floatDir, Bits: 16, NameFormat: qs.NameFormat, Checksums: make([][]string, len(qs.Checksums))}
	for _, c := range qs.Components {
		fs.Components = append(fs.Components, layout.Tensor{Name: c.Name, Shape: c.Shape,
			Data: layout.Part{DType: "F32", Shape: c.Shape, Size: c.Shape[0] * c.Shape[1] * 4}})
	}
	fs.FileSize = layout.AlignUp(layout.PlaceParts(fs.Components, 0, layout.ExpertAlignment), layout.ExpertAlignment)
	if err := os.MkdirAll(filepath.Join(dir, floatDir), 0o755); err != nil {
		t.Fatal(err)
	}
	for l, sums := range qs.Checksums {
		if sums == nil {
			continue
		}
		fs.Checksums[l] = make([]string, len(sums))
		for e := range sums {
			buf := make([]byte, fs.FileSize)
			for i, c := range qs.Components {
				vals := readComponent(t, dir, qs, l, e, c.Name)
				p := fs.Components[i].Data
				if err := quant.EncodeFloats(buf[p.Offset:p.Offset+p.Size], vals, "F32"); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(fs.Path(dir, l, e), buf, 0o644); err != nil {
				t.Fatal(err)
			}
			fs.Checksums[l][e] = layout.Checksum(buf)
		}
	}
	m.Experts = append(m.Experts, fs)
	if err := layout.WriteManifest(dir, m, layout.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
}
