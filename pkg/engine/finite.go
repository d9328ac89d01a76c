package engine

import (
	"fmt"
	"math"
)

// NonFiniteError reports logits holding NaN or ±Inf: the weights or the
// activations are damaged (bit rot, a hand-edited manifest), and whatever
// would be sampled or written from them is garbage.
type NonFiniteError struct {
	Position     int // sequence position whose next-token logits are bad
	Count, Vocab int // how many of the row's values are not finite
	First        int // index of the first bad value
}

func (e *NonFiniteError) Error() string {
	return fmt.Sprintf("logits at position %d: %d of %d values are NaN or infinite (first at token id %d); the model's weights or its numbers are damaged — run fm-infer verify",
		e.Position, e.Count, e.Vocab, e.First)
}

// checkFinite returns a *NonFiniteError when row holds a NaN or an infinity.
// It costs one pass over the vocabulary per token, next to a forward pass
// that reads megabytes of weights.
func checkFinite(row []float32, pos int) error {
	bad, first := 0, -1
	for i, v := range row {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			if first < 0 {
				first = i
			}
			bad++
		}
	}
	if bad == 0 {
		return nil
	}
	return &NonFiniteError{Position: pos, Count: bad, Vocab: len(row), First: first}
}
