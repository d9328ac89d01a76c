package sample

import (
	"container/heap"
	"math"
	"math/rand/v2"
	"slices"
)

// Params are the sampling settings. The zero value is greedy decoding without
// penalties.
type Params struct {
	// Temperature divides the logits; 0 means greedy (argmax).
	Temperature float32
	// TopK keeps the K most likely tokens (and any tied with the K-th, as
	// transformers does); 0 disables it.
	TopK int
	// TopP keeps the most likely tokens until their probability mass reaches
	// TopP (nucleus sampling); 0 or 1 disables it.
	TopP float32
	// MinP drops tokens less likely than MinP times the most likely one; 0
	// disables it.
	MinP float32
	// RepeatPenalty, when not 0 or 1, penalizes every distinct token of the
	// recent history, transformers style: a positive logit is divided by it, a
	// negative one multiplied.
	RepeatPenalty float32
	// RepeatLastN is how many of the latest history tokens the penalty looks
	// at; 0 means the whole history.
	RepeatLastN int
	// Seed seeds the generator: equal seeds give equal draws.
	Seed uint64
}

// Sampler draws tokens. It keeps scratch buffers and its generator's state,
// so it is not safe for concurrent use; use one per sequence.
type Sampler struct {
	p   Params
	rng *rand.Rand

	scores  []float32   // penalized (and scaled) copy of the logits
	cands   []candidate // surviving tokens
	penalty []int       // distinct tokens to penalize
	topK    minHeap
}

type candidate struct {
	id     int
	logit  float32
	weight float64 // exp(logit - the row's maximum)
}

// New returns a sampler for p. Out-of-range values are clamped to the
// nearest meaningful setting (a negative temperature is greedy, a TopP above
// 1 keeps everything).
func New(p Params) *Sampler {
	// The second PCG word is a fixed constant so that the stream depends on
	// Seed alone.
	return &Sampler{p: p, rng: rand.New(rand.NewPCG(p.Seed, 0x9e3779b97f4a7c15))}
}

// Params returns the sampler's settings.
func (s *Sampler) Params() Params { return s.p }

// Sample returns the next token id for logits (one row, vocabulary-sized)
// after the tokens in history. It does not modify logits. NaN logits are
// never chosen; if every logit is -Inf or NaN it returns 0.
func (s *Sampler) Sample(logits []float32, history []int) int {
	cands, id := s.candidates(logits, history)
	if cands == nil {
		return id
	}
	return s.draw(cands)
}

// candidates runs everything but the draw: it returns the tokens left to draw
// from, or nil and the token to return (greedy decoding, or nothing finite to
// sample from).
func (s *Sampler) candidates(logits []float32, history []int) ([]candidate, int) {
	if len(logits) == 0 {
		return nil, 0
	}
	scores := s.penalize(logits, history)
	if s.p.Temperature <= 0 {
		return nil, argmax(scores)
	}
	if k := s.p.TopK; k > 0 && k < len(scores) {
		if cands := s.topKCandidates(scores, k); cands != nil {
			return cands, 0
		}
	}
	return s.candidatesFull(scores)
}

// candidatesFull is candidates past the penalty, on the whole row: scaled by
// the temperature (in s.scores), then filtered. It is the reference the
// top-k shortcut (topKCandidates) must equal, and it takes the cases that
// shortcut leaves: no top-k, fewer than k usable scores, an infinite maximum.
func (s *Sampler) candidatesFull(scores []float32) ([]candidate, int) {
	if t := s.p.Temperature; t != 1 {
		if len(s.scores) == 0 || &scores[0] != &s.scores[0] {
			s.scores = append(s.scores[:0], scores...) // never the caller's row
			scores = s.scores
		}
		for i := range scores {
			scores[i] /= t
		}
	}
	cands := s.filter(scores)
	if len(cands) == 0 {
		return nil, argmax(scores)
	}
	return cands, 0
}

