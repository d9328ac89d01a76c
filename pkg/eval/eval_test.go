package eval

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
)

func TestChunks(t *testing.T) {
	ids := make([]int, 10)
	for i := range ids {
		ids[i] = i
	}
	for _, c := range []struct {
		n, max int
		want   string
	}{
		{4, 0, "[[0 1 2 3] [4 5 6 7]]"},
		{4, 1, "[[0 1 2 3]]"},
		{5, 0, "[[0 1 2 3 4] [5 6 7 8 9]]"},
		{5, 9, "[[0 1 2 3 4] [5 6 7 8 9]]"},
		{10, 0, "[[0 1 2 3 4 5 6 7 8 9]]"},
		{2, 3, "[[0 1] [2 3] [4 5]]"},
	} {
		got, err := Chunks(ids, c.n, c.max)
		if err != nil || fmt.Sprint(got) != c.want {
			t.Errorf("Chunks(10 ids, %d, %d) = %v, %v; want %s", c.n, c.max, got, err, c.want)
		}
	}
	for _, c := range []struct {
		n    int
		want string
	}{{11, "fewer than one chunk"}, {1, "at least 2"}, {0, "at least 2"}} {
		if _, err := Chunks(ids, c.n, 0); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Chunks(10 ids, %d): error %v, want %q", c.n, err, c.want)
		}
	}
	// A chunk cannot grow into the next one's tokens.
	got, _ := Chunks(ids, 4, 0)
	if cap(got[0]) != 4 {
		t.Errorf("chunk capacity %d, want 4", cap(got[0]))
	}
}

// tableModel returns fixed logits for every position: row t of a chunk is
// rows[t].
type tableModel struct {
	rows  [][]float32
	calls []bool // decode flag of each call
	err   error
}

func (m *tableModel) Logits(_ context.Context, ids []int, decode bool) ([]float32, error) {
	m.calls = append(m.calls, decode)
	if m.err != nil {
		return nil, m.err
	}
	var out []float32
	for t := range ids {
		out = append(out, m.rows[t%len(m.rows)]...)
	}
	return out, nil
}

