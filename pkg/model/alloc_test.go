package model_test

import (
	"context"
	"testing"

	"github.com/fm-moe/fm/pkg/layout"
)

// TestDecodeAllocations: a decode step (one token through every layer,
// routing, the experts, the head) allocates nothing that grows with the
// experts, K or the vocabulary once the state's workspace exists: routing,
// expert binding, tensor views and the logits reuse the state's and the
// device's memory. What is left, and allowed here, is per layer: the
// closures the CPU backend hands its worker pool (2 per GatedDeltaNet layer,
// at most 5 per attention layer) and the [][]byte that an Experts source
// returns from FetchExperts (1 per sparse layer) — tens of bytes each, ~30
// objects per token on tiny-code against 227 before.
func TestDecodeAllocations(t *testing.T) {
	if testing.Short() {
		t.Skip("loads the tiny-code model")
	}
	m, st := tinyCodeAfterPrompt(t)
	ctx := context.Background()
	logits := make([]float32, m.Config().VocabSize)
	tok := 100
	step := func() {
		if err := m.Decode(ctx, st, tok, logits); err != nil {
			t.Fatal(err)
		}
		tok = 100 + (tok+7)%50
	}
	step() // first use of the decode-sized workspace
	cfg := m.Config()
	allowed := 0
	for i, typ := range cfg.LayerTypes {
		if typ == layout.FullAttention {
			allowed += 5
		} else {
			allowed += 2
		}
		if cfg.SparseLayers[i] {
			allowed++
		}
	}
	if n := testing.AllocsPerRun(50, step); n > float64(allowed) {
		t.Errorf("decode step: %.1f allocations, want at most %d", n, allowed)
	}
}

// BenchmarkDecodeAllocs is Decode on tiny-code with allocations reported
// (go test -bench DecodeAllocs -memprofile shows where they come from).
func BenchmarkDecodeAllocs(b *testing.B) {
	m, st := tinyCodeAfterPrompt(b)
	ctx := context.Background()
	logits := make([]float32, m.Config().VocabSize)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := m.Decode(ctx, st, 100+i%50, logits); err != nil {
			b.Fatal(err)
		}
	}
}
