// Command fm-repack writes every routed expert of a Qwen MoE checkpoint as one
// checksummed file of a prepared directory made by fm-extract.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/fm-moe/fm/pkg/checkpoint"
	"github.com/fm-moe/fm/pkg/cli"
)

func main() {
	cli.Main("fm-repack", newRootCmd(), "interrupted; files written so far are complete, rerun the same command to resume")
}

func newRootCmd() *cobra.Command {
	var bits, groupSize, jobs int
	var quiet, directIO bool
	cmd := &cobra.Command{
		Use:   "fm-repack SRC OUT",
		Short: "Write every routed expert of a checkpoint as one file under OUT/packed_experts",
		Long: `fm-repack is step 2 of preparing a model for fm-infer (run fm-extract SRC OUT first):

  fm-extract SRC OUT        dense weights, manifest, tokenizer
  fm-repack  SRC OUT        routed experts → OUT/packed_experts/layer_LL_expert_EEEE.bin
  fm-infer verify --model OUT

Each expert file holds gate_proj, up_proj and down_proj (codes, scales, biases
when quantized) at 4096-aligned offsets recorded once in OUT/model_weights.json,
with an XXH3-128 checksum per file. From a bf16 source --bits 16 copies the
weights and --bits 8, 4 or 2 quantizes them (MLX affine, --group-size); an MLX
source is copied bit-exactly and only accepts its own --bits. Without --bits,
the experts get the precision fm-extract was given (it is recorded in the
manifest), and fm-repack says so.

A source larger than this machine's memory is read around the page cache
(direct I/O, --direct-io): it could not stay cached anyway, and reading it
through the cache costs about twice the CPU and evicts every other cached file.
A smaller source is read through the cache, which serves a source read a moment
ago from RAM; --direct-io and --direct-io=false override the choice.

Only one writer works on OUT at a time: a second fm-extract, fm-repack or
fm-requant2bit on the same OUT fails at once.

Interrupted runs resume: a rerun skips expert files that already verify and says
how many. Free space is checked before writing; files are written under
temporary names and renamed when complete; the manifest lists the set only
when every file is written, so fm-infer verify fails until then.`,
		Example: `  fm-extract ~/models/Qwen3.5-35B-A3B out/qwen35 --bits 4
  fm-repack  ~/models/Qwen3.5-35B-A3B out/qwen35 --bits 4      # Ctrl-C and rerun: it resumes
  fm-infer verify --model out/qwen35`,
		Args: twoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := checkpoint.Options{Bits: bits, GroupSize: groupSize, Jobs: jobs, Progress: cli.NewBar(quiet)}
			if !quiet {
				opts.Log = os.Stderr
			}
			if cmd.Flags().Changed("direct-io") {
				opts.SourceReads = checkpoint.ReadBuffered
				if directIO {
					opts.SourceReads = checkpoint.ReadDirect
				}
			}
			sum, err := checkpoint.Repack(cmd.Context(), args[0], args[1], opts)
			if err != nil {
				return err
			}
			if !quiet {
				fmt.Fprintln(os.Stderr, "fm-repack:", sum)
			}
			return nil
		},
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cli.NoDefault(cli.IntFunc(cmd.Flags(), &bits, "bits", "", 0, cli.OneOf(2, 4, 8, 16),
		"16 copies float experts, 8, 4 or 2 quantizes a bf16 source (default: what fm-extract recorded, else the source's own format)"))
	cli.NoDefault(cli.IntFunc(cmd.Flags(), &groupSize, "group-size", "", 0, cli.OneOf(32, 64, 128),
		"quantization group size: 32, 64 or 128 (default: what fm-extract recorded, else 64)"))
	cli.Int(cmd.Flags(), &jobs, "jobs", "j", checkpoint.DefaultJobs, 1, 4096, "parallel expert workers")
	cmd.Flags().BoolVar(&directIO, "direct-io", false, "read the source's experts around the page cache (O_DIRECT): less CPU and no eviction of other files, but a source already in the page cache is read from the disk again (default: on when the experts' source is larger than this machine's memory)")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress bar and no summary")
	cli.SetVersion(cmd)
	return cmd
}

// twoArgs wants exactly SRC and OUT, and says so.
func twoArgs(cmd *cobra.Command, args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("want two arguments, SRC (the checkpoint directory) and OUT (the directory fm-extract wrote), got %d; see %s --help", len(args), cmd.Name())
	}
	return nil
}
