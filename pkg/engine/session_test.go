package engine

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// TestSessionReusesState: each turn continues from the longest consumed prefix
// (the live state, or the snapshot after the previous prompt) and generates
// exactly what a fresh run over the whole conversation generates.
func TestSessionReusesState(t *testing.T) {
	e, err := Open(context.Background(), Options{Dir: prepared(t, "qwen3next-tiny", "hf")})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	fresh := func(ids []int) []int {
		res, err := e.Generate(ctx, e.Model.NewState(), ids, GenerateOptions{MaxTokens: 5, Sampler: greedy{}})
		if err != nil {
			t.Fatal(err)
		}
		return res.Tokens
	}
	s := e.NewSession()
	turn := func(ids []int, wantReused int) []int {
		t.Helper()
		res, err := s.Generate(ctx, ids, GenerateOptions{MaxTokens: 5, Sampler: greedy{}})
		if err != nil {
			t.Fatal(err)
		}
		if s.Reused != wantReused {
			t.Errorf("turn over %d tokens reused %d, want %d", len(ids), s.Reused, wantReused)
		}
		if want := fresh(ids); fmt.Sprint(res.Tokens) != fmt.Sprint(want) {
			t.Errorf("session generated %v, a fresh run %v", res.Tokens, want)
		}
		return res.Tokens
	}
	p1 := []int{11, 12, 13, 14, 15, 16}
	g1 := turn(p1, 0)
	// The next prompt extends everything fed so far: the live state continues.
	p2 := append(append(append([]int{}, p1...), g1[:len(g1)-1]...), 21, 22, 23)
	g2 := turn(p2, len(p1)+len(g1)-1)
	// A prompt that re-renders the last answer differently: back to the
	// snapshot taken after p2.
	p3 := append(append([]int{}, p2...), 31, 32, g2[0])
	turn(p3, len(p2))
	// Something unrelated starts over.
	turn([]int{40, 41, 42}, 0)
}

// TestSessionKeepsPrefixAfterInterrupt: a reply cut short (Ctrl-C in chat)
// keeps what the session had consumed up to the prompt; the next turn does
// not process the conversation again from the start.
func TestSessionKeepsPrefixAfterInterrupt(t *testing.T) {
	e, err := Open(context.Background(), Options{Dir: prepared(t, "qwen3next-tiny", "hf")})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	s := e.NewSession()
	p1 := []int{11, 12, 13, 14, 15, 16}
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	res, err := s.Generate(ctx, p1, GenerateOptions{MaxTokens: 50, Sampler: samplerFunc(func(l []float32, h []int) int {
		if n++; n == 3 {
			cancel()
		}
		return greedy{}.Sample(l, h)
	})})
	if !errors.Is(err, context.Canceled) || res == nil || len(res.Tokens) != 3 {
		t.Fatalf("interrupted turn: %v, %v", res, err)
	}
	// The next turn holds the conversation so far (the partial reply included).
	p2 := append(append(append([]int{}, p1...), res.Tokens...), 21, 22)
	if _, err := s.Generate(context.Background(), p2, GenerateOptions{MaxTokens: 2, Sampler: greedy{}}); err != nil {
		t.Fatal(err)
	}
	if s.Reused < len(p1) {
		t.Errorf("after an interrupted reply the next turn reused %d tokens, want at least the %d of the previous prompt", s.Reused, len(p1))
	}
}
