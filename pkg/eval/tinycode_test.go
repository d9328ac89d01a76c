package eval_test

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/fm-moe/fm/pkg/checkpoint"
	"github.com/fm-moe/fm/pkg/engine"
	"github.com/fm-moe/fm/pkg/eval"
	"github.com/fm-moe/fm/pkg/tokenizer"
)

const tinyCode = "../../testdata/models/tiny-code"

// reference is the perplexity section of tiny-code's reference.json: the
// transformers float32 evaluation of the bf16 checkpoint.
type reference struct {
	Perplexity struct {
		ChunkNLL     []float64 `json:"chunk_nll"`
		PPL          float64   `json:"ppl"`
		TokensInText int       `json:"tokens_in_text"`
	} `json:"perplexity"`
}

func readReference(t *testing.T) reference {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(tinyCode, "reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	var r reference
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// openTinyCode converts tiny-code at --bits 16 into a temporary directory and
// opens it.
func openTinyCode(t *testing.T) *engine.Engine {
	t.Helper()
	dir := t.TempDir()
	opts := checkpoint.Options{Bits: 16}
	if _, err := checkpoint.Extract(context.Background(), tinyCode, dir, opts); err != nil {
		t.Fatal(err)
	}
	if _, err := checkpoint.Repack(context.Background(), tinyCode, dir, opts); err != nil {
		t.Fatal(err)
	}
	e, err := engine.Open(context.Background(), engine.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func heldoutIDs(t *testing.T) []int {
	t.Helper()
	tok, err := tokenizer.Load(tinyCode)
	if err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(filepath.Join(tinyCode, "heldout.txt"))
	if err != nil {
		t.Fatal(err)
	}
	return tok.Encode(string(text))
}

// TestTinyCodeReferencePerplexity: the 16-bit conversion of the trained model
// reproduces transformers' per-chunk NLLs on heldout.txt and the perplexity of
// reference.json (6.452 over 16 chunks of 512) within 0.5% — measured: within
// 1e-6 relative. -short evaluates the first 4 chunks only.
func TestTinyCodeReferencePerplexity(t *testing.T) {
	ref := readReference(t)
	ids := heldoutIDs(t)
	if len(ids) != ref.Perplexity.TokensInText {
		t.Fatalf("heldout.txt: %d tokens, transformers made %d", len(ids), ref.Perplexity.TokensInText)
	}
	chunks := len(ref.Perplexity.ChunkNLL)
	if testing.Short() {
		chunks = 4
	}
	e := openTinyCode(t)
	r, err := eval.Evaluate(context.Background(), e, ids, eval.Options{Ctx: 512, MaxChunks: chunks})
	if err != nil {
		t.Fatal(err)
	}
	if r.Chunks != chunks || r.Predictions != chunks*511 || r.TextTokens != len(ids) {
		t.Fatalf("%d chunks, %d predictions, %d text tokens", r.Chunks, r.Predictions, r.TextTokens)
	}
	for i, got := range r.ChunkNLL {
		// 2e-4 nats is 0.02% of perplexity; float32 logits differ from
		// transformers' by ~1e-6 relative.
		if want := ref.Perplexity.ChunkNLL[i]; math.Abs(got-want) > 2e-4 {
			t.Errorf("chunk %d: NLL %.6f, transformers %.6f", i, got, want)
		}
	}
	if chunks == len(ref.Perplexity.ChunkNLL) {
		rel := r.Perplexity/ref.Perplexity.PPL - 1
		t.Logf("tiny-code 16-bit, %d chunks of 512: perplexity %.6f, transformers %.6f (relative difference %.2g)", chunks, r.Perplexity, ref.Perplexity.PPL, rel)
		if math.Abs(rel) > 0.005 {
			t.Errorf("perplexity %.5f, transformers %.5f: off by %.3g%%, want within 0.5%%", r.Perplexity, ref.Perplexity.PPL, 100*rel)
		}
	}
}

// TestPrefillDecodeAgree: the same evaluation through the batched prefill path
// and through the one-token decode path gives the same perplexity, and the
// next-token distributions of the two paths agree (KL ≈ 0, same argmax).
func TestPrefillDecodeAgree(t *testing.T) {
	ids := heldoutIDs(t)[:2*96]
	e := openTinyCode(t)
	prefill, err := eval.Evaluate(context.Background(), e, ids, eval.Options{Ctx: 96})
	if err != nil {
		t.Fatal(err)
	}
	// Decode path for the model, prefill for the comparison: KL between paths.
	decode, err := eval.Evaluate(context.Background(), e, ids, eval.Options{Ctx: 96, Decode: true, Compare: e})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("perplexity prefill %.6f, decode %.6f; KL(prefill ‖ decode) %.3g, top-1 agreement %.4f",
		prefill.Perplexity, decode.Perplexity, decode.KL, decode.Top1)
	if rel := math.Abs(decode.Perplexity/prefill.Perplexity - 1); rel > 1e-4 {
		t.Errorf("perplexity: prefill %.6f, decode %.6f (relative difference %.2g)", prefill.Perplexity, decode.Perplexity, rel)
	}
	if decode.ComparePerplexity != prefill.Perplexity {
		t.Errorf("the comparison run (prefill) gave %.9f, the prefill evaluation %.9f", decode.ComparePerplexity, prefill.Perplexity)
	}
	if decode.KL > 1e-6 || decode.Top1 < 0.99 {
		t.Errorf("prefill and decode distributions differ: KL %.3g, top-1 agreement %.4f", decode.KL, decode.Top1)
	}
}
