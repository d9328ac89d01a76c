package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/spf13/cobra"

	"github.com/fm-moe/fm/pkg/cli"
	"github.com/fm-moe/fm/pkg/policy"
	"github.com/fm-moe/fm/pkg/tokenizer"
)

func newCompareCmd() *cobra.Command {
	var (
		ef      policy.EngineFlags
		against string
		prompt  string
		tokens  string
		decode  bool
		tol     float32
	)
	cmd := &cobra.Command{
		Use:   "compare --model OUT (--prompt TEXT | --tokens IDS) [--backend cuda] [--against cpu] [--decode]",
		Short: "Run a prompt on two backends and show, block by block, where they part",
		Long: `compare runs the same tokens through the model twice — on --backend and on
--against (the CPU by default) — and records the residual stream after every
block (each layer's attention or linear-attention mixer, then its MoE or MLP).
It prints, for every block, the worst relative error between the two runs
(max |a − b| / max |b| over a row, worst row), marks the first block above
--tolerance, then compares the logits the same way with their argmax.

Use it when a backend's logits disagree with the CPU's: the first block that
parts is where to look. Each block's residual stream is downloaded, which
synchronizes the device at every block: this is a debugging tool, not fast.
--backend's streams are kept in memory (tokens × hidden size × 2 floats per
layer), so prefer short prompts on large models.

The exit status is 1 when the logits differ by more than --tolerance or any
argmax differs (the exactness gate of the golden tests is 2e-3).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if (prompt == "") == (tokens == "") {
				return errors.New("give exactly one of --prompt and --tokens")
			}
			if ef.Model == "" {
				return errors.New("--model (-m) is required")
			}
			var ids []int
			if tokens != "" {
				var err error
				if ids, err = parseIDs(tokens); err != nil {
					return err
				}
			} else {
				tok, err := tokenizer.Load(ef.Model)
				if err != nil {
					return err
				}
				if ids = tok.Encode(prompt); len(ids) == 0 {
					return errors.New("--prompt encodes to no tokens")
				}
			}
			b := ef
			b.Backend, b.Device = against, nil
			return compareBackends(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), &ef, &b, ids, decode, float64(tol))
		},
	}
	ef.Register(cmd.Flags())
	cmd.Flags().StringVar(&against, "against", "cpu", "the reference backend")
	cmd.Flags().StringVarP(&prompt, "prompt", "p", "", "prompt text (tokenized as is, no chat template)")
	cmd.Flags().StringVar(&tokens, "tokens", "", "comma-separated token ids instead of --prompt")
	cmd.Flags().BoolVar(&decode, "decode", false, "feed the tokens one at a time through the decode path")
	cli.Float32Func(cmd.Flags(), &tol, "tolerance", "", 2e-3, func(v float64) error {
		if !(v > 0) || math.IsInf(v, 0) {
			return errors.New("must be a positive number")
		}
		return nil
	}, "relative error above which a block or the logits count as different")
	return cmd
}

// blockTrace is the residual stream after each block of each step of one run,
// in the order the model ran them.
type blockTrace struct {
	layer []int
	block []string
	h     [][]float32
}

// blockDiff is the worst difference seen at one block over all steps.
type blockDiff struct {
	layer  int
	block  string
	relErr float64
}

// compareBackends runs ids on a, keeping every block's residual stream, then on
// b, comparing as it goes; it prints the table and the logits comparison and
// returns an error when the logits part beyond tol.
func compareBackends(ctx context.Context, w, notes io.Writer, a, b *policy.EngineFlags, ids []int, decode bool, tol float64) error {
	if !(tol > 0) {
		return fmt.Errorf("--tolerance %g: must be > 0", tol)
	}
	var ta blockTrace
	var hidden int // the model's hidden size, set when an engine opens
	a.OnBlock = func(layer int, block string, h []float32) {
		ta.layer = append(ta.layer, layer)
		ta.block = append(ta.block, block)
		ta.h = append(ta.h, append([]float32(nil), h...))
	}
	la, nameA, err := compareRun(ctx, notes, a, ids, decode, &hidden)
	if err != nil {
		return err
	}
	var diffs []blockDiff
	at := map[[2]any]int{} // (layer, block) → index in diffs
	i := 0
	var mismatch error
	b.OnBlock = func(layer int, block string, h []float32) {
		if mismatch != nil {
			return
		}
		if i >= len(ta.h) || ta.layer[i] != layer || ta.block[i] != block || len(ta.h[i]) != len(h) {
			mismatch = fmt.Errorf("the two runs took different paths at block %d (layer %d %s)", i, layer, block)
			return
		}
		k := [2]any{layer, block}
		j, ok := at[k]
		if !ok {
			j = len(diffs)
			at[k] = j
			diffs = append(diffs, blockDiff{layer: layer, block: block})
		}
		diffs[j].relErr = maxNaN(diffs[j].relErr, worstRowRelErr(ta.h[i], h, hidden))
		ta.h[i] = nil // compared: let it go
		i++
	}
	lb, nameB, err := compareRun(ctx, notes, b, ids, decode, &hidden)
	if err != nil {
		return err
	}
	if mismatch != nil {
		return mismatch
	}
	fmt.Fprintf(w, "%s vs %s, %d tokens, %s path; relative error = max|a−b| / max|b| per row, worst row\n",
		nameA, nameB, len(ids), map[bool]string{false: "prefill", true: "decode"}[decode])
	fmt.Fprintf(w, "%6s  %-18s  %s\n", "layer", "block", "rel err")
	first := -1
	for j, d := range diffs {
		mark := ""
		if first < 0 && (d.relErr > tol || math.IsNaN(d.relErr)) {
			first = j
			mark = fmt.Sprintf("   <- first block above %g", tol)
		}
		fmt.Fprintf(w, "%6d  %-18s  %.2e%s\n", d.layer, d.block, d.relErr, mark)
	}
	V := len(la) / len(ids)
	worst, agree := 0.0, 0
	for r := range ids {
		ra, rb := la[r*V:(r+1)*V], lb[r*V:(r+1)*V]
		worst = maxNaN(worst, worstRowRelErr(ra, rb, V))
		if argmax(ra) == argmax(rb) {
			agree++
		}
	}
	fmt.Fprintf(w, "logits: worst rel err %.2e over %d rows, argmax equal in %d of %d\n", worst, len(ids), agree, len(ids))
	if worst > tol || agree != len(ids) || math.IsNaN(worst) {
		where := ""
		if first >= 0 {
			where = fmt.Sprintf("; the first block above it is layer %d %s", diffs[first].layer, diffs[first].block)
		}
		return fmt.Errorf("%s and %s disagree: logits rel err %.2e (tolerance %g), argmax equal in %d of %d rows%s",
			nameA, nameB, worst, tol, agree, len(ids), where)
	}
	return nil
}

// compareRun opens the engine f describes, runs ids and returns the logits of
// every position and the device's name; *hidden gets the hidden size.
func compareRun(ctx context.Context, notes io.Writer, f *policy.EngineFlags, ids []int, decode bool, hidden *int) ([]float32, string, error) {
	e, err := f.Open(ctx, notes)
	if err != nil {
		return nil, "", fmt.Errorf("--backend %s: %w", f.Backend, err)
	}
	defer e.Close()
	*hidden = e.Model.Config().HiddenSize
	V := e.Model.Config().VocabSize
	for _, id := range ids {
		if id >= V {
			return nil, "", fmt.Errorf("token id %d is outside the vocabulary [0, %d)", id, V)
		}
	}
	logits, err := e.Logits(ctx, ids, decode)
	if err != nil {
		return nil, "", contextHint(err)
	}
	return logits, e.Device.Name(), nil
}

// worstRowRelErr is the largest over rows of max|a−b| / max|b| (0/0 counts
// as 0; a NaN anywhere makes it NaN).
func worstRowRelErr(a, b []float32, cols int) float64 {
	worst := 0.0
	for r := 0; r+cols <= len(b); r += cols {
		var diff, ref float64
		for c := r; c < r+cols; c++ {
			x, y := float64(a[c]), float64(b[c])
			if math.IsNaN(x) || math.IsNaN(y) {
				return math.NaN()
			}
			diff = max(diff, math.Abs(x-y))
			ref = max(ref, math.Abs(y))
		}
		switch {
		case diff == 0:
		case ref == 0:
			return math.Inf(1)
		default:
			worst = max(worst, diff/ref)
		}
	}
	return worst
}

// maxNaN is max that keeps a NaN (the builtin max does too, but says so
// nowhere near here).
func maxNaN(a, b float64) float64 {
	if math.IsNaN(a) || math.IsNaN(b) {
		return math.NaN()
	}
	return max(a, b)
}

// argmax is the index of the largest value (the first of equals).
func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}
