package engine

import (
	"context"
	"errors"
	"math"
	"slices"
	"testing"
)

// TestPrefixCacheReuse runs conversations through a PrefixCache on the
// trained tiny-code model (GatedDeltaNet and full-attention layers) and
// checks each turn against a fresh prefill of the whole sequence: the same
// greedy tokens, the expected number of reused tokens, and — for the state a
// turn continues from — next-token logits equal to the fresh prefill's within
// float32 reordering (the prefill's chunk boundaries move).
func TestPrefixCacheReuse(t *testing.T) {
	e, err := Open(context.Background(), Options{Dir: convert(t, tinyCodeDir, 16)})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	const n = 24
	fresh := func(ids []int) []int {
		res, err := e.Generate(ctx, e.Model.NewState(), ids, GenerateOptions{MaxTokens: n, Sampler: greedy{}, History: ids})
		if err != nil {
			t.Fatal(err)
		}
		return res.Tokens
	}
	c := e.NewPrefixCache(64 << 20)
	turn := func(ids, marks []int, wantCached int) []int {
		t.Helper()
		if st, start := c.lookup(ids); start > 0 {
			// The reused state's next-token logits against a fresh prefill.
			got, err := e.Model.Forward(ctx, st, ids[start:], false)
			if err != nil {
				t.Fatal(err)
			}
			all, err := e.Logits(ctx, ids, false)
			if err != nil {
				t.Fatal(err)
			}
			V := e.Model.Config().VocabSize
			want := all[len(all)-V:]
			worst := 0.0
			for i := range got {
				worst = math.Max(worst, math.Abs(float64(got[i]-want[i])))
			}
			t.Logf("%d tokens, %d reused: max |Δlogit| %.2g", len(ids), start, worst)
			if worst > 1e-3 {
				t.Errorf("reused state: logits differ from a fresh prefill by up to %g", worst)
			}
		}
		res, err := c.Generate(ctx, ids, marks, GenerateOptions{MaxTokens: n, Sampler: greedy{}})
		if err != nil {
			t.Fatal(err)
		}
		if res.CachedTokens != wantCached {
			t.Errorf("turn over %d tokens reused %d, want %d", len(ids), res.CachedTokens, wantCached)
		}
		if want := fresh(ids); !slices.Equal(res.Tokens, want) {
			t.Errorf("reused generation %v, a fresh prefill %v", res.Tokens, want)
		}
		return res.Tokens
	}
	seq := func(parts ...[]int) []int { return slices.Concat(parts...) }
	p1 := []int{11, 12, 13, 14, 15, 16, 17, 18, 19, 20}
	g1 := turn(p1, []int{6}, 0)
	// Extends everything fed (the state at the end of the generation).
	p2 := seq(p1, g1[:len(g1)-1], []int{21, 22, 23})
	g2 := turn(p2, nil, len(p1)+len(g1)-1)
	// Re-renders the last answer differently: back to the end of p2.
	p3 := seq(p2, []int{31, 32}, g2[:3])
	turn(p3, nil, len(p2))
	// Diverges inside p1, after the mark at 6: only the mark's state fits.
	p4 := seq(p1[:8], []int{41, 42, 43})
	turn(p4, nil, 6)
	// Diverges before any snapshot: from scratch.
	turn([]int{11, 50, 51}, nil, 0)
	if s := c.Stats(); s.Entries == 0 || s.Bytes <= 0 || s.Hits != 3 {
		t.Errorf("cache stats %+v: want entries, bytes and 3 hits", s)
	}
}

// TestPrefixCacheBudget: the cache never holds more than its budget and
// drops the least recently used snapshot first.
func TestPrefixCacheBudget(t *testing.T) {
	e, err := Open(context.Background(), Options{Dir: prepared(t, "qwen3next-tiny", "hf")})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	one := e.Model.NewState()
	if _, err := e.Model.Forward(ctx, one, []int{1, 2, 3, 4}, false); err != nil {
		t.Fatal(err)
	}
	budget := 3 * one.Clone().Bytes()
	c := e.NewPrefixCache(budget)
	for i := range 6 {
		ids := []int{1 + i, 2, 3, 4, 5}
		if _, err := c.Generate(ctx, ids, nil, GenerateOptions{MaxTokens: 1, Sampler: greedy{}}); err != nil {
			t.Fatal(err)
		}
		if s := c.Stats(); s.Bytes > budget {
			t.Fatalf("cache holds %d bytes, budget %d", s.Bytes, budget)
		}
	}
	// The latest prompt's snapshot survived; the first one was dropped.
	if _, n := c.lookup([]int{6, 2, 3, 4, 5, 9}); n != 5 {
		t.Errorf("latest snapshot not found (reused %d)", n)
	}
	if _, n := c.lookup([]int{1, 2, 3, 4, 5, 9}); n != 0 {
		t.Errorf("oldest snapshot still cached (reused %d)", n)
	}
	// Disabled cache: no reuse.
	off := e.NewPrefixCache(0)
	for range 2 {
		res, err := off.Generate(ctx, []int{1, 2, 3}, nil, GenerateOptions{MaxTokens: 2, Sampler: greedy{}})
		if err != nil {
			t.Fatal(err)
		}
		if res.CachedTokens != 0 {
			t.Errorf("disabled cache reused %d tokens", res.CachedTokens)
		}
	}
}

