package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fm-moe/fm/pkg/backend"
	"github.com/fm-moe/fm/pkg/internal/hfload"
	"github.com/fm-moe/fm/pkg/internal/prepare"
	"github.com/fm-moe/fm/pkg/layout"
)

const goldenDir = "../../testdata/golden"

// prepared converts a golden checkpoint (hf at --bits 16, mlx4 natively) into
// a prepared directory with the converter's Go API, as fm-extract and
// fm-repack do.
func prepared(t *testing.T, name, src string) string {
	t.Helper()
	bits := 0 // the source's own format (MLX stays quantized)
	if src == "hf" {
		bits = 16
	}
	return convert(t, filepath.Join(goldenDir, name, src), bits)
}

func convert(t testing.TB, src string, bits int) string {
	t.Helper()
	return prepare.Convert(t, src, bits)
}

type promptRef struct {
	ids       []int
	logits    []float32
	promptLen int
}

func readPrompts(t *testing.T, name, refFile string) []promptRef {
	t.Helper()
	prompts, err := hfload.ReadPrompts(filepath.Join(goldenDir, name, refFile))
	if err != nil {
		t.Fatal(err)
	}
	var meta struct {
		Prompts []struct {
			PromptLen int `json:"prompt_len"`
		} `json:"prompts"`
	}
	b, err := os.ReadFile(filepath.Join(goldenDir, name, "reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &meta); err != nil {
		t.Fatal(err)
	}
	if len(prompts) != len(meta.Prompts) {
		t.Fatalf("%s: %d reference prompts, reference.json describes %d", name, len(prompts), len(meta.Prompts))
	}
	var out []promptRef
	for p, pr := range prompts {
		out = append(out, promptRef{pr.IDs, pr.Logits, meta.Prompts[p].PromptLen})
	}
	return out
}

// logitsFile is fm-infer logits' code path: Engine.Logits, WriteLogits, and the
// file read back.
func logitsFile(t *testing.T, e *Engine, ids []int, decode bool) []float32 {
	t.Helper()
	logits, err := e.Logits(context.Background(), ids, decode)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "logits.safetensors")
	V := e.Model.Config().VocabSize
	if err := WriteLogits(path, logits, len(ids), V); err != nil {
		t.Fatal(err)
	}
	f, err := hfload.OpenReference(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, shape, err := f.F32("logits")
	if err != nil {
		t.Fatal(err)
	}
	if len(shape) != 2 || shape[0] != int64(len(ids)) || shape[1] != int64(V) {
		t.Fatalf("logits shape %v, want [%d %d]", shape, len(ids), V)
	}
	return got
}

// TestLogitsThroughPreparedDir is the exactness gate: every golden case,
// converted from both source formats by the converter (bf16 HF at --bits 16,
// MLX 4-bit natively), run through fm-infer logits' code path — manifest,
// mmapped model_weights.bin, expert files read by the expert store — on the
// prefill and the decode path, against transformers' logits.
func TestLogitsThroughPreparedDir(t *testing.T) {
	for _, name := range []string{"qwen35moe-tiny", "qwen3next-tiny", "qwen3moe-tiny"} {
		for _, src := range []struct{ dir, ref string }{{"hf", "reference.safetensors"}, {"mlx4", "reference-mlx4.safetensors"}} {
			t.Run(name+"/"+src.dir, func(t *testing.T) {
				dir := prepared(t, name, src.dir)
				forEachBackend(t, func(t *testing.T, be string) {
					testLogits(t, Options{Dir: dir, Backend: be}, name, src.ref)
				})
			})
		}
	}
}

// forEachBackend runs f once per registered backend, as a subtest named
// after it; a backend that does not open on this machine is skipped with the
// reason.
func forEachBackend(t *testing.T, f func(t *testing.T, name string)) {
	for _, name := range backend.Names() {
		t.Run(name, func(t *testing.T) {
			d, err := backend.Open(name, backend.Options{})
			if err != nil {
				t.Skipf("backend %s does not open here: %v", name, err)
			}
			d.Close()
			f(t, name)
		})
	}
}

// testLogits compares fm-infer logits' output for every reference prompt,
// prefill and decode, with transformers' logits.
func testLogits(t *testing.T, opts Options, name, refFile string) {
	e, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	V := e.Model.Config().VocabSize
	for p, pr := range readPrompts(t, name, refFile) {
		for _, decode := range []bool{false, true} {
			got := logitsFile(t, e, pr.ids, decode)
			for r := 0; r < len(pr.ids); r++ {
				c := hfload.CompareRow(got[r*V:(r+1)*V], pr.logits[r*V:(r+1)*V])
				if !c.OK(2e-3) {
					t.Errorf("prompt %d decode=%v row %d: rel err %.3g, argmax %d want %d", p, decode, r, c.RelErr, c.GotArgmax, c.RefArgmax)
				}
			}
		}
	}
	if st := e.Store.Stats(); st.Misses == 0 || st.Bytes == 0 {
		t.Errorf("expert store stats %+v: no expert was read from its file", st)
	}
}

// greedy is the temperature-0 sampler (argmax, ties to the lower id).
type greedy struct{}

func (greedy) Sample(logits []float32, _ []int) int {
	best := 0
	for i, v := range logits {
		if v > logits[best] {
			best = i
		}
	}
	return best
}

// bytesStream renders ids as "<id>" so streamed text can be checked.
type bytesStream struct{ n int }

func (s *bytesStream) Add(id int) string { s.n++; return fmt.Sprintf("<%d>", id) }
func (s *bytesStream) Flush() string     { return "" }

// TestGenerateGreedyMatchesReference: the reference ids continue each prompt
// with transformers' greedy tokens, so greedy generation must reproduce them.
func TestGenerateGreedyMatchesReference(t *testing.T) {
	name := "qwen35moe-tiny"
	e, err := Open(context.Background(), Options{Dir: prepared(t, name, "hf")})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	for p, pr := range readPrompts(t, name, "reference.safetensors") {
		want := pr.ids[pr.promptLen:]
		var text strings.Builder
		st := e.Model.NewState()
		res, err := e.Generate(context.Background(), st, pr.ids[:pr.promptLen], GenerateOptions{
			MaxTokens: len(want), Sampler: greedy{}, Stream: &bytesStream{}, OnText: func(s string) { text.WriteString(s) }})
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(res.Tokens) != fmt.Sprint(want) {
			t.Errorf("prompt %d: generated %v, want %v", p, res.Tokens, want)
		}
		if res.StopReason != StopLength || res.Stats.DecodedTokens != len(want)-1 {
			t.Errorf("prompt %d: stop %q after %d decoded tokens", p, res.StopReason, res.Stats.DecodedTokens)
		}
		var wantText strings.Builder
		for _, id := range want {
			fmt.Fprintf(&wantText, "<%d>", id)
		}
		if text.String() != wantText.String() {
			t.Errorf("prompt %d: streamed %q, want %q", p, text.String(), wantText.String())
		}
		if st.Len() != pr.promptLen+len(want)-1 {
			t.Errorf("prompt %d: state holds %d tokens, want %d", p, st.Len(), pr.promptLen+len(want)-1)
		}
		if s := &res.Stats; s.PeakRSS <= 0 || s.PrefillProfile.Tokens != pr.promptLen || s.DecodeProfile.Tokens != s.DecodedTokens ||
			s.PrefillProfile.Total() > s.Prefill || s.DecodeProfile.Total() > s.Decode {
			t.Errorf("prompt %d: inconsistent stats %+v", p, res.Stats)
		}
		// A stop token ends generation at once and is not fed to the model.
		st = e.Model.NewState()
		res, err = e.Generate(context.Background(), st, pr.ids[:pr.promptLen], GenerateOptions{
			MaxTokens: len(want), Sampler: greedy{}, Stop: []int{want[2]}})
		if err != nil {
			t.Fatal(err)
		}
		stopAt := 0
		for want[stopAt] != want[2] {
			stopAt++
		}
		if res.StopReason != StopToken || len(res.Tokens) != stopAt+1 || st.Len() != pr.promptLen+stopAt {
			t.Errorf("prompt %d: stop token %d: got %v (%s), state %d", p, want[2], res.Tokens, res.StopReason, st.Len())
		}
	}
}

func TestGenerateCancelled(t *testing.T) {
	e, err := Open(context.Background(), Options{Dir: prepared(t, "qwen3moe-tiny", "hf")})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	_, err = e.Generate(ctx, e.Model.NewState(), []int{1, 2, 3}, GenerateOptions{MaxTokens: 50, Sampler: samplerFunc(func(l []float32, h []int) int {
		n++
		if n == 3 {
			cancel()
		}
		return greedy{}.Sample(l, h)
	})})
	if !errors.Is(err, context.Canceled) || n != 3 {
		t.Fatalf("after cancel: err %v, %d samples", err, n)
	}
}

type samplerFunc func([]float32, []int) int

func (f samplerFunc) Sample(l []float32, h []int) int { return f(l, h) }

// TestOpenRefusesDamagedDirectories: each damage is reported naming the file.
func TestOpenRefusesDamagedDirectories(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(dir string) error
		want   string
	}{
		{"dense content", func(dir string) error {
			return flipByte(filepath.Join(dir, layout.DenseName), 100)
		}, layout.DenseName + ": checksum"},
		{"dense size", func(dir string) error {
			return os.Truncate(filepath.Join(dir, layout.DenseName), 10)
		}, layout.DenseName + ": size"},
		{"expert missing", func(dir string) error {
			return os.Remove(filepath.Join(dir, layout.ExpertsDir, "layer_02_expert_0007.bin"))
		}, "layer_02_expert_0007.bin: missing"},
		{"expert size", func(dir string) error {
			return os.Truncate(filepath.Join(dir, layout.ExpertsDir, "layer_01_expert_0003.bin"), 100)
		}, "layer_01_expert_0003.bin: size 100"},
		{"format", func(dir string) error {
			p := filepath.Join(dir, layout.ManifestName)
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			return os.WriteFile(p, []byte(strings.Replace(string(b), `"fm/1"`, `"fm/9"`, 1)), 0o644)
		}, `format "fm/9"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := prepared(t, "qwen3moe-tiny", "hf")
			if err := tc.damage(dir); err != nil {
				t.Fatal(err)
			}
			e, err := Open(context.Background(), Options{Dir: dir})
			if err == nil {
				e.Close()
				t.Fatal("Open accepted a damaged directory")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
	// 2-bit experts that were never written.
	_, err := Open(context.Background(), Options{Dir: prepared(t, "qwen3moe-tiny", "hf"), TwoBit: true})
	if err == nil || !strings.Contains(err.Error(), "fm-requant2bit") {
		t.Fatalf("--2bit without 2-bit experts: %v", err)
	}
}

func flipByte(path string, off int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		return err
	}
	b[0] ^= 0x40
	_, err = f.WriteAt(b, off)
	return err
}

// TestStateCloneContinues: a clone continues exactly like the original.
func TestStateCloneContinues(t *testing.T) {
	e, err := Open(context.Background(), Options{Dir: prepared(t, "qwen3next-tiny", "hf")})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	m := e.Model
	st := m.NewState()
	if _, err := m.Forward(ctx, st, []int{5, 6, 7, 8, 9}, false); err != nil {
		t.Fatal(err)
	}
	clone := st.Clone()
	a, err := m.Forward(ctx, st, []int{10, 11}, false)
	if err != nil {
		t.Fatal(err)
	}
	// The clone is independent: running the original on did not move it.
	b, err := m.Forward(ctx, clone, []int{10, 11}, false)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatal("clone diverged from the original")
	}
	st.Reset()
	c, err := m.Forward(ctx, st, []int{5, 6, 7, 8, 9, 10, 11}, false)
	if err != nil {
		t.Fatal(err)
	}
	if r := hfload.CompareRow(c, a); r.RelErr > 1e-5 {
		t.Fatalf("after Reset: rel err %g against a fresh run", r.RelErr)
	}
}
