package sample

import (
	"math/rand/v2"
	"testing"
	"time"
)

// qwenVocab is the Qwen3.5 vocabulary size: the row length the sampler sees.
const qwenVocab = 248320

func benchLogits() ([]float32, []int) {
	r := rand.New(rand.NewPCG(1, 2))
	logits := make([]float32, qwenVocab)
	for i := range logits {
		logits[i] = float32(r.NormFloat64() * 3)
	}
	history := make([]int, 256)
	for i := range history {
		history[i] = r.IntN(qwenVocab)
	}
	return logits, history
}

// copyCeiling is the least any sampler that leaves the caller's row alone must
// do per token: copy the row once (best of 50).
func copyCeiling(logits []float32) time.Duration {
	dst := make([]float32, len(logits))
	best := time.Duration(1 << 62)
	for range 50 {
		start := time.Now()
		copy(dst, logits)
		best = min(best, time.Since(start))
	}
	return best
}

// BenchmarkSample reports the time per token and its ratio to one copy of
// the row (x-copy), for greedy decoding and for the settings Qwen recommends.
func BenchmarkSample(b *testing.B) {
	logits, history := benchLogits()
	ceiling := copyCeiling(logits)
	for _, tc := range []struct {
		name string
		p    Params
	}{
		{"greedy", Params{}},
		{"greedy+penalty", Params{RepeatPenalty: 1.1, RepeatLastN: 64}},
		{"T0.7-topk20-topp0.8", Params{Temperature: 0.7, TopK: 20, TopP: 0.8, Seed: 1}},
		{"T0.7-topk20-topp0.8+penalty", Params{Temperature: 0.7, TopK: 20, TopP: 0.8, RepeatPenalty: 1.05, RepeatLastN: 64, Seed: 1}},
		{"T0.6-topk20-topp0.95", Params{Temperature: 0.6, TopK: 20, TopP: 0.95, Seed: 1}},
		{"T1-topk40", Params{Temperature: 1, TopK: 40, Seed: 1}},
		{"T0.6-topp0.95", Params{Temperature: 0.6, TopP: 0.95, Seed: 1}},
		{"T1-minp0.05", Params{Temperature: 1, MinP: 0.05, Seed: 1}},
		{"T1-plain", Params{Temperature: 1, Seed: 1}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			s := New(tc.p)
			for b.Loop() {
				s.Sample(logits, history)
			}
			perOp := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			b.ReportMetric(perOp/float64(ceiling.Nanoseconds()), "x-copy")
		})
	}
}