// TestPrefixCacheReleasesStates: every state the cache makes — a request's
// copy of a snapshot or its fresh state, each snapshot taken — is released
// exactly once, whatever ends the request (success, a prompt refused for
// the context, cancellation inside the prefill or between tokens, a device
// that cannot copy a state) and whatever happens to the snapshot (kept,
// declined as a duplicate or too large, evicted). Between requests the only
// live states are the cache's snapshots; after Clear, none.
func TestPrefixCacheReleasesStates(t *testing.T) {
	e, dev := countingEngine(t, prepared(t, "qwen3next-tiny", "hf"), Options{ContextSize: 64})
	ctx := context.Background()
	probe := e.Model.NewState()
	if _, err := e.Model.Forward(ctx, probe, []int{1, 2, 3, 4, 5, 6, 7, 8}, false); err != nil {
		t.Fatal(err)
	}
	// Room for about three snapshots of these lengths: evictions happen.
	c := e.NewPrefixCache(3 * probe.Bytes())
	small := e.NewPrefixCache(probe.Bytes() / 2)
	probe.Release()
	errNoMemory := errors.New("out of device memory")
	base := []int{11, 12, 13, 14, 15, 16, 17, 18}
	steps := []struct {
		name    string
		ids     []int
		marks   []int
		ctx     func() context.Context // nil: background
		cancel  int                    // cancel after this many sampled tokens (0: never)
		noClone bool                   // every Clone fails
		small   bool                   // through a cache too small for any snapshot
		wantErr bool
	}{
		{name: "fresh, with a mark", ids: base, marks: []int{4}},
		{name: "continued (hit)", ids: slices.Concat(base, []int{21, 22})},
		{name: "same again (duplicate snapshots)", ids: slices.Concat(base, []int{21, 22})},
		{name: "refused: does not fit the context", ids: slices.Concat(base, []int{21, 22}, make([]int, 64)), wantErr: true},
		{name: "cancelled between tokens", ids: slices.Concat(base, []int{31}), cancel: 2, wantErr: true},
		{name: "cancelled inside the prefill", ids: slices.Concat(base, []int{41, 42, 43}), wantErr: true,
			ctx: func() context.Context { c := &flipCtx{Context: ctx}; c.arm(1); return c }},
		{name: "clones fail", ids: slices.Concat(base, []int{51, 52}), marks: []int{9}, noClone: true},
		{name: "others evict", ids: []int{61, 62, 63, 64, 65, 66, 67, 68, 69}},
		{name: "others evict 2", ids: []int{71, 72, 73, 74, 75, 76, 77, 78, 79}},
		{name: "others evict 3", ids: []int{81, 82, 83, 84, 85, 86, 87, 88, 89}},
		{name: "too large for the budget", ids: slices.Concat(base, []int{91}), small: true},
	}
	for _, s := range steps {
		dev.SetCloneError(nil)
		if s.noClone {
			dev.SetCloneError(errNoMemory)
		}
		rctx, cancel := context.WithCancel(ctx)
		if s.ctx != nil {
			// (A context derived from it would not ask its Err.)
			rctx = s.ctx()
		}
		n := 0
		cache := c
		if s.small {
			cache = small
		}
		_, err := cache.Generate(rctx, s.ids, s.marks, GenerateOptions{MaxTokens: 4, Sampler: samplerFunc(func(l []float32, h []int) int {
			if n++; n == s.cancel {
				cancel()
			}
			return greedy{}.Sample(l, h)
		})})
		cancel()
		if (err != nil) != s.wantErr {
			t.Errorf("%s: error %v, want an error %v", s.name, err, s.wantErr)
		}
		st := c.Stats()
		if live := dev.Live(); live != st.Entries {
			t.Errorf("%s: %d states alive, the cache holds %d snapshots", s.name, live, st.Entries)
		}
		if st.Bytes > c.maxBytes {
			t.Errorf("%s: the cache holds %d bytes, budget %d", s.name, st.Bytes, c.maxBytes)
		}
		t.Logf("%s: %d snapshots (%d of %d bytes), %d states made so far", s.name, st.Entries, st.Bytes, c.maxBytes, dev.Made())
	}
	if s := c.Stats(); s.Hits < 2 {
		t.Errorf("%d generations started from a snapshot, want at least 2", s.Hits)
	}
	if s := small.Stats(); s.Entries != 0 {
		t.Errorf("a cache smaller than any snapshot holds %d", s.Entries)
	}
	c.Clear()
	if live, s := dev.Live(), c.Stats(); live != 0 || s.Entries != 0 || s.Bytes != 0 {
		t.Errorf("after Clear: %d states alive, stats %+v", live, s)
	}
	if err := dev.Misuse(); err != nil {
		t.Error(err)
	}
	// The cache still works after Clear.
	if _, err := c.Generate(ctx, base, nil, GenerateOptions{MaxTokens: 2, Sampler: greedy{}}); err != nil {
		t.Fatal(err)
	}
	c.Clear()
	if live := dev.Live(); live != 0 {
		t.Errorf("%d states alive", live)
	}
}
