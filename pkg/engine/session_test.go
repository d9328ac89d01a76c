package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/fm-moe/fm/pkg/backend"
	"github.com/fm-moe/fm/pkg/backend/backendtest"
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

// flipCtx is a context that is never done but whose Err reports Canceled
// once armed and asked `left` more times: a cancellation that arrives at a
// chosen check (between tokens, or inside a step's layers) deterministically.
type flipCtx struct {
	context.Context
	armed atomic.Bool
	left  atomic.Int32
}

func (c *flipCtx) arm(left int32) { c.left.Store(left); c.armed.Store(true) }

func (c *flipCtx) Err() error {
	if !c.armed.Load() || c.left.Add(-1) >= 0 {
		return nil
	}
	return context.Canceled
}

// countingEngine opens dir on the CPU backend wrapped to count its states.
func countingEngine(t *testing.T, dir string, opts Options) (*Engine, *backendtest.Counting) {
	t.Helper()
	dev, err := backend.Open("cpu", backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := backendtest.NewCounting(dev)
	opts.Dir, opts.Device = dir, c
	e, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e, c
}

// TestSessionKeepsReplyAfterInterrupt: a reply cut short (Ctrl-C in chat)
// keeps what the state consumed — the prompt and the partial reply — when
// the cancellation arrives between tokens or inside a decode step (which
// runs to its end), so the next turn, which carries the partial reply, only
// processes its new tokens, and generates what a fresh run generates. A
// cancellation inside the prefill leaves the state half done: the session
// falls back to the snapshot after the previous prompt. Every state the
// session made is released by Close.
func TestSessionKeepsReplyAfterInterrupt(t *testing.T) {
	e, dev := countingEngine(t, prepared(t, "qwen3next-tiny", "hf"), Options{})
	fresh := func(ids []int) []int {
		st := e.Model.NewState()
		defer st.Release()
		res, err := e.Generate(context.Background(), st, ids, GenerateOptions{MaxTokens: 5, Sampler: greedy{}})
		if err != nil {
			t.Fatal(err)
		}
		return res.Tokens
	}
	p0 := []int{11, 12, 13, 14, 15, 16}
	for _, c := range []struct {
		name string
		// after is the generated token after which the context is
		// cancelled (0: before the turn); checks is how many ctx.Err
		// calls still pass after that.
		after      int
		checks     int32
		wantTokens int
		// wantReused is the next turn's reuse, given the interrupted
		// turn's prompt and tokens.
		wantReused func(p1, gen []int) int
	}{
		{"between tokens", 3, 0, 3, func(p1, gen []int) int { return len(p1) + len(gen) - 1 }},
		// The engine's check between tokens passes; the step's first layer
		// would see the cancellation, but the step finishes.
		{"inside a decode step", 3, 1, 4, func(p1, gen []int) int { return len(p1) + len(gen) - 1 }},
		// The prefill's first layer passes, the cancellation stops it after.
		{"inside the prefill", 0, 1, 0, func([]int, []int) int { return len(p0) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := e.NewSession()
			defer func() {
				s.Close()
				if n := dev.Live(); n != 0 {
					t.Errorf("%d states alive after the session closed", n)
				}
			}()
			res, err := s.Generate(context.Background(), p0, GenerateOptions{MaxTokens: 5, Sampler: greedy{}})
			if err != nil {
				t.Fatal(err)
			}
			p1 := slices.Concat(p0, res.Tokens[:len(res.Tokens)-1], []int{21, 22, 23})
			ctx := &flipCtx{Context: context.Background()}
			if c.after == 0 {
				ctx.arm(c.checks)
			}
			n := 0
			res, err = s.Generate(ctx, p1, GenerateOptions{MaxTokens: 50, Sampler: samplerFunc(func(l []float32, h []int) int {
				if n++; n == c.after {
					ctx.arm(c.checks)
				}
				return greedy{}.Sample(l, h)
			})})
			if !errors.Is(err, context.Canceled) || res == nil || len(res.Tokens) != c.wantTokens {
				var got []int
				if res != nil {
					got = res.Tokens
				}
				t.Fatalf("interrupted turn: tokens %v, error %v; want %d tokens and context.Canceled", got, err, c.wantTokens)
			}
			// The next turn holds the conversation so far, the partial reply
			// included.
			p2 := slices.Concat(p1, res.Tokens, []int{31, 32})
			next, err := s.Generate(context.Background(), p2, GenerateOptions{MaxTokens: 5, Sampler: greedy{}})
			if err != nil {
				t.Fatal(err)
			}
			if want := c.wantReused(p1, res.Tokens); s.Reused != want {
				t.Errorf("after the interrupted reply the next turn reused %d tokens, want %d", s.Reused, want)
			}
			if want := fresh(p2); !slices.Equal(next.Tokens, want) {
				t.Errorf("next turn generated %v, a fresh run %v", next.Tokens, want)
			}
			if err := dev.Misuse(); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestGenerateReservesRequest: Generate makes the KV room for the prompt and
// MaxTokens before the prefill (backend.Reserver), so the caches do not grow
// during the decode, and no more than that. On the CPU backend, whose state
// implements Reserver (a CUDA state keeps its own sizes).
func TestGenerateReservesRequest(t *testing.T) {
	e, err := Open(context.Background(), Options{Dir: prepared(t, "qwen3next-tiny", "hf"), Backend: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	ids := []int{1, 2, 3, 4, 5}
	reserved := func(n int) int64 {
		st := e.Model.NewState()
		if err := st.Reserve(n); err != nil {
			t.Fatal(err)
		}
		return st.Bytes()
	}
	for _, maxTokens := range []int{3, 40} {
		st := e.Model.NewState()
		// Stop after the first token: the reservation is the request's, not
		// what it used.
		_, err := e.Generate(ctx, st, ids, GenerateOptions{MaxTokens: maxTokens, Stop: []int{0},
			Sampler: samplerFunc(func(l []float32, h []int) int { return 0 })})
		if err != nil {
			t.Fatal(err)
		}
		if want := reserved(len(ids) + maxTokens); st.Bytes() != want {
			t.Errorf("MaxTokens %d: state holds %d bytes after Generate, a reservation of %d positions %d", maxTokens, st.Bytes(), len(ids)+maxTokens, want)
		}
	}
	st := e.Model.NewState()
	if _, err := e.Generate(ctx, st, ids, GenerateOptions{MaxTokens: 2, Sampler: greedy{}}); err != nil {
		t.Fatal(err)
	}
	if big := reserved(len(ids) + 40); st.Bytes() >= big {
		t.Errorf("a 2-token request holds %d bytes, as much as a 40-token reservation (%d)", st.Bytes(), big)
	}
}
