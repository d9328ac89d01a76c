package engine

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fm-moe/fm/pkg/layout"
	"github.com/fm-moe/fm/pkg/model"
)

// overwrite writes n bytes of b at off in path.
func overwrite(t *testing.T, path string, off, n int64, b byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, n)
	for i := range buf {
		buf[i] = b
	}
	if _, err := f.WriteAt(buf, off); err != nil {
		t.Fatal(err)
	}
}

// TestNonFiniteLogitsStop is defect 1 of issue 9: damaged weights (here the
// final norm overwritten with 0xff bytes, which are NaN in every float
// format) must stop Generate and Logits with an error, not sample or write
// garbage.
func TestNonFiniteLogitsStop(t *testing.T) {
	dir := prepared(t, "qwen3moe-tiny", "hf")
	m, err := layout.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	norm := m.Tensor("norm")
	if norm == nil {
		t.Fatal("no final norm tensor in the manifest")
	}
	overwrite(t, filepath.Join(dir, layout.DenseName), norm.Data.Offset, norm.Data.Size, 0xff)
	e, err := Open(context.Background(), Options{Dir: dir, SkipDenseChecksum: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	// The model stops first (pkg/model checks the final norm and lm_head);
	// the engine's own check on the logits is the second line.
	position := func(err error) int {
		var nf *NonFiniteError
		var mnf *model.NonFiniteError
		switch {
		case errors.As(err, &mnf):
			return mnf.Position
		case errors.As(err, &nf):
			return nf.Position
		}
		return -1
	}
	_, err = e.Generate(context.Background(), e.Model.NewState(), []int{1, 2, 3}, GenerateOptions{MaxTokens: 4, Sampler: greedy{}})
	if position(err) != 2 {
		t.Errorf("Generate on NaN weights: %v", err)
	}
	for _, decode := range []bool{false, true} {
		if _, err := e.Logits(context.Background(), []int{1, 2, 3}, decode); position(err) != 0 {
			t.Errorf("Logits (decode %v) on NaN weights: %v", decode, err)
		}
	}
}

// TestContextLimit is defect 4 of issue 9: a prompt longer than the context
// is refused before any work, and generation stops when the context is full.
func TestContextLimit(t *testing.T) {
	dir := prepared(t, "qwen3moe-tiny", "hf")
	e, err := Open(context.Background(), Options{Dir: dir, ContextSize: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var ce *ContextError
	if _, err := e.Generate(context.Background(), e.Model.NewState(), make([]int, 9), GenerateOptions{MaxTokens: 1, Sampler: greedy{}}); !errors.As(err, &ce) || ce.Prompt != 9 || ce.Size != 8 {
		t.Errorf("9-token prompt in a context of 8: %v", err)
	}
	if _, err := e.Logits(context.Background(), make([]int, 9), false); !errors.As(err, &ce) {
		t.Errorf("Logits over 9 tokens in a context of 8: %v", err)
	}
	st := e.Model.NewState()
	res, err := e.Generate(context.Background(), st, []int{1, 2, 3, 4, 5}, GenerateOptions{MaxTokens: -1, Sampler: greedy{}})
	if err != nil {
		t.Fatal(err)
	}
	// 5 prompt tokens and 3 fed back fill the 8 positions; the 4th sampled
	// token is returned but there is no room to feed it.
	if res.StopReason != StopContext || st.Len() != 8 || len(res.Tokens) != 4 {
		t.Errorf("MaxTokens -1: stop %q after %d tokens, state %d", res.StopReason, len(res.Tokens), st.Len())
	}
	if _, err := e.Generate(context.Background(), e.Model.NewState(), []int{1}, GenerateOptions{MaxTokens: 0, Sampler: greedy{}}); err == nil {
		t.Error("MaxTokens 0 accepted")
	}
	if _, err := Open(context.Background(), Options{Dir: dir, ContextSize: 1 << 30}); err == nil {
		t.Error("a context above max_position_embeddings accepted")
	}
}

// TestDamagedExpertStops: an expert file damaged in place (right size, wrong
// bytes — bit rot) stops generation with an error naming the file, unless
// verification is turned off.
func TestDamagedExpertStops(t *testing.T) {
	dir := prepared(t, "qwen3moe-tiny", "hf")
	m, err := layout.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	set := m.ExpertSet(layout.ExpertsDir)
	// Damage every expert of one layer, so whichever the router picks is bad.
	for id := range m.Config.NumExperts {
		overwrite(t, set.Path(dir, 1, id), 0, 64, 0xff)
	}
	e, err := Open(context.Background(), Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	_, err = e.Generate(context.Background(), e.Model.NewState(), []int{1, 2, 3}, GenerateOptions{MaxTokens: 2, Sampler: greedy{}})
	if err == nil || !strings.Contains(err.Error(), "layer_01_expert_") || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("damaged experts: %v", err)
	}
	e2, err := Open(context.Background(), Options{Dir: dir, SkipExpertChecksums: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e2.Close()
	if _, err := e2.Logits(context.Background(), []int{1, 2, 3}, false); err != nil && strings.Contains(err.Error(), "checksum") {
		t.Fatalf("SkipExpertChecksums still verified: %v", err)
	}
}