// topKCandidates is candidatesFull's result with top-k on (k < len(u)) from
// the unscaled scores u in two passes and k exps plus one per tie: every
// filter's input is known from the k largest scores. Scaling by 1/T > 0 is
// monotone, so the k-th largest and the largest scaled scores are the
// unscaled ones scaled, and a score passes top-k iff its scaled value
// reaches the scaled k-th; a score just below the unscaled k-th may round to
// it when scaled, so the scan scales every score within a relative 2⁻²⁰ of
// it and compares scaled values, as candidatesFull does. Top-p and min-p
// then only need the candidates. It returns nil for the cases
// candidatesFull must take (fewer than k usable scores, an infinite
// maximum or k-th).
func (s *Sampler) topKCandidates(u []float32, k int) []candidate {
	h := s.topKHeap(u, k)
	if len(h) < k {
		return nil
	}
	t := s.p.Temperature
	floorU, maxU := h[0], slices.Max(h)
	floor, maxLogit := floorU/t, maxU/t
	if math.IsInf(float64(floor), 0) || math.IsInf(float64(maxLogit), 0) {
		return nil
	}
	pre := floorU // scores below pre cannot reach floor once scaled
	if t != 1 {
		pre = floorU - (float32(math.Abs(float64(floorU)))*0x1p-20 + t*0x1p-120)
	}
	cands := s.cands[:0]
	below := math.Nextafter32(pre, float32(math.Inf(-1))) // v > below ⇔ v ≥ pre
	for i := nextAbove(u, 0, below); i < len(u); i = nextAbove(u, i+1, below) {
		if sv := u[i] / t; sv >= floor {
			cands = append(cands, candidate{id: i, logit: sv, weight: math.Exp(float64(sv - maxLogit))})
		}
	}
	s.cands = cands
	if p := float64(s.p.TopP); p > 0 && p < 1 {
		return s.minP(nucleusOf(cands, p), maxLogit)
	}
	if m := s.p.MinP; m > 0 {
		cut := max(floor, minPCut(maxLogit, m))
		kept := cands[:0]
		for _, c := range cands {
			if c.logit >= cut {
				kept = append(kept, c)
			}
		}
		cands = kept
	}
	return cands
}

// nucleusOf is nucleus for a row already cut to cands (in index order, as
// collect leaves them): the total mass summed in the same order, the
// candidates sorted, and the same rule for where the nucleus ends.
func nucleusOf(cands []candidate, p float64) []candidate {
	var total float64
	for _, c := range cands {
		total += c.weight
	}
	slices.SortFunc(cands, byScore)
	above := 0.0
	keep := 0
	for keep < len(cands) && (keep == 0 || above < p*total) {
		above += cands[keep].weight
		keep++
	}
	return cands[:keep]
}

// penalize returns the row with the repetition penalty applied once per
// distinct token of the window: a copy in the scratch row, or logits itself
// when nothing is penalized (the callers that scale it copy it first).
func (s *Sampler) penalize(logits []float32, history []int) []float32 {
	r := s.p.RepeatPenalty
	if r == 0 || r == 1 || len(history) == 0 {
		return logits
	}
	s.scores = append(s.scores[:0], logits...)
	window := history
	if n := s.p.RepeatLastN; n > 0 && n < len(window) {
		window = window[len(window)-n:]
	}
	s.penalty = append(s.penalty[:0], window...)
	slices.Sort(s.penalty)
	s.penalty = slices.Compact(s.penalty)
	for _, id := range s.penalty {
		if id < 0 || id >= len(s.scores) {
			continue
		}
		if v := s.scores[id]; v > 0 {
			s.scores[id] = v / r
		} else {
			s.scores[id] = v * r
		}
	}
	return s.scores
}

// argmax returns the index of the largest score, the lowest on ties; NaN
// never wins, and a row of -Inf and NaN gives 0.
func argmax(scores []float32) int {
	best, bv := 0, float32(math.Inf(-1))
	for i := nextAbove(scores, 0, bv); i < len(scores); i = nextAbove(scores, i+1, bv) {
		best, bv = i, scores[i]
	}
	return best
}

// nextAbove returns the first index j ≥ i with s[j] > t (never a NaN), or
// len(s). The row scans (argmax, top-k, the candidates) look for rare
// scores above a threshold: eight compares a block with nothing carried
// between elements ran 2–3× faster than one loop updating its best as it
// went, which the compiler kept shuffling between registers.
func nextAbove(s []float32, i int, t float32) int {
	for ; i+8 <= len(s); i += 8 {
		b := s[i : i+8 : i+8]
		if b[0] > t || b[1] > t || b[2] > t || b[3] > t || b[4] > t || b[5] > t || b[6] > t || b[7] > t {
			break
		}
	}
	for ; i < len(s); i++ {
		if s[i] > t {
			return i
		}
	}
	return len(s)
}

// filter applies top-k, top-p and min-p to the scaled scores and returns the
// survivors, sorted by decreasing score (then increasing id) when top-p had to
// order them. It returns nil when no score is finite (or one is +Inf), leaving
// the choice to argmax. Each exp is computed once per surviving token at most
// (plus once per token for top-p's total mass): on a 248k vocabulary the
// exponentials are the cost.
func (s *Sampler) filter(scores []float32) []candidate {
	// Everything below the cut-off logit is dropped; -Inf and NaN always are.
	floor := float32(math.Inf(-1))
	if k := s.p.TopK; k > 0 && k < len(scores) {
		floor = s.kthLargest(scores, k)
	}
	maxLogit, minLogit := float32(math.Inf(-1)), float32(math.Inf(1))
	for _, v := range scores {
		if v > maxLogit { // false for NaN
			maxLogit = v
		}
		if v < minLogit && v >= floor {
			minLogit = v
		}
	}
	if math.IsInf(float64(maxLogit), 0) {
		return nil
	}
	if p := float64(s.p.TopP); p > 0 && p < 1 {
		return s.minP(s.nucleus(scores, floor, minLogit, maxLogit, p), maxLogit)
	}
	// Without top-p, min-p is just a higher floor.
	if m := s.p.MinP; m > 0 {
		floor = max(floor, minPCut(maxLogit, m))
	}
	s.cands = s.collect(scores, floor, maxLogit, s.cands[:0])
	return s.cands
}

