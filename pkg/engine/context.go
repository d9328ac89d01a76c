package engine

import (
	"fmt"

	"github.com/fm-moe/fm/pkg/layout"
)

// ContextError reports a prompt that does not fit the context: the tokens
// already in the sequence plus the prompt exceed the context size.
type ContextError struct {
	Used, Prompt, Size int
}

func (e *ContextError) Error() string {
	if e.Used > 0 {
		return fmt.Sprintf("the prompt of %d tokens after %d earlier tokens does not fit the context of %d tokens", e.Prompt, e.Used, e.Size)
	}
	return fmt.Sprintf("the prompt of %d tokens does not fit the context of %d tokens", e.Prompt, e.Size)
}

// contextSize resolves Options.ContextSize against the model.
func contextSize(c *layout.Config, requested int) (int, error) {
	switch {
	case requested < 0:
		return 0, fmt.Errorf("context size %d: must be positive", requested)
	case requested == 0:
		if c.MaxPositionEmbeddings <= 0 {
			return 0, fmt.Errorf("the manifest sets no max_position_embeddings: give the context size explicitly")
		}
		return c.MaxPositionEmbeddings, nil
	case c.MaxPositionEmbeddings > 0 && requested > c.MaxPositionEmbeddings:
		return 0, fmt.Errorf("context size %d exceeds the model's max_position_embeddings %d", requested, c.MaxPositionEmbeddings)
	}
	return requested, nil
}

// ContextSize is the most tokens one sequence may hold.
func (e *Engine) ContextSize() int { return e.ctx }

// KVBytesPerToken is the memory one more token of context costs: keys and
// values of every full-attention layer in float32 (GatedDeltaNet layers keep
// a fixed-size state instead). A cache grown by append may hold up to twice
// its length while it grows.
func KVBytesPerToken(c *layout.Config) int64 {
	var n int64
	for _, t := range c.LayerTypes {
		if t == layout.FullAttention {
			n += 2 * int64(c.NumKeyValueHeads) * int64(c.HeadDim) * 4
		}
	}
	return n
}
