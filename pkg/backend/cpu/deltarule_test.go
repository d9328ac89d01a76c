package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// randDeltaHead draws a head's inputs the way the model produces them:
// L2-normalized q̂ (times dk^−½) and k̂, β = sigmoid(·), g = −e^A·softplus(·).
func randDeltaHead(r *rand.Rand, T, dk, dv int, decay float64) *deltaHead {
	h := &deltaHead{dk: dk, dv: dv, q: make([]float32, T*dk), k: make([]float32, T*dk), v: make([]float32, T*dv),
		beta: make([]float32, T), g: make([]float32, T)}
	for i := range h.q {
		h.q[i], h.k[i] = float32(r.NormFloat64()), float32(r.NormFloat64())
	}
	for i := range h.v {
		h.v[i] = float32(r.NormFloat64())
	}
	for t := 0; t < T; t++ {
		L2Normalize(h.q[t*dk:(t+1)*dk], 1e-6, float32(1/math.Sqrt(float64(dk))))
		L2Normalize(h.k[t*dk:(t+1)*dk], 1e-6, 1)
		h.beta[t] = Sigmoid(float32(r.NormFloat64()))
		h.g[t] = -float32(decay) * Softplus(float32(r.NormFloat64()))
	}
	return h
}

func relErr(got, want []float32) float64 {
	var num, den float64
	for i := range want {
		d := float64(got[i] - want[i])
		num += d * d
		den += float64(want[i]) * float64(want[i])
	}
	return math.Sqrt(num / den)
}

// TestChunkedDeltaRuleMatchesRecurrence runs both forms from the same non-zero
// state over one, several and partial chunks, with slow and fast decay, and
// compares the outputs and the state left for decode.
func TestChunkedDeltaRuleMatchesRecurrence(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	for _, tc := range []struct {
		T, dk, dv int
		decay     float64
	}{
		{150, 64, 64, 0.05}, {150, 64, 64, 1}, {64, 32, 48, 0.2}, {1, 16, 16, 0.5}, {200, 64, 128, 0.01}, {70, 40, 24, 3},
	} {
		t.Run(fmt.Sprintf("T%d_dk%d_dv%d_decay%g", tc.T, tc.dk, tc.dv, tc.decay), func(t *testing.T) {
			h := randDeltaHead(r, tc.T, tc.dk, tc.dv, tc.decay)
			S0 := make([]float32, tc.dk*tc.dv)
			for i := range S0 {
				S0[i] = float32(r.NormFloat64() * 0.3)
			}
			Sr, Sc := slices.Clone(S0), slices.Clone(S0)
			or, oc := make([]float32, tc.T*tc.dv), make([]float32, tc.T*tc.dv)
			recurrentDeltaRule(Sr, h, or)
			chunkedDeltaRule(Sc, h, oc)
			eo, es := relErr(oc, or), relErr(Sc, Sr)
			t.Logf("relative error: output %.3g, state %.3g", eo, es)
			if !(eo <= 2e-6) || !(es <= 2e-6) {
				t.Errorf("chunked vs recurrent: relative error output %.3g, state %.3g, want ≤ 2e-6", eo, es)
			}
		})
	}
}

// BenchmarkDeltaRule is one value head of tiny-code (dk = dv = 64) over a
// 2048-token prefill, token by token and chunked, with slow and fast decay
// (fast decay is where subnormal numbers would appear).
func BenchmarkDeltaRule(b *testing.B) {
	const T, dk, dv = 2048, 64, 64
	for _, decay := range []float64{0.1, 20} {
		h := randDeltaHead(rand.New(rand.NewPCG(1, 2)), T, dk, dv, decay)
		S := make([]float32, dk*dv)
		o := make([]float32, T*dv)
		for _, bc := range []struct {
			name string
			fn   func([]float32, *deltaHead, []float32)
		}{{"recurrent", recurrentDeltaRule}, {"chunked", chunkedDeltaRule}} {
			b.Run(fmt.Sprintf("decay%g/%s", decay, bc.name), func(b *testing.B) {
				for range b.N {
					clear(S)
					bc.fn(S, h, o)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*T), "ns/token")
			})
		}
	}
}
