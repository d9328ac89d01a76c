package model_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/fm-moe/fm/pkg/backend"
	_ "github.com/fm-moe/fm/pkg/backend/cpu"
	"github.com/fm-moe/fm/pkg/internal/hfload"
	"github.com/fm-moe/fm/pkg/model"
)

// forEachBackend runs f once per registered backend, as a subtest named after
// it; a backend that does not open on this machine (no device, no driver) is
// skipped with the reason.
func forEachBackend(t *testing.T, f func(t *testing.T, dev backend.Device)) {
	for _, name := range backend.Names() {
		t.Run(name, func(t *testing.T) {
			dev, err := backend.Open(name, backend.Options{})
			if err != nil {
				t.Skipf("backend %s does not open here: %v", name, err)
			}
			defer dev.Close()
			f(t, dev)
		})
	}
}

const goldenDir = "../../testdata/golden"

// tolerance is the exactness gate of docs/DESIGN.md §6.
const tolerance = 2e-3

var goldenCases = []string{"qwen35moe-tiny", "qwen3next-tiny", "qwen3moe-tiny"}

// loadHF builds a model straight from a checkpoint directory.
func loadHF(t testing.TB, dir string, opts model.Options) *model.Model {
	t.Helper()
	ck, err := hfload.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(&ck.Config, ck, ck, opts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// checkRows compares T rows of logits with the reference rows.
func checkRows(t *testing.T, what string, got, ref []float32, V int) (worst float64) {
	t.Helper()
	T := len(ref) / V
	if len(got) != len(ref) {
		t.Fatalf("%s: %d logits, want %d", what, len(got), len(ref))
	}
	for r := 0; r < T; r++ {
		c := hfload.CompareRow(got[r*V:(r+1)*V], ref[r*V:(r+1)*V])
		worst = max(worst, c.RelErr)
		if !c.OK(tolerance) {
			t.Errorf("%s row %d: rel err %.3g (tol %g), argmax %d want %d (margin %.3g)", what, r, c.RelErr, tolerance, c.GotArgmax, c.RefArgmax, c.Margin)
		}
	}
	return worst
}

// TestGoldenFromCheckpoints runs every golden case from both source formats
// (bf16 HF and MLX 4-bit, loaded in memory) through the prefill and the decode
// paths on every backend and compares every row of logits with transformers.
func TestGoldenFromCheckpoints(t *testing.T) {
	forEachBackend(t, testGolden)
}

func testGolden(t *testing.T, dev backend.Device) {
	for _, name := range goldenCases {
		for _, src := range []struct{ dir, ref string }{{"hf", "reference.safetensors"}, {"mlx4", "reference-mlx4.safetensors"}} {
			t.Run(name+"/"+src.dir, func(t *testing.T) {
				dir := filepath.Join(goldenDir, name)
				m := loadHF(t, filepath.Join(dir, src.dir), model.Options{PrefillChunk: 32, Device: dev})
				prompts, err := hfload.ReadPrompts(filepath.Join(dir, src.ref))
				if err != nil {
					t.Fatal(err)
				}
				V := m.Config().VocabSize
				for p, pr := range prompts[:3] {
					ids, want := pr.IDs, pr.Logits
					ctx := context.Background()
					st := m.NewState()
					got, err := m.Forward(ctx, st, ids, true)
					if err != nil {
						t.Fatal(err)
					}
					wp := checkRows(t, fmt.Sprintf("prompt %d prefill", p), got, want, V)

					st = m.NewState()
					dec := make([]float32, 0, len(want))
					for _, id := range ids {
						row, err := m.Forward(ctx, st, []int{id}, false)
						if err != nil {
							t.Fatal(err)
						}
						dec = append(dec, row...)
					}
					wd := checkRows(t, fmt.Sprintf("prompt %d decode", p), dec, want, V)
					t.Logf("prompt %d (%d tokens): worst rel err prefill %.2e decode %.2e", p, len(ids), wp, wd)
				}
			})
		}
	}
}

// TestGoldenChunkedPrefill runs the longest sequence (94 tokens) of the
// GatedDeltaNet golden cases as one prefill step on every backend, so that the
// delta rule takes its chunked form (from 64 tokens on, a full chunk and a
// partial one; TestGoldenFromCheckpoints steps 32 tokens at a time and never
// reaches it), and compares every row with transformers.
func TestGoldenChunkedPrefill(t *testing.T) {
	forEachBackend(t, func(t *testing.T, dev backend.Device) {
		for _, name := range []string{"qwen35moe-tiny", "qwen3next-tiny"} {
			t.Run(name, func(t *testing.T) {
				dir := filepath.Join(goldenDir, name)
				m := loadHF(t, filepath.Join(dir, "hf"), model.Options{PrefillChunk: 128, Device: dev})
				prompts, err := hfload.ReadPrompts(filepath.Join(dir, "reference.safetensors"))
				if err != nil {
					t.Fatal(err)
				}
				pr := prompts[len(prompts)-1]
				if len(pr.IDs) < 64 || len(pr.IDs) > 128 {
					t.Fatalf("%s: the last prompt has %d tokens, want 64…128 (one prefill step over a chunk)", name, len(pr.IDs))
				}
				got, err := m.Forward(context.Background(), m.NewState(), pr.IDs, true)
				if err != nil {
					t.Fatal(err)
				}
				w := checkRows(t, "prefill", got, pr.Logits, m.Config().VocabSize)
				t.Logf("%d tokens in one step: worst rel err %.2e", len(pr.IDs), w)
			})
		}
	})
}

// TestTinyCode checks the trained model on its two reference prompts (8 and 534
// tokens, each followed by 16 greedy tokens) through both paths, on every
// backend.
func TestTinyCode(t *testing.T) {
	forEachBackend(t, testTinyCode)
}

func testTinyCode(t *testing.T, dev backend.Device) {
	dir := "../../testdata/models/tiny-code"
	m := loadHF(t, dir, model.Options{Device: dev})
	prompts, err := hfload.ReadPrompts(filepath.Join(dir, "reference.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	V := m.Config().VocabSize
	ctx := context.Background()
	for p, pr := range prompts[:2] {
		ids, want := pr.IDs, pr.Logits
		got, err := m.Forward(ctx, m.NewState(), ids, true)
		if err != nil {
			t.Fatal(err)
		}
		wp := checkRows(t, fmt.Sprintf("prompt %d prefill", p), got, want, V)
		st := m.NewState()
		dec := make([]float32, 0, len(want))
		for _, id := range ids {
			row, err := m.Forward(ctx, st, []int{id}, false)
			if err != nil {
				t.Fatal(err)
			}
			dec = append(dec, row...)
		}
		wd := checkRows(t, fmt.Sprintf("prompt %d decode", p), dec, want, V)
		t.Logf("prompt %d (%d tokens): worst rel err prefill %.2e decode %.2e", p, len(ids), wp, wd)
	}
}
