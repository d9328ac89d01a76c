package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/fm-moe/fm/pkg/cli"
	"github.com/fm-moe/fm/pkg/engine"
	"github.com/fm-moe/fm/pkg/eval"
	"github.com/fm-moe/fm/pkg/policy"
	"github.com/fm-moe/fm/pkg/tokenizer"
)

func newEvalCmd() *cobra.Command {
	var (
		ef        policy.EngineFlags
		textFile  string
		ctxLen    int
		maxChunks int
		compare   string
		asJSON    bool
		decode    bool
	)
	cmd := &cobra.Command{
		Use:   "eval --model OUT --file FILE [--ctx 512] [--max-chunks N] [--2bit] [--experts-per-token K] [--compare OTHER_OUT] [--json]",
		Short: "Measure perplexity, and KL divergence and top-1 agreement against another conversion",
		Long: `eval measures what a conversion costs in quality on your own text.

The text file is tokenized whole (no special tokens added) and split into
non-overlapping chunks of --ctx tokens (a shorter tail is dropped; --max-chunks
keeps only the first N). Each chunk runs from an empty state; its NLL is the
mean of -log p(next token) over its ctx-1 predictions, and

  perplexity = exp(mean over chunks of the chunk NLL)

the method of the transformers reference numbers.

With --compare OTHER_OUT (typically the 16-bit conversion of the same
checkpoint, run with its own experts and the model's own K) eval also reports,
over the same predictions, the mean KL divergence KL(compare || model) of the
next-token distributions, in nats, and how often both pick the same most
likely token (top-1 agreement).

--experts (--2bit / --3bit) and --experts-per-token apply to --model only.
--ctx is the chunk length; -c/--ctx-size is the engine's context limit, which
a chunk must fit (its default, the model's max_position_embeddings, does). --json prints one
JSON object instead of the table.`,
		Example: `  fm-infer eval --model out-16 --file heldout.txt
  fm-infer eval --model out-4 --file heldout.txt --experts 2bit --compare out-16 --max-chunks 8 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if textFile == "" {
				return errors.New("--file (-f) is required: the text to evaluate on")
			}
			if ef.Model == "" {
				return errors.New("--model (-m) is required")
			}
			text, err := os.ReadFile(textFile)
			if err != nil {
				return err
			}
			tok, err := tokenizer.Load(ef.Model)
			if err != nil {
				return err
			}
			ids := tok.Encode(string(text))
			if _, err := eval.Chunks(ids, ctxLen, maxChunks); err != nil {
				return fmt.Errorf("%s: %w (lower --ctx)", textFile, err)
			}
			ctx := cmd.Context()
			stderr := cmd.ErrOrStderr()
			e, err := ef.Open(ctx, stderr)
			if err != nil {
				return err
			}
			defer e.Close()
			opts := eval.Options{Ctx: ctxLen, MaxChunks: maxChunks, Decode: decode}
			var ce *engine.Engine
			if compare != "" {
				cf := ef
				cf.Model, cf.Experts, cf.TwoBit, cf.ThreeBit, cf.ExpertsPerToken = compare, "", false, false, 0
				if ce, err = cf.Open(ctx, stderr); err != nil {
					return fmt.Errorf("--compare: %w", err)
				}
				defer ce.Close()
				opts.Compare = ce
			}
			if isTerminal(stderr) {
				chunks := min(len(ids)/ctxLen, maxChunks)
				if maxChunks == 0 {
					chunks = len(ids) / ctxLen
				}
				var sum float64
				opts.OnChunk = func(c eval.ChunkResult) {
					sum += c.NLL
					fmt.Fprintf(stderr, "\rchunk %d/%d: perplexity so far %.4f  ", c.Index+1, chunks, math.Exp(sum/float64(c.Index+1)))
				}
			}
			res, err := eval.Evaluate(ctx, e, ids, opts)
			if opts.OnChunk != nil {
				fmt.Fprint(stderr, "\r\x1b[K")
			}
			if err != nil {
				return err
			}
			rep := newEvalReport(res, e, ce, ef.Model, compare, textFile, decode)
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				return enc.Encode(rep)
			}
			rep.writeTable(cmd.OutOrStdout())
			return nil
		},
	}
	ef.Register(cmd.Flags())
	cmd.Flags().StringVarP(&textFile, "file", "f", "", "the text file to evaluate on")
	// --text was this flag's old name; it named a file, unlike tokenize's --text.
	cmd.Flags().StringVar(&textFile, "text", "", "the text file to evaluate on")
	cmd.Flags().MarkDeprecated("text", "use --file (-f)")
	cli.Int(cmd.Flags(), &ctxLen, "ctx", "", eval.DefaultCtx, 2, math.MaxInt32, "tokens per chunk (at least 2)")
	cli.Int(cmd.Flags(), &maxChunks, "max-chunks", "", 0, 0, math.MaxInt32, "evaluate only the first N chunks (0: all)")
	cmd.Flags().StringVar(&compare, "compare", "", "another prepared directory of the same model to compare with (KL divergence, top-1 agreement)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object instead of a table")
	cmd.Flags().BoolVar(&decode, "decode", false, "run --model one token at a time through the decode path instead of batched prefill (slower; the result must agree)")
	return cmd
}

// evalReport is the printed result; its JSON form is fm-infer eval --json.
type evalReport struct {
	Model           string    `json:"model"`
	Dense           string    `json:"dense"`
	Experts         string    `json:"experts,omitempty"`
	ExpertBits      int       `json:"expert_bits,omitempty"`
	ExpertFileBytes int64     `json:"expert_file_bytes,omitempty"`
	ExpertsPerToken int       `json:"experts_per_token,omitempty"`
	Text            string    `json:"text"`
	TextTokens      int       `json:"text_tokens"`
	Ctx             int       `json:"ctx"`
	Chunks          int       `json:"chunks"`
	Tokens          int       `json:"tokens"`
	Predictions     int       `json:"predictions"`
	Decode          bool      `json:"decode"`
	Perplexity      float64   `json:"perplexity"`
	ChunkNLL        []float64 `json:"chunk_nll"`
	Compare         string    `json:"compare,omitempty"`
	CompareDense    string    `json:"compare_dense,omitempty"`
	CompareExperts  string    `json:"compare_experts,omitempty"`
	ComparePPL      *float64  `json:"compare_perplexity,omitempty"`
	KL              *float64  `json:"kl,omitempty"`
	Top1            *float64  `json:"top1,omitempty"`
	Seconds         float64   `json:"elapsed_s"`
}

func newEvalReport(r *eval.Result, e, ce *engine.Engine, model, compare, text string, decode bool) *evalReport {
	rep := &evalReport{
		Model: model, Dense: policy.DenseFormat(e.Dir.Manifest), Text: text,
		TextTokens: r.TextTokens, Ctx: r.Ctx, Chunks: r.Chunks, Tokens: r.Tokens, Predictions: r.Predictions,
		Decode: decode, Perplexity: r.Perplexity, ChunkNLL: r.ChunkNLL, Seconds: r.Elapsed.Seconds(),
	}
	if e.Set != nil {
		rep.Experts, rep.ExpertBits, rep.ExpertFileBytes = e.Set.Dir, e.Set.Bits, e.Set.FileSize
		rep.ExpertsPerToken = e.Model.ExpertsPerToken()
	}
	if r.HasCompare {
		rep.Compare, rep.CompareDense = compare, policy.DenseFormat(ce.Dir.Manifest)
		if ce.Set != nil {
			rep.CompareExperts = fmt.Sprintf("%s (%d-bit, K=%d)", ce.Set.Dir, ce.Set.Bits, ce.Model.ExpertsPerToken())
		}
		ppl, kl, top1 := r.ComparePerplexity, r.KL, r.Top1
		rep.ComparePPL, rep.KL, rep.Top1 = &ppl, &kl, &top1
	}
	return rep
}

func (r *evalReport) writeTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	experts := "none"
	if r.Experts != "" {
		experts = fmt.Sprintf("%s (%d-bit), K=%d", r.Experts, r.ExpertBits, r.ExpertsPerToken)
	}
	path := "prefill"
	if r.Decode {
		path = "decode"
	}
	fmt.Fprintf(tw, "model\t%s\tdense %s; experts %s\n", r.Model, r.Dense, experts)
	fmt.Fprintf(tw, "text\t%s\t%d tokens; %d chunks × %d = %d tokens evaluated, %d predictions (%s path)\n",
		filepath.Base(r.Text), r.TextTokens, r.Chunks, r.Ctx, r.Tokens, r.Predictions, path)
	fmt.Fprintf(tw, "perplexity\t%.4f\tmean chunk NLL %.4f nats\n", r.Perplexity, math.Log(r.Perplexity))
	if r.KL != nil {
		fmt.Fprintf(tw, "compare\t%s\tdense %s; experts %s; perplexity %.4f\n", r.Compare, r.CompareDense, r.CompareExperts, *r.ComparePPL)
		fmt.Fprintf(tw, "KL\t%.5f\tnats per prediction, KL(compare ‖ model)\n", *r.KL)
		fmt.Fprintf(tw, "top-1\t%.2f%%\tof predictions with the same most likely token\n", 100**r.Top1)
	}
	fmt.Fprintf(tw, "time\t%.1fs\t%.0f tokens/s\n", r.Seconds, float64(r.Tokens)/r.Seconds)
	tw.Flush()
}
