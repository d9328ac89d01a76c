package engine

import (
	"context"
	"testing"

	"github.com/fm-moe/fm/pkg/backend"
	"github.com/fm-moe/fm/pkg/backend/cpu"
	"github.com/fm-moe/fm/pkg/experts"
)

// oneAtATime is the CPU device without its optional interfaces
// (backend.ExpertBatcher among them), so the model takes moe's
// one-expert-at-a-time loop with the deferred "hold" release a GPU uses.
type oneAtATime struct{ backend.Device }

// TestStoreSlotsOnBothExpertLoops: the prepared tiny-code decodes to the same
// logits through moe's batched loop (the CPU device's ExpertFFNs) and its
// one-at-a-time loop with held releases, both fetching through the store's
// Slots, on the page-cache and the O_DIRECT + RAM-cache paths; a prompt of
// 24 tokens routes to more experts than half the fetch window, so held
// experts are released while later ones are still read.
func TestStoreSlotsOnBothExpertLoops(t *testing.T) {
	if testing.Short() {
		t.Skip("converts and loads the tiny-code model")
	}
	prompt := make([]int, 24)
	for i := range prompt {
		prompt[i] = 10 + (i*37)%3000
	}
	run := func(opts Options) []float32 {
		t.Helper()
		opts.Dir = tinyCodePrepared(t)
		e, err := Open(context.Background(), opts)
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		st := e.Model.NewState()
		defer st.Release()
		ctx := context.Background()
		out, err := e.Model.Forward(ctx, st, prompt, false)
		if err != nil {
			t.Fatal(err)
		}
		out = append([]float32(nil), out...)
		logits := make([]float32, e.Model.Config().VocabSize)
		for i := range 6 {
			if err := e.Model.Decode(ctx, st, 100+i, logits); err != nil {
				t.Fatal(err)
			}
			out = append(out, logits...)
		}
		return out
	}
	for _, store := range []experts.Options{{}, {DirectIO: true, CacheBytes: 2 << 20}} {
		batched := run(Options{Store: store})
		single := run(Options{Store: store, Device: oneAtATime{cpu.NewDevice(0)}})
		if len(batched) != len(single) {
			t.Fatalf("%d and %d logits", len(batched), len(single))
		}
		for i := range batched {
			if batched[i] != single[i] {
				t.Fatalf("store %+v: logit %d: batched %v, one at a time %v", store, i, batched[i], single[i])
			}
		}
	}
}
