package eval

import (
	"context"
	"fmt"
	"math"
	"time"
)

// Model is what an evaluation needs of a model: the next-token logits of every
// position of ids, run from an empty state, row-major [len(ids), vocab] (row t
// follows token t). decode selects the one-token-at-a-time path instead of the
// batched prefill. *engine.Engine satisfies it.
type Model interface {
	Logits(ctx context.Context, ids []int, decode bool) ([]float32, error)
}

// DefaultCtx is the default chunk length, the transformers reference's.
const DefaultCtx = 512

// Options configure Evaluate.
type Options struct {
	// Ctx is the chunk length in tokens (default DefaultCtx); at least 2.
	Ctx int
	// MaxChunks limits the evaluation to the first chunks (0: every whole chunk).
	MaxChunks int
	// Decode runs the model one token at a time (the decode path) instead of
	// batched prefill. The comparison model always uses prefill.
	Decode bool
	// Compare, when set, is the reference the model is compared with.
	Compare Model
	// OnChunk, when set, is called after each chunk.
	OnChunk func(ChunkResult)
}

// ChunkResult is one chunk's measurement.
type ChunkResult struct {
	Index int
	NLL   float64 // mean negative log-likelihood of the model's Ctx−1 predictions
	// With a comparison model:
	CompareNLL float64 // the reference's NLL on the same predictions
	KL         float64 // mean KL(reference ‖ model) over the predictions
	Top1       float64 // fraction of predictions whose argmaxes agree
	Elapsed    time.Duration
}

// Result is an evaluation's outcome.
type Result struct {
	TextTokens  int // tokens of the whole text
	Ctx         int
	Chunks      int
	Tokens      int // tokens evaluated: Chunks × Ctx
	Predictions int // Chunks × (Ctx − 1)
	Perplexity  float64
	ChunkNLL    []float64

	HasCompare        bool
	ComparePerplexity float64
	KL                float64 // mean KL(reference ‖ model) in nats per prediction
	Top1              float64 // fraction of predictions with the same argmax
	Elapsed           time.Duration
}

// Chunks splits ids into non-overlapping chunks of n tokens, dropping a shorter
// tail, and keeps the first maxChunks (0: all). It fails when not even one
// chunk fits.
func Chunks(ids []int, n, maxChunks int) ([][]int, error) {
	if n < 2 {
		return nil, fmt.Errorf("chunk length %d: need at least 2 tokens (one prediction)", n)
	}
	count := len(ids) / n
	if count == 0 {
		return nil, fmt.Errorf("the text has %d tokens, fewer than one chunk of %d", len(ids), n)
	}
	if maxChunks > 0 {
		count = min(count, maxChunks)
	}
	out := make([][]int, count)
	for i := range out {
		out[i] = ids[i*n : (i+1)*n : (i+1)*n]
	}
	return out, nil
}

