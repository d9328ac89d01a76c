// Command fm-infer runs a prepared model directory (made by fm-extract and
// fm-repack): generate text, chat, dump logits, tokenize, verify files, evaluate
// perplexity and benchmark. Each subcommand lives in its own file; this file only
// wires them together.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/spf13/cobra"

	"github.com/fm-moe/fm/pkg/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "fm-infer:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "fm-infer",
		Short: "Run Mixture-of-Experts models whose experts stream from disk",
		Long: `fm-infer runs a prepared model directory. Prepare one with:

  fm-extract CHECKPOINT_DIR OUT     # dense weights, manifest, tokenizer
  fm-repack  CHECKPOINT_DIR OUT     # routed experts, one file each, checksummed
  fm-infer verify --model OUT       # optional: check every file against the manifest

then generate with 'fm-infer run --model OUT --prompt "..."'. The dense weights stay
mapped in memory; each token reads only the experts its router picks.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cli.SetVersion(root)
	root.AddCommand(newRunCmd(), newChatCmd(), newServeCmd(), newLogitsCmd(), newTokenizeCmd(),
		newVerifyCmd(), newEvalCmd(), newBenchCmd(), newCompareCmd())
	return root
}
