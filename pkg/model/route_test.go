package model

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestRouteTokensSplitsExactly checks that spreading a prompt chunk's routing
// over goroutines gives exactly the serial result, for chunk sizes around the
// threshold and expert counts of real models.
func TestRouteTokensSplitsExactly(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, c := range []struct{ T, E, K int }{
		{1, 128, 8}, {63, 128, 8}, {64, 128, 8}, {129, 128, 8}, {512, 128, 8}, {300, 512, 10}, {97, 64, 4},
	} {
		logits := make([]float32, c.T*c.E)
		for i := range logits {
			logits[i] = float32(r.NormFloat64() * 3)
		}
		for _, renorm := range []bool{false, true} {
			serialLogits := slices.Clone(logits)
			wantIDs, wantW := make([]int, c.T*c.K), make([]float32, c.T*c.K)
			for tok := 0; tok < c.T; tok++ {
				route(serialLogits[tok*c.E:(tok+1)*c.E], c.K, renorm, wantIDs[tok*c.K:(tok+1)*c.K], wantW[tok*c.K:(tok+1)*c.K])
			}
			gotLogits := slices.Clone(logits)
			gotIDs, gotW := make([]int, c.T*c.K), make([]float32, c.T*c.K)
			routeTokens(gotLogits, c.T, c.E, c.K, renorm, gotIDs, gotW)
			if !slices.Equal(gotIDs, wantIDs) || !slices.Equal(gotW, wantW) || !slices.Equal(gotLogits, serialLogits) {
				t.Errorf("T=%d E=%d K=%d renorm=%v: routeTokens differs from routing token by token", c.T, c.E, c.K, renorm)
			}
		}
	}
}

// BenchmarkRouteTokens is the host routing of one 512-token prefill chunk of
// Qwen3-30B-A3B (128 experts, top 8), which a GPU waits for idle.
func BenchmarkRouteTokens(b *testing.B) {
	const T, E, K = 512, 128, 8
	r := rand.New(rand.NewPCG(1, 2))
	src := make([]float32, T*E)
	for i := range src {
		src[i] = float32(r.NormFloat64())
	}
	logits := make([]float32, T*E)
	ids, w := make([]int, T*K), make([]float32, T*K)
	for b.Loop() {
		copy(logits, src)
		routeTokens(logits, T, E, K, true, ids, w)
	}
}