// Evaluate measures m on the token sequence ids (the whole text, tokenized
// without special tokens).
func Evaluate(ctx context.Context, m Model, ids []int, opts Options) (*Result, error) {
	start := time.Now()
	if opts.Ctx == 0 {
		opts.Ctx = DefaultCtx
	}
	chunks, err := Chunks(ids, opts.Ctx, opts.MaxChunks)
	if err != nil {
		return nil, err
	}
	r := &Result{
		TextTokens: len(ids), Ctx: opts.Ctx, Chunks: len(chunks),
		Tokens: len(chunks) * opts.Ctx, Predictions: len(chunks) * (opts.Ctx - 1),
		HasCompare: opts.Compare != nil,
	}
	var nllSum, refNLLSum, klSum, top1Sum float64
	for i, chunk := range chunks {
		cs := time.Now()
		logits, err := m.Logits(ctx, chunk, opts.Decode)
		if err != nil {
			return nil, fmt.Errorf("chunk %d: %w", i, err)
		}
		vocab, err := rowWidth(logits, len(chunk), "model")
		if err != nil {
			return nil, fmt.Errorf("chunk %d: %w", i, err)
		}
		var ref []float32
		if opts.Compare != nil {
			if ref, err = opts.Compare.Logits(ctx, chunk, false); err != nil {
				return nil, fmt.Errorf("chunk %d: comparison model: %w", i, err)
			}
			rv, err := rowWidth(ref, len(chunk), "comparison model")
			if err != nil {
				return nil, fmt.Errorf("chunk %d: %w", i, err)
			}
			if rv != vocab {
				return nil, fmt.Errorf("chunk %d: the model has %d logits per token, the comparison model %d: not the same vocabulary", i, vocab, rv)
			}
		}
		cr, err := scoreChunk(chunk, logits, ref, vocab)
		if err != nil {
			return nil, fmt.Errorf("chunk %d: %w", i, err)
		}
		cr.Index, cr.Elapsed = i, time.Since(cs)
		r.ChunkNLL = append(r.ChunkNLL, cr.NLL)
		nllSum += cr.NLL
		refNLLSum += cr.CompareNLL
		klSum += cr.KL
		top1Sum += cr.Top1
		if opts.OnChunk != nil {
			opts.OnChunk(cr)
		}
	}
	n := float64(len(chunks))
	r.Perplexity = math.Exp(nllSum / n)
	if r.HasCompare {
		// Every chunk has the same number of predictions, so the mean of the
		// chunk means is the mean over all predictions.
		r.ComparePerplexity = math.Exp(refNLLSum / n)
		r.KL = klSum / n
		r.Top1 = top1Sum / n
	}
	r.Elapsed = time.Since(start)
	return r, nil
}

func rowWidth(logits []float32, rows int, who string) (int, error) {
	if len(logits) == 0 || len(logits)%rows != 0 {
		return 0, fmt.Errorf("the %s returned %d logits for %d tokens", who, len(logits), rows)
	}
	return len(logits) / rows, nil
}

// scoreChunk computes a chunk's NLL and, with ref, the reference's NLL, the
// mean KL(ref ‖ model) and the top-1 agreement, over rows 0..len(chunk)−2 (row
// t predicts chunk[t+1]).
func scoreChunk(chunk []int, logits, ref []float32, vocab int) (ChunkResult, error) {
	var cr ChunkResult
	preds := len(chunk) - 1
	for t := range preds {
		target := chunk[t+1]
		if target < 0 || target >= vocab {
			return cr, fmt.Errorf("token %d at position %d is outside the model's %d-entry vocabulary", target, t+1, vocab)
		}
		row := logits[t*vocab : (t+1)*vocab]
		lse, arg := logSumExp(row)
		if math.IsNaN(lse) || math.IsInf(lse, 0) {
			return cr, fmt.Errorf("position %d: logits are not finite", t)
		}
		cr.NLL += lse - float64(row[target])
		if ref == nil {
			continue
		}
		rrow := ref[t*vocab : (t+1)*vocab]
		rlse, rarg := logSumExp(rrow)
		if math.IsNaN(rlse) || math.IsInf(rlse, 0) {
			return cr, fmt.Errorf("position %d: comparison logits are not finite", t)
		}
		cr.CompareNLL += rlse - float64(rrow[target])
		cr.KL += kl(rrow, rlse, row, lse)
		if arg == rarg {
			cr.Top1++
		}
	}
	n := float64(preds)
	cr.NLL /= n
	cr.CompareNLL /= n
	cr.KL /= n
	cr.Top1 /= n
	return cr, nil
}

// logSumExp returns log Σ exp(x_i) in float64 and the index of the largest x
// (the first on ties).
func logSumExp(x []float32) (float64, int) {
	arg := 0
	for i, v := range x {
		if v > x[arg] {
			arg = i
		}
	}
	m := float64(x[arg])
	var s float64
	for _, v := range x {
		s += math.Exp(float64(v) - m)
	}
	return m + math.Log(s), arg
}

// kl returns KL(p ‖ q) = Σ p_i (log p_i − log q_i) for the distributions
// softmax(p) and softmax(q), given their log-normalizers. It is ≥ 0 up to
// rounding; tiny negative sums are clamped to 0.
func kl(p []float32, plse float64, q []float32, qlse float64) float64 {
	var s float64
	for i, v := range p {
		lp := float64(v) - plse
		s += math.Exp(lp) * (lp - (float64(q[i]) - qlse))
	}
	return max(s, 0)
}
