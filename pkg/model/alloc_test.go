package model_test

import (
	"context"
	"testing"
)

// TestDecodeAllocations: a decode step (one token through every layer,
// routing, the experts, the head) allocates nothing once the state's
// workspace exists: routing, expert binding, tensor views and the logits
// reuse the state's and the device's memory, the CPU backend hands its
// worker pool recycled task structs rather than closures, and FetchExperts
// fills a slice the model owns. (From 227 objects per token on tiny-code, then
// ~30 — closures and fetch slices — to none.) What still allocates is
// amortized, not per token: the KV cache and the attention scores grow
// geometrically with the context, a few reallocations over these 50 steps,
// which AllocsPerRun's whole-number average rounds to 0; a per-token
// allocation anywhere makes it at least 1. The experts here are in memory;
// pkg/engine's TestDecodeAllocationsFromFiles holds the expert store's read
// paths (pread, O_DIRECT, RAM cache, mmap) to the same 0.
func TestDecodeAllocations(t *testing.T) {
	if testing.Short() {
		t.Skip("loads the tiny-code model")
	}
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop recycled objects")
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
	if n := testing.AllocsPerRun(50, step); n != 0 {
		t.Errorf("decode step: %.1f allocations, want 0 (go test -bench DecodeAllocs -memprofile mem.out -memprofilerate 1 shows where)", n)
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