// collect appends every token whose score is at least floor (and above
// -Inf) to dst, weighted by exp(score - maxLogit).
func (s *Sampler) collect(scores []float32, floor, maxLogit float32, dst []candidate) []candidate {
	for i, v := range scores {
		if v >= floor && !math.IsInf(float64(v), -1) { // NaN fails v >= floor
			dst = append(dst, candidate{id: i, logit: v, weight: math.Exp(float64(v - maxLogit))})
		}
	}
	return dst
}

// nucleus keeps, in decreasing order, the tokens whose more likely
// predecessors hold less than p of the mass — transformers' rule (a token is
// removed when the tokens ranked above it already hold p). Sorting the whole
// vocabulary would dominate the cost, so it first takes only the tokens within
// a logit window of the best; when their mass already reaches p every token
// outside the window has at least that much above it and is dropped anyway,
// which keeps the result exact. Otherwise the window widens.
func (s *Sampler) nucleus(scores []float32, floor, minLogit, maxLogit float32, p float64) []candidate {
	var total float64 // mass of every token passing top-k, relative to the best
	for _, v := range scores {
		if v >= floor {
			total += math.Exp(float64(v - maxLogit))
		}
	}
	for width := float32(8); ; width *= 2 {
		cut := max(floor, maxLogit-width)
		s.cands = s.collect(scores, cut, maxLogit, s.cands[:0])
		var mass float64
		for _, c := range s.cands {
			mass += c.weight
		}
		if mass < p*total && cut > minLogit {
			continue
		}
		slices.SortFunc(s.cands, byScore)
		above := 0.0
		keep := 0
		for keep < len(s.cands) && (keep == 0 || above < p*total) {
			above += s.cands[keep].weight
			keep++
		}
		return s.cands[:keep]
	}
}

// minPCut is the logit below which min-p drops a token:
// p_i < min_p·p_max ⇔ logit_i < logit_max + ln(min_p).
func minPCut(maxLogit, minP float32) float32 {
	return float32(float64(maxLogit) + math.Log(float64(minP)))
}

// minP drops the candidates below the min-p cut.
func (s *Sampler) minP(cands []candidate, maxLogit float32) []candidate {
	if s.p.MinP <= 0 {
		return cands
	}
	cut := minPCut(maxLogit, s.p.MinP)
	kept := cands[:0]
	for _, c := range cands {
		if c.logit >= cut {
			kept = append(kept, c)
		}
	}
	return kept
}

// draw picks one candidate with probability proportional to its weight.
func (s *Sampler) draw(cands []candidate) int {
	var sum float64
	for _, c := range cands {
		sum += c.weight
	}
	u := s.rng.Float64() * sum
	last := cands[0].id
	for _, c := range cands {
		if c.weight == 0 {
			continue
		}
		if u -= c.weight; u < 0 {
			return c.id
		}
		last = c.id
	}
	return last // rounding left u ≥ 0 at the very end
}

func byScore(a, b candidate) int {
	switch {
	case a.logit > b.logit:
		return -1
	case a.logit < b.logit:
		return 1
	}
	return a.id - b.id
}

// kthLargest returns the k-th largest non-NaN score (k ≥ 1), or -Inf when
// there are fewer than k (then every usable score passes).
func (s *Sampler) kthLargest(scores []float32, k int) float32 {
	h := s.topKHeap(scores, k)
	if len(h) < k {
		return float32(math.Inf(-1))
	}
	return h[0]
}

// topKHeap returns the k largest non-NaN scores (k ≥ 1) as a min-heap, h[0]
// the k-th largest; fewer when there are fewer. O(n log k) without sorting
// the vocabulary; past the first k, an element costs one compare with the
// k-th largest (nextAbove).
func (s *Sampler) topKHeap(scores []float32, k int) minHeap {
	h := s.topK[:0]
	i := 0
	for ; i < len(scores) && len(h) < k; i++ {
		if v := scores[i]; v == v {
			h = append(h, v)
		}
	}
	s.topK = h
	if len(h) < k {
		return h
	}
	heap.Init(&h)
	for j := nextAbove(scores, i, h[0]); j < len(scores); j = nextAbove(scores, j+1, h[0]) {
		h[0] = scores[j]
		heap.Fix(&h, 0)
	}
	return h
}

type minHeap []float32

func (h minHeap) Len() int           { return len(h) }
func (h minHeap) Less(i, j int) bool { return h[i] < h[j] }
func (h minHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *minHeap) Push(x any)        { *h = append(*h, x.(float32)) }
func (h *minHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
