// Command fm-extract converts the dense part of a HuggingFace or MLX checkpoint
// of a Qwen MoE model into a prepared directory for fm-infer.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/fm-moe/fm/pkg/checkpoint"
	"github.com/fm-moe/fm/pkg/cli"
	"github.com/fm-moe/fm/pkg/tokenizer"
)

func main() {
	cli.Main("fm-extract", newRootCmd(), "interrupted; no partial file was kept, rerun the same command to start again")
}

func newRootCmd() *cobra.Command {
	var bits, groupSize int
	var quiet bool
	cmd := &cobra.Command{
		Use:   "fm-extract SRC OUT",
		Short: "Write the dense weights, manifest and tokenizer of a checkpoint into a prepared directory",
		Long: `fm-extract is step 1 of preparing a model for fm-infer:

  fm-extract SRC OUT        dense weights → OUT/model_weights.bin, OUT/model_weights.json,
                            tokenizer files → OUT/tokenizer.json, tokenizer.bin, vocab.bin
  fm-repack  SRC OUT        routed experts → OUT/packed_experts/ (one file per expert)
  fm-infer verify --model OUT

SRC is a checkpoint directory as downloaded from HuggingFace: the original bf16
release (config.json, *.safetensors, tokenizer.json) or an mlx-community
quantized conversion. Supported model types: qwen3_moe, qwen3_next, qwen3_5_moe
(and qwen3_5_moe_text). Vision-tower and mtp.* tensors are skipped.

--bits 16 keeps bf16 weights exactly; --bits 8 or 4 quantizes the embedding,
projections and lm_head with MLX-compatible affine groups of --group-size (norms,
conv, A_log, dt_bias, the router and shared-expert gate stay exact). An MLX
source is copied bit-exactly and only accepts its own --bits. Every file is
written under a temporary name and renamed when complete; the manifest comes
last. Rerunning over an existing OUT replaces the dense part and keeps the
expert files fm-repack wrote from the same checkpoint.`,
		Example: `  # an original bf16 release, quantized to 4 bits (--bits 16 keeps it exact):
  fm-extract ~/models/Qwen3.5-35B-A3B out/qwen35 --bits 4
  fm-repack  ~/models/Qwen3.5-35B-A3B out/qwen35 --bits 4
  fm-infer verify --model out/qwen35
  fm-infer run --model out/qwen35 --prompt "Hello"

  # an mlx-community 4-bit conversion, copied as it is:
  fm-extract ~/models/Qwen3-30B-A3B-4bit out/qwen3
  fm-repack  ~/models/Qwen3-30B-A3B-4bit out/qwen3`,
		Args: twoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := checkpoint.Options{
				Bits: bits, GroupSize: groupSize, Progress: cli.NewBar(quiet),
				LoadTokenizer: loadTokenizer,
			}
			if !quiet {
				opts.Log = os.Stderr
			}
			sum, err := checkpoint.Extract(cmd.Context(), args[0], args[1], opts)
			if err != nil {
				return err
			}
			if !quiet {
				fmt.Fprintln(os.Stderr, "fm-extract:", sum)
			}
			return nil
		},
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	cli.NoDefault(cli.IntFunc(cmd.Flags(), &bits, "bits", "", 0, cli.OneOf(4, 8, 16),
		"16 keeps float weights, 8 or 4 quantizes a bf16 source (default: the source's own format); fm-repack defaults to the same"))
	cli.IntFunc(cmd.Flags(), &groupSize, "group-size", "", 64, cli.OneOf(32, 64, 128), "quantization group size: 32, 64 or 128")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress bar and no summary")
	cli.SetVersion(cmd)
	return cmd
}

// twoArgs wants exactly SRC and OUT, and says so.
func twoArgs(cmd *cobra.Command, args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("want two arguments, SRC (the checkpoint directory) and OUT (the prepared directory), got %d; see %s --help", len(args), cmd.Name())
	}
	return nil
}

// loadTokenizer reads tokenizer.json with package tokenizer, which writes the
// compact tokenizer.bin and vocab.bin (format in docs/FORMAT.md).
func loadTokenizer(path string) (checkpoint.TokenizerWriter, error) {
	return tokenizer.Load(path)
}
