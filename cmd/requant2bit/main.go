// Command fm-requant2bit rewrites the routed experts of a prepared directory at
// 2 (or 3) bits with an error-minimizing quantizer, next to the original set.
package main

import (
	"fmt"
	"os"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/fm-moe/fm/pkg/cli"
	"github.com/fm-moe/fm/pkg/requant"
)

func main() {
	cli.Main("fm-requant2bit", newRootCmd(), "interrupted; files written so far are complete, rerun the same command to resume")
}

func newRootCmd() *cobra.Command {
	var bits, jobs int
	var quiet, leastSquares bool
	cmd := &cobra.Command{
		Use:   "fm-requant2bit OUT",
		Short: "Requantize the routed experts of a prepared directory to 2 (or 3) bits",
		Long: `fm-requant2bit reads every expert file of OUT/packed_experts (4-bit, 8-bit or
16-bit, as fm-repack wrote it) and writes it again at 2 bits into
OUT/packed_experts_2bit (--bits 3: OUT/packed_experts_3bit), same file names.
The manifest then lists both sets; 'fm-infer run --2bit' uses the 2-bit one.

Each group of 64 weights gets the bf16 scale and bias that minimize the squared
error against the source weights (not just the group's min and max), scaled
back up by the few percent a least-squares fit shrinks the weights, with the
codes chosen for the stored, rounded numbers. The summary prints the error per
projection next to what plain min/max requantization would give.

2-bit experts change the model's output: measure what they cost on your model
before relying on them:

  fm-infer eval --model OUT --text FILE --2bit --compare OUT

Interrupted runs resume: a rerun skips expert files that already verify. Files
are written under temporary names and renamed when complete; free space is
checked first; source files are checked against their checksums.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := requant.Options{Bits: bits, Jobs: jobs, LeastSquaresOnly: leastSquares, Progress: cli.NewBar(quiet)}
			if !quiet {
				opts.Log = os.Stderr
			}
			sum, err := requant.Requantize(cmd.Context(), args[0], opts)
			if err != nil {
				return err
			}
			if !quiet {
				fmt.Fprintln(os.Stderr, "fm-requant2bit:", sum)
			}
			return nil
		},
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cli.IntFunc(cmd.Flags(), &bits, "bits", "", 2, cli.OneOf(2, 3), "bits of the new expert set: 2, or 3 (written to packed_experts_3bit)")
	cli.Int(cmd.Flags(), &jobs, "jobs", "j", runtime.NumCPU(), 1, 4096, "experts requantized in parallel")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress bar and no summary")
	cli.SetVersion(cmd)
	cmd.Flags().BoolVar(&leastSquares, "no-gain-correction", false, "keep the plain least-squares scale and bias (for comparisons; the default corrects its shrinkage, see docs/QUALITY.md)")
	return cmd
}
