package engine

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/fm-moe/fm/pkg/internal/hfload"
	"github.com/fm-moe/fm/pkg/requant"
)

const tinyCodeDir = "../../testdata/models/tiny-code"

// TestTinyCodeExact: the trained model converted at --bits 16 meets the
// exactness gate on both prompts (8 and 534 tokens, each plus 16 greedy
// tokens), prefill and decode.
func TestTinyCodeExact(t *testing.T) {
	e, err := Open(context.Background(), Options{Dir: convert(t, tinyCodeDir, 16)})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	prompts, err := hfload.ReadPrompts(filepath.Join(tinyCodeDir, "reference.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	V := e.Model.Config().VocabSize
	for p, pr := range prompts[:2] {
		ids, want := pr.IDs, pr.Logits
		for _, decode := range []bool{false, true} {
			got := logitsFile(t, e, ids, decode)
			worst := 0.0
			for r := range ids {
				c := hfload.CompareRow(got[r*V:(r+1)*V], want[r*V:(r+1)*V])
				worst = math.Max(worst, c.RelErr)
				if !c.OK(2e-3) {
					t.Errorf("prompt %d decode=%v row %d: rel err %.3g, argmax %d want %d (margin %.3g)", p, decode, r, c.RelErr, c.GotArgmax, c.RefArgmax, c.Margin)
				}
			}
			t.Logf("tiny-code prompt %d (%d tokens) decode=%v: worst rel err %.2e", p, len(ids), decode, worst)
		}
	}
}

// TestQuantizedFromBF16Report converts each bf16 model to 4 bits (and 8 bits)
// and logs top-1 agreement and mean KL(reference ‖ quantized) against the bf16
// reference logits. Quantization error is expected, so these numbers are
// reported, not gated; the test fails only on broken output (NaN/Inf logits
// or a KL that is not finite).
func TestQuantizedFromBF16Report(t *testing.T) {
	if testing.Short() {
		t.Skip("conversion report skipped in -short mode")
	}
	type src struct{ name, dir, ref string }
	var srcs []src
	for _, g := range []string{"qwen35moe-tiny", "qwen3next-tiny", "qwen3moe-tiny"} {
		srcs = append(srcs, src{g, filepath.Join(goldenDir, g, "hf"), filepath.Join(goldenDir, g, "reference.safetensors")})
	}
	srcs = append(srcs, src{"tiny-code", tinyCodeDir, filepath.Join(tinyCodeDir, "reference.safetensors")})
	for _, s := range srcs {
		for _, bits := range []int{4, 8} {
			e, err := Open(context.Background(), Options{Dir: convert(t, s.dir, bits)})
			if err != nil {
				t.Fatal(err)
			}
			ref, err := hfload.OpenReference(s.ref)
			if err != nil {
				t.Fatal(err)
			}
			V := e.Model.Config().VocabSize
			var rows, agree int
			var klSum, klMax float64
			prompts, err := ref.Prompts()
			if err != nil {
				t.Fatal(err)
			}
			for p, pr := range prompts {
				ids, want := pr.IDs, pr.Logits
				got, err := e.Logits(context.Background(), ids, false)
				if err != nil {
					t.Fatal(err)
				}
				for r := range ids {
					g, w := got[r*V:(r+1)*V], want[r*V:(r+1)*V]
					c := hfload.CompareRow(g, w)
					kl := hfload.KL(g, w)
					if math.IsNaN(kl) || math.IsInf(kl, 0) || math.IsInf(c.RelErr, 0) {
						t.Fatalf("%s %d-bit prompt %d row %d: broken logits (KL %v)", s.name, bits, p, r, kl)
					}
					rows++
					if c.GotArgmax == c.RefArgmax {
						agree++
					}
					klSum += kl
					klMax = math.Max(klMax, kl)
				}
			}
			ref.Close()
			e.Close()
			t.Logf("%-15s %d-bit from bf16: top-1 agreement %5.1f%% (%d/%d rows), mean KL %.4f nats, max KL %.4f",
				s.name, bits, 100*float64(agree)/float64(rows), agree, rows, klSum/float64(rows), klMax)
		}
	}
}

// TestRequantizedExperts runs the trained model with its experts requantized
// to 2 bits (fm-requant2bit, --2bit) and 3 bits: both paths agree with each
// other, and the quality against the bf16 reference is logged.
func TestRequantizedExperts(t *testing.T) {
	if testing.Short() {
		t.Skip("requantization skipped in -short mode")
	}
	dir := convert(t, tinyCodeDir, 4)
	ref, err := hfload.OpenReference(filepath.Join(tinyCodeDir, "reference.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	ids, err := ref.IDs("p0.ids")
	if err != nil {
		t.Fatal(err)
	}
	want, _, err := ref.F32("p0.logits")
	if err != nil {
		t.Fatal(err)
	}
	for _, bits := range []int{2, 3} {
		if _, err := requant.Requantize(context.Background(), dir, requant.Options{Bits: bits}); err != nil {
			t.Fatal(err)
		}
		opts := Options{Dir: dir, ExpertsDir: requant.DirName(bits)}
		if bits == 2 {
			opts = Options{Dir: dir, TwoBit: true}
		}
		e, err := Open(context.Background(), opts)
		if err != nil {
			t.Fatal(err)
		}
		if e.Set.Bits != bits {
			t.Fatalf("opened the %d-bit set, want %d", e.Set.Bits, bits)
		}
		V := e.Model.Config().VocabSize
		pre, err := e.Logits(context.Background(), ids, false)
		if err != nil {
			t.Fatal(err)
		}
		dec, err := e.Logits(context.Background(), ids, true)
		if err != nil {
			t.Fatal(err)
		}
		var agree int
		var kl float64
		for r := range ids {
			if c := hfload.CompareRow(dec[r*V:(r+1)*V], pre[r*V:(r+1)*V]); c.RelErr > 1e-4 {
				t.Errorf("%d-bit experts: prefill and decode differ at row %d by %g", bits, r, c.RelErr)
			}
			c := hfload.CompareRow(pre[r*V:(r+1)*V], want[r*V:(r+1)*V])
			if c.GotArgmax == c.RefArgmax {
				agree++
			}
			k := hfload.KL(pre[r*V:(r+1)*V], want[r*V:(r+1)*V])
			if math.IsNaN(k) || math.IsInf(k, 0) {
				t.Fatalf("%d-bit experts: row %d KL %v", bits, r, k)
			}
			kl += k
		}
		e.Close()
		t.Logf("tiny-code, 4-bit dense + %d-bit experts: top-1 agreement %.1f%% (%d/%d), mean KL %.4f nats vs bf16",
			bits, 100*float64(agree)/float64(len(ids)), agree, len(ids), kl/float64(len(ids)))
	}
}
