package sample

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

var negInf = float32(math.Inf(-1))

// logitsOf returns logits whose softmax is probs.
func logitsOf(probs ...float64) []float32 {
	out := make([]float32, len(probs))
	for i, p := range probs {
		out[i] = float32(math.Log(p))
	}
	return out
}

// distribution returns the probability of every token the sampler may draw.
func distribution(s *Sampler, logits []float32, history []int) map[int]float64 {
	cands, id := s.candidates(logits, history)
	if cands == nil {
		return map[int]float64{id: 1}
	}
	best := cands[0].logit
	for _, c := range cands {
		best = max(best, c.logit)
	}
	var sum float64
	for _, c := range cands {
		sum += math.Exp(float64(c.logit - best))
	}
	out := map[int]float64{}
	for _, c := range cands {
		out[c.id] = math.Exp(float64(c.logit-best)) / sum
	}
	return out
}

// reference is the processing written the plain way, after transformers'
// RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
// TopKLogitsWarper, TopPLogitsWarper and MinPLogitsWarper: full-vocabulary
// sorts and softmaxes, no shortcuts.
func reference(p Params, logits []float32, history []int) map[int]float64 {
	scores := slices.Clone(logits)
	if p.RepeatPenalty != 0 && p.RepeatPenalty != 1 {
		window := history
		if p.RepeatLastN > 0 && p.RepeatLastN < len(window) {
			window = window[len(window)-p.RepeatLastN:]
		}
		seen := map[int]bool{}
		for _, id := range window {
			if seen[id] {
				continue
			}
			seen[id] = true
			if scores[id] > 0 {
				scores[id] /= p.RepeatPenalty
			} else {
				scores[id] *= p.RepeatPenalty
			}
		}
	}
	if p.Temperature <= 0 {
		best := 0
		for i, v := range scores {
			if v > scores[best] {
				best = i
			}
		}
		return map[int]float64{best: 1}
	}
	for i := range scores {
		scores[i] /= p.Temperature
	}
	order := make([]int, len(scores))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		switch {
		case scores[a] > scores[b]:
			return -1
		case scores[a] < scores[b]:
			return 1
		}
		return 0
	})
	if k := p.TopK; k > 0 && k < len(scores) {
		kth := scores[order[k-1]]
		for i, v := range scores {
			if v < kth {
				scores[i] = negInf
			}
		}
	}
	softmax := func() []float64 {
		m := math.Inf(-1)
		for _, v := range scores {
			m = math.Max(m, float64(v))
		}
		out := make([]float64, len(scores))
		var sum float64
		for i, v := range scores {
			out[i] = math.Exp(float64(v) - m)
			sum += out[i]
		}
		for i := range out {
			out[i] /= sum
		}
		return out
	}
	if tp := float64(p.TopP); tp > 0 && tp < 1 {
		probs := softmax()
		above := 0.0
		for n, i := range order {
			if n > 0 && above >= tp {
				scores[i] = negInf
			}
			above += probs[i]
		}
	}
	if p.MinP > 0 {
		probs := softmax()
		top := slices.Max(probs)
		for i, q := range probs {
			if q < float64(p.MinP)*top {
				scores[i] = negInf
			}
		}
	}
	probs := softmax()
	out := map[int]float64{}
	for i, q := range probs {
		if q > 0 {
			out[i] = q
		}
	}
	return out
}

func sameDistribution(t *testing.T, what string, got, want map[int]float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d tokens to draw from, want %d\ngot  %v\nwant %v", what, len(got), len(want), got, want)
	}
	for id, w := range want {
		if g, ok := got[id]; !ok || math.Abs(g-w) > 1e-6 {
			t.Fatalf("%s: P(%d) = %v, want %v", what, id, g, w)
		}
	}
}