// TestEvaluateArithmetic checks perplexity, KL and top-1 against values worked
// out by hand for three-token vocabularies.
func TestEvaluateArithmetic(t *testing.T) {
	ln := func(x float64) float32 { return float32(math.Log(x)) }
	// Model: position 0 → p = (0.5, 0.25, 0.25), position 1 → (0.2, 0.2, 0.6).
	model := &tableModel{rows: [][]float32{{ln(0.5), ln(0.25), ln(0.25)}, {ln(0.2), ln(0.2), ln(0.6)}, {0, 0, 0}}}
	// Reference: position 0 → (0.25, 0.5, 0.25), position 1 → (0.1, 0.1, 0.8).
	ref := &tableModel{rows: [][]float32{{ln(0.25), ln(0.5), ln(0.25)}, {ln(0.1), ln(0.1), ln(0.8)}, {0, 0, 0}}}
	// Two chunks of 3 tokens: [x 0 2] [x 1 2]; position 0 predicts token 1 of
	// the chunk, position 1 token 2.
	ids := []int{0, 0, 2, 0, 1, 2, 7} // the tail (one token) is dropped
	r, err := Evaluate(context.Background(), model, ids, Options{Ctx: 3, Compare: ref})
	if err != nil {
		t.Fatal(err)
	}
	nll0 := (-math.Log(0.5) - math.Log(0.6)) / 2
	nll1 := (-math.Log(0.25) - math.Log(0.6)) / 2
	kl0 := 0.25*math.Log(0.25/0.5) + 0.5*math.Log(0.5/0.25) + 0.25*math.Log(1)
	kl1 := 0.1*math.Log(0.1/0.2)*2 + 0.8*math.Log(0.8/0.6)
	refNLL0 := (-math.Log(0.25) - math.Log(0.8)) / 2
	refNLL1 := (-math.Log(0.5) - math.Log(0.8)) / 2
	want := Result{
		TextTokens: 7, Ctx: 3, Chunks: 2, Tokens: 6, Predictions: 4,
		Perplexity: math.Exp((nll0 + nll1) / 2), ChunkNLL: []float64{nll0, nll1},
		HasCompare: true, ComparePerplexity: math.Exp((refNLL0 + refNLL1) / 2),
		KL:   (kl0 + kl1) / 2,
		Top1: 0.5, // position 0: argmax 0 vs 1; position 1: 2 vs 2
	}
	near := func(a, b float64) bool { return math.Abs(a-b) <= 1e-6*math.Max(1, math.Abs(b)) }
	if r.TextTokens != want.TextTokens || r.Ctx != want.Ctx || r.Chunks != want.Chunks || r.Tokens != want.Tokens ||
		r.Predictions != want.Predictions || !r.HasCompare {
		t.Errorf("counts %+v, want %+v", r, want)
	}
	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"perplexity", r.Perplexity, want.Perplexity},
		{"chunk 0 NLL", r.ChunkNLL[0], nll0},
		{"chunk 1 NLL", r.ChunkNLL[1], nll1},
		{"compare perplexity", r.ComparePerplexity, want.ComparePerplexity},
		{"KL", r.KL, want.KL},
		{"top-1", r.Top1, want.Top1},
	} {
		if !near(c.got, c.want) {
			t.Errorf("%s = %.9g, want %.9g", c.name, c.got, c.want)
		}
	}
	// The model runs the path asked for; the reference always prefill.
	model.calls, ref.calls = nil, nil
	if _, err := Evaluate(context.Background(), model, ids, Options{Ctx: 3, Compare: ref, Decode: true, MaxChunks: 1}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(model.calls, []bool{true}) || !slices.Equal(ref.calls, []bool{false}) {
		t.Errorf("decode flags: model %v, reference %v", model.calls, ref.calls)
	}
}

// TestEvaluateSelf: a model compared with itself has KL 0 and full agreement,
// even with large logits (log-sum-exp must not overflow).
func TestEvaluateSelf(t *testing.T) {
	m := &tableModel{rows: [][]float32{{1000, 990, -1000, 3}, {-5, 80, 79.5, 0}}}
	r, err := Evaluate(context.Background(), m, []int{0, 1, 2, 3, 0, 1, 2, 3}, Options{Ctx: 4, Compare: m})
	if err != nil {
		t.Fatal(err)
	}
	if r.KL != 0 || r.Top1 != 1 || r.Perplexity != r.ComparePerplexity || math.IsInf(r.Perplexity, 0) {
		t.Errorf("self comparison: KL %g, top-1 %g, perplexity %g vs %g", r.KL, r.Top1, r.Perplexity, r.ComparePerplexity)
	}
}

func TestEvaluateErrors(t *testing.T) {
	ok := &tableModel{rows: [][]float32{{0, 1, 2}}}
	for _, c := range []struct {
		name  string
		model Model
		opts  Options
		ids   []int
		want  string
	}{
		{"short text", ok, Options{Ctx: 8}, []int{1, 2, 3}, "fewer than one chunk"},
		{"model error", &tableModel{err: errors.New("disk on fire")}, Options{Ctx: 2}, []int{1, 2}, "disk on fire"},
		{"token outside vocabulary", ok, Options{Ctx: 2}, []int{1, 5}, "outside the model's 3-entry vocabulary"},
		{"vocabulary mismatch", ok, Options{Ctx: 2, Compare: &tableModel{rows: [][]float32{{0, 1}}}}, []int{1, 2}, "not the same vocabulary"},
		{"not finite", &tableModel{rows: [][]float32{{float32(math.NaN()), 0, 0}}}, Options{Ctx: 2}, []int{1, 2}, "not finite"},
	} {
		if _, err := Evaluate(context.Background(), c.model, c.ids, c.opts); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
}
