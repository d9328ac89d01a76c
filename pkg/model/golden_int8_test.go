package model_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	"github.com/fm-moe/fm/pkg/backend"
	"github.com/fm-moe/fm/pkg/internal/hfload"
	"github.com/fm-moe/fm/pkg/model"
)

// The int8-mode gates (--matmul int8: every product with a quantized matrix
// sees x rounded to 8 bits per group). The golden models have random weights
// and are chaotic: the two references transformers computed for each, from the
// bf16 weights and from their MLX 4-bit quantization, differ by a median row
// error of 0.27–0.47 of the largest logit and agree on the top token in only
// 32–56 % of the rows. int8 activations perturb far less than 4-bit weights
// (measured on amd64 with AVX-512 VNNI | the Go twin | arm64 under qemu:
// median 0.05–0.11, worst row qwen3moe 0.29 | 0.29 | 0.30, qwen35moe 0.49 |
// 0.59 | 0.53, qwen3next 1.26 | 1.23 | 1.21; top-1 agreement 75–93 %; no
// disagreement where the reference's margin exceeds 0.56), so the
// gates ask for clearly less than what weight quantization does, and a wrong
// kernel (agreement near 1/vocab, errors ≫ 1) fails all of them. The trained
// model's perplexity in both modes is in docs/PERF.md.
const (
	int8MedianRelErr = 0.2 // per model, over all prefill and decode rows
	int8MinAgreement = 0.65
	int8ClearMargin  = 1.0 // a row whose reference top-1 leads by more must agree
)

// TestGoldenInt8 runs the MLX 4-bit goldens (the sources with quantized
// matrices; the bf16 ones have none, so int8 mode cannot change them) through
// prefill and decode on the CPU backend in int8 mode.
func TestGoldenInt8(t *testing.T) {
	dev, err := backend.Open("cpu", backend.Options{Matmul: backend.MatmulInt8})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	goldenInt8(t, func(*testing.T) backend.Device { return dev })
}

// TestGoldenInt8PackedExperts is TestGoldenInt8 with the routed experts
// computed from the CPU's row-interleaved copies (a device expert cache
// with a budget; AVX-512 VNNI only): the same gates, and the cache is used
// (hits and misses).
func TestGoldenInt8PackedExperts(t *testing.T) {
	packedExpertDevice(t).Close() // skips here without packed experts
	goldenInt8(t, func(t *testing.T) backend.Device {
		dev := packedExpertDevice(t)
		t.Cleanup(func() {
			st := dev.(backend.ExpertCache).ExpertCacheStats()
			t.Logf("expert cache: %+v", st)
			if st.Hits == 0 || st.Misses == 0 {
				t.Errorf("expert cache stats %+v: the experts did not go through it", st)
			}
			dev.Close()
		})
		return dev
	})
}

// packedExpertDevice opens the CPU in int8 mode with a 1 GiB expert cache,
// skipping the test where the CPU does not pack experts.
func packedExpertDevice(t *testing.T) backend.Device {
	t.Helper()
	dev, err := backend.Open("cpu", backend.Options{Matmul: backend.MatmulInt8, ExpertCacheBytes: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	if dev.(backend.ExpertCache).ExpertCacheStats().Budget == 0 {
		dev.Close()
		t.Skip("this CPU or build computes no packed experts (AVX-512 VNNI, FM_ROWPACK, FM_ROWPACK_EXPERTS)")
	}
	return dev
}

// TestDecodeHitsPackedExperts: a decode step fills the CPU's packed expert
// cache, and the same step again (from a clone of the state before it, so
// the routing is the same) finds every one of its experts there; both give
// the same logits.
func TestDecodeHitsPackedExperts(t *testing.T) {
	dev := packedExpertDevice(t)
	defer dev.Close()
	m := loadHF(t, filepath.Join(goldenDir, "qwen3moe-tiny", "mlx4"), model.Options{Device: dev})
	cache := dev.(backend.ExpertCache)
	ctx := context.Background()
	st := m.NewState()
	if _, err := m.Forward(ctx, st, []int{1, 2, 3}, false); err != nil {
		t.Fatal(err)
	}
	again := st.Clone()
	s0 := cache.ExpertCacheStats()
	first, err := m.Forward(ctx, st, []int{4}, false)
	if err != nil {
		t.Fatal(err)
	}
	s1 := cache.ExpertCacheStats()
	second, err := m.Forward(ctx, again, []int{4}, false)
	if err != nil {
		t.Fatal(err)
	}
	d1, d2 := s1.Sub(s0), cache.ExpertCacheStats().Sub(s1)
	if lookups := d1.Hits + d1.Misses; lookups == 0 || d2.Misses != 0 || d2.Hits != lookups {
		t.Fatalf("first step %+v, second %+v: want the second to hit every expert the first looked up", d1, d2)
	}
	if !slices.Equal(first, second) {
		t.Fatal("the same decode step from packed experts gave other logits")
	}
}

// goldenInt8 runs TestGoldenInt8's gates, each model on devFor's device.
func goldenInt8(t *testing.T, devFor func(*testing.T) backend.Device) {
	for _, name := range goldenCases {
		t.Run(name, func(t *testing.T) {
			dev := devFor(t)
			dir := filepath.Join(goldenDir, name)
			m := loadHF(t, filepath.Join(dir, "mlx4"), model.Options{PrefillChunk: 32, Device: dev})
			prompts, err := hfload.ReadPrompts(filepath.Join(dir, "reference-mlx4.safetensors"))
			if err != nil {
				t.Fatal(err)
			}
			V := m.Config().VocabSize
			ctx := context.Background()
			var errs []float64
			agree := 0
			for p, pr := range prompts[:3] {
				got, err := m.Forward(ctx, m.NewState(), pr.IDs, true)
				if err != nil {
					t.Fatal(err)
				}
				st := m.NewState()
				dec := make([]float32, 0, len(pr.Logits))
				for _, id := range pr.IDs {
					row, err := m.Forward(ctx, st, []int{id}, false)
					if err != nil {
						t.Fatal(err)
					}
					dec = append(dec, row...)
				}
				for path, rows := range map[string][]float32{"prefill": got, "decode": dec} {
					for r := range pr.IDs {
						c := hfload.CompareRow(rows[r*V:(r+1)*V], pr.Logits[r*V:(r+1)*V])
						errs = append(errs, c.RelErr)
						if c.GotArgmax == c.RefArgmax {
							agree++
						} else if c.Margin > int8ClearMargin {
							t.Errorf("prompt %d %s row %d: argmax %d, reference %d leads by %.3g", p, path, r, c.GotArgmax, c.RefArgmax, c.Margin)
						}
					}
				}
			}
			slices.Sort(errs)
			median, frac := errs[len(errs)/2], float64(agree)/float64(len(errs))
			t.Logf("%d rows: rel err median %.3f, worst %.3f; top-1 agreement %.3f", len(errs), median, errs[len(errs)-1], frac)
			if median > int8MedianRelErr || frac < int8MinAgreement {
				t.Errorf("median rel err %.3f (gate %g), top-1 agreement %.3f (gate %g)", median, int8MedianRelErr, frac, int8MinAgreement)
			}
		})
	}
}