func TestGreedy(t *testing.T) {
	for _, tc := range []struct {
		name    string
		p       Params
		logits  []float32
		history []int
		want    int
	}{
		{"argmax", Params{}, []float32{1, 3, 2, 0}, nil, 1},
		{"lowest index on ties", Params{}, []float32{1, 3, 3, 2}, nil, 1},
		{"nan never wins", Params{}, []float32{float32(math.NaN()), 1, 0}, nil, 1},
		{"negative temperature is greedy", Params{Temperature: -1}, []float32{0, 0, 5}, nil, 2},
		{"penalty divides a positive logit", Params{RepeatPenalty: 2}, []float32{1, 3, 2.9, 2}, []int{1}, 2},
		{"penalty multiplies a negative logit", Params{RepeatPenalty: 2}, []float32{-1.5, -0.5, -2}, []int{1}, 1},
		{"penalty then tie: lowest index", Params{RepeatPenalty: 2}, []float32{-1, -0.5, -2}, []int{1}, 0},
		{"penalty window excludes old tokens", Params{RepeatPenalty: 10, RepeatLastN: 2}, []float32{5, 1, 1}, []int{0, 1, 2}, 0},
		{"all -inf", Params{}, []float32{negInf, negInf}, nil, 0},
		{"empty", Params{}, nil, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := New(tc.p).Sample(tc.logits, tc.history); got != tc.want {
				t.Errorf("Sample = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestDoesNotModifyLogits(t *testing.T) {
	logits := []float32{0.5, -1, 2, 0.25, -3}
	orig := slices.Clone(logits)
	s := New(Params{Temperature: 0.7, TopK: 3, TopP: 0.9, MinP: 0.05, RepeatPenalty: 1.3, Seed: 1})
	for range 10 {
		s.Sample(logits, []int{0, 1, 2, 2})
	}
	if !slices.Equal(logits, orig) {
		t.Errorf("logits changed: %v, was %v", logits, orig)
	}
}

func TestRepetitionPenalty(t *testing.T) {
	logits := []float32{4, -4, 2, 1}
	for _, tc := range []struct {
		name    string
		lastN   int
		history []int
		want    []float32
	}{
		{"once per distinct token", 0, []int{0, 0, 0, 1, 1}, []float32{2, -8, 2, 1}},
		{"window", 2, []int{0, 1, 2}, []float32{4, -8, 1, 1}},
		{"window longer than history", 10, []int{3}, []float32{4, -4, 2, 0.5}},
		{"out-of-range ids ignored", 0, []int{-1, 99, 2}, []float32{4, -4, 1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(Params{RepeatPenalty: 2, RepeatLastN: tc.lastN})
			if got := s.penalize(logits, tc.history); !slices.Equal(got, tc.want) {
				t.Errorf("penalized %v, want %v", got, tc.want)
			}
		})
	}
}

// Each filter on a hand-made distribution: P = 0.5, 0.3, 0.15, 0.05.
func TestFilters(t *testing.T) {
	logits := logitsOf(0.5, 0.3, 0.15, 0.05)
	for _, tc := range []struct {
		name string
		p    Params
		want map[int]float64
	}{
		{"none", Params{Temperature: 1}, map[int]float64{0: 0.5, 1: 0.3, 2: 0.15, 3: 0.05}},
		{"top-k 2", Params{Temperature: 1, TopK: 2}, map[int]float64{0: 0.5 / 0.8, 1: 0.3 / 0.8}},
		{"top-k above vocab", Params{Temperature: 1, TopK: 10}, map[int]float64{0: 0.5, 1: 0.3, 2: 0.15, 3: 0.05}},
		// Token 2 has 0.8 above it: removed at top-p 0.79, kept at 0.81 (exactly
		// 0.8 is a coin toss of float rounding, in transformers too).
		{"top-p 0.79", Params{Temperature: 1, TopP: 0.79}, map[int]float64{0: 0.5 / 0.8, 1: 0.3 / 0.8}},
		{"top-p 0.81", Params{Temperature: 1, TopP: 0.81}, map[int]float64{0: 0.5 / 0.95, 1: 0.3 / 0.95, 2: 0.15 / 0.95}},
		{"top-p tiny keeps one", Params{Temperature: 1, TopP: 0.01}, map[int]float64{0: 1}},
		{"min-p 0.25", Params{Temperature: 1, MinP: 0.25}, map[int]float64{0: 0.5 / 0.95, 1: 0.3 / 0.95, 2: 0.15 / 0.95}},
		{"min-p 0.7", Params{Temperature: 1, MinP: 0.7}, map[int]float64{0: 1}},
		// Temperature 0.5 squares the probabilities before renormalizing.
		{"temperature 0.5", Params{Temperature: 0.5}, map[int]float64{0: 0.25 / 0.3650, 1: 0.09 / 0.3650, 2: 0.0225 / 0.3650, 3: 0.0025 / 0.3650}},
		// Filters see the tempered distribution: at T=2 the probabilities are
		// ∝ √P = .707, .548, .387, .224 (sum 1.866), so top-p 0.8 keeps three.
		{"temperature 2 then top-p 0.8", Params{Temperature: 2, TopP: 0.8}, map[int]float64{0: 0.7071 / 1.6419, 1: 0.5477 / 1.6419, 2: 0.3873 / 1.6419}},
		{"top-k 3, top-p 0.9, min-p 0.5", Params{Temperature: 1, TopK: 3, TopP: 0.9, MinP: 0.5}, map[int]float64{0: 0.5 / 0.8, 1: 0.3 / 0.8}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := distribution(New(tc.p), logits, nil)
			for id, w := range tc.want {
				if math.Abs(got[id]-w) > 2e-4 {
					t.Errorf("P(%d) = %.4f, want %.4f (distribution %v)", id, got[id], w, got)
				}
			}
			if len(got) != len(tc.want) {
				t.Errorf("draws from %v, want %v", got, tc.want)
			}
			sameDistribution(t, "reference", got, reference(tc.p, logits, nil))
		})
	}
}

func TestTopKKeepsTiesLikeTransformers(t *testing.T) {
	got := distribution(New(Params{Temperature: 1, TopK: 1}), []float32{1, 2, 2, 0}, nil)
	sameDistribution(t, "top-k 1 with a tie", got, map[int]float64{1: 0.5, 2: 0.5})
}

// The sampler's shortcuts (top-k by heap, nucleus by widening windows) against
// the plain full-sort reference, on random rows with ties and -Inf entries.
func TestMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(42, 1))
	for trial := range 300 {
		n := []int{3, 50, 1000, 20000}[trial%4]
		logits := make([]float32, n)
		scale := []float64{0.5, 3, 12}[r.IntN(3)]
		uniform := r.IntN(3) == 0 // a wide flat spread: the nucleus window must widen
		for i := range logits {
			logits[i] = float32(r.NormFloat64() * scale)
			if uniform {
				logits[i] = float32(r.Float64() * 40)
			}
			if r.IntN(8) == 0 { // ties
				logits[i] = float32(math.Round(float64(logits[i])))
			}
			if r.IntN(50) == 0 {
				logits[i] = negInf
			}
		}
		history := make([]int, r.IntN(20))
		for i := range history {
			history[i] = r.IntN(n)
		}
		p := Params{
			Temperature:   []float32{0, 0.3, 0.7, 1, 1.5}[r.IntN(5)],
			TopK:          []int{0, 0, 1, 5, 40, n + 1}[r.IntN(6)],
			TopP:          []float32{0, 0, 0.5, 0.8, 0.95, 0.999, 0.99999, 1}[r.IntN(8)],
			MinP:          []float32{0, 0, 0.01, 0.1}[r.IntN(4)],
			RepeatPenalty: []float32{0, 1, 1.1, 1.5}[r.IntN(4)],
			RepeatLastN:   []int{0, 4, 64}[r.IntN(3)],
		}
		sameDistribution(t, fmt.Sprintf("trial %d (n %d, %+v)", trial, n, p), distribution(New(p), logits, history), reference(p, logits, history))
	}
}

func TestDeterministicPerSeed(t *testing.T) {
	logits := make([]float32, 1000)
	for i := range logits {
		logits[i] = float32(math.Sin(float64(i))) // fairly flat
	}
	run := func(seed uint64) []int {
		s := New(Params{Temperature: 1, TopP: 0.95, Seed: seed})
		out := make([]int, 50)
		for i := range out {
			out[i] = s.Sample(logits, out[:i])
		}
		return out
	}
	a, b, c := run(7), run(7), run(8)
	if !slices.Equal(a, b) {
		t.Errorf("seed 7 gave two different sequences:\n%v\n%v", a, b)
	}
	if slices.Equal(a, c) {
		t.Errorf("seeds 7 and 8 gave the same sequence %v", a)
	}
}

// With a fixed seed the draws are reproducible, so this statistical check
// cannot flake: it either always passes or always fails.
func TestSampleFrequencies(t *testing.T) {
	logits := logitsOf(0.5, 0.3, 0.15, 0.05)
	const draws = 200000
	for _, tc := range []struct {
		name string
		p    Params
		want []float64
	}{
		{"plain", Params{Temperature: 1, Seed: 1}, []float64{0.5, 0.3, 0.15, 0.05}},
		{"temperature 0.5", Params{Temperature: 0.5, Seed: 2}, []float64{0.25 / 0.365, 0.09 / 0.365, 0.0225 / 0.365, 0.0025 / 0.365}},
		{"top-p 0.81", Params{Temperature: 1, TopP: 0.81, Seed: 3}, []float64{0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(tc.p)
			counts := make([]int, len(logits))
			for range draws {
				counts[s.Sample(logits, nil)]++
			}
			for i, w := range tc.want {
				got := float64(counts[i]) / draws
				sigma := math.Sqrt(w * (1 - w) / draws)
				if w == 0 && counts[i] != 0 || math.Abs(got-w) > 5*sigma {
					t.Errorf("token %d drawn %.4f of the time, want %.4f ± %.4f", i, got, w, 5*sigma)
				}
			}
		})
	}
}

func TestNeverDrawsImpossibleTokens(t *testing.T) {
	logits := []float32{negInf, 0, negInf, float32(math.NaN()), -1}
	s := New(Params{Temperature: 1.5, Seed: 9})
	for range 2000 {
		if id := s.Sample(logits, nil); id != 1 && id != 4 {
			t.Fatalf("drew token %d with logit %v", id, logits[id])
		}
	}
}

// TestTopKShortcutIsFullPath: with top-k on, topKCandidates returns what the
// whole-row path (candidatesFull) does, bit for bit and in the same order:
// same ids, scaled logits and weights, on random rows with ties, -Inf, NaN,
// penalties and scores one ulp either side of the k-th largest.
func TestTopKShortcutIsFullPath(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 3))
	for trial := range 2000 {
		n := []int{5, 60, 1000, 30000}[trial%4]
		logits := make([]float32, n)
		scale := []float64{0.5, 3, 12, 1e-3}[r.IntN(4)]
		for i := range logits {
			logits[i] = float32(r.NormFloat64() * scale)
			switch r.IntN(40) {
			case 0:
				logits[i] = float32(math.Round(float64(logits[i]))) // ties
			case 1:
				logits[i] = negInf
			case 2:
				logits[i] = float32(math.NaN())
			}
		}
		// Neighbours of one score: the temperature may round them onto it.
		if j := r.IntN(n); !math.IsInf(float64(logits[j]), 0) && logits[j] == logits[j] {
			for d := 1; d <= 3 && j+d < n; d++ {
				logits[j+d] = math.Nextafter32(logits[j], float32(math.Inf(-d%2*2+1)))
			}
		}
		history := make([]int, r.IntN(20))
		for i := range history {
			history[i] = r.IntN(n)
		}
		p := Params{
			Temperature:   []float32{0.3, 0.6, 0.7, 1, 1.5, 3}[r.IntN(6)],
			TopK:          []int{1, 2, 5, 20, 40, n - 1}[r.IntN(6)],
			TopP:          []float32{0, 0.5, 0.8, 0.95, 1}[r.IntN(5)],
			MinP:          []float32{0, 0, 0.01, 0.1}[r.IntN(4)],
			RepeatPenalty: []float32{0, 1, 1.1, 1.5}[r.IntN(4)],
			RepeatLastN:   []int{0, 4, 64}[r.IntN(3)],
		}
		if p.TopK < 1 {
			p.TopK = 1
		}
		fast, fastID := New(p).candidates(logits, history)
		full := New(p)
		want, wantID := full.candidatesFull(slices.Clone(full.penalize(logits, history)))
		what := fmt.Sprintf("trial %d (n %d, %+v)", trial, n, p)
		if len(fast) != len(want) || fastID != wantID {
			t.Fatalf("%s: %d candidates (id %d), full path %d (id %d)", what, len(fast), fastID, len(want), wantID)
		}
		for i := range want {
			f, w := fast[i], want[i]
			if f.id != w.id || math.Float32bits(f.logit) != math.Float32bits(w.logit) || math.Float64bits(f.weight) != math.Float64bits(w.weight) {
				t.Fatalf("%s: candidate %d is %+v, full path %+v", what, i, f, w)
			}
		}
	}
}
