package engine

import (
	"context"
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
