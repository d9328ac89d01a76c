package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/fm-moe/fm/pkg/backend"
	"github.com/fm-moe/fm/pkg/engine"
	"github.com/fm-moe/fm/pkg/experts"
	"github.com/fm-moe/fm/pkg/layout"
)

// engineFlags are the flags every model-running command shares.
type engineFlags struct {
	model           string
	twoBit          bool
	threeBit        bool
	expertsPerToken int
	backend         string
	ioThreads       int
	directIO        bool
	expertCacheMB   int
	threads         int
	noVerify        bool
	vramCacheGB     float64
	prefillChunk    int
}

func (f *engineFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.model, "model", "", "prepared model directory (fm-extract + fm-repack output)")
	fs.BoolVar(&f.twoBit, "2bit", false, "use the 2-bit experts written by fm-requant2bit")
	fs.BoolVar(&f.threeBit, "3bit", false, "use the 3-bit experts written by fm-requant2bit --bits 3")
	fs.IntVar(&f.expertsPerToken, "experts-per-token", 0, "route each token to only K experts instead of the model's num_experts_per_tok (faster, but changes the model's output)")
	fs.StringVar(&f.backend, "backend", backend.Auto, "compute backend: auto (the best available), "+strings.Join(backend.Names(), ", "))
	fs.IntVar(&f.ioThreads, "io-threads", 0, fmt.Sprintf("parallel expert reads (0: %d)", experts.DefaultIOThreads))
	fs.BoolVar(&f.directIO, "direct-io", false, "read experts with O_DIRECT, bypassing the page cache (pair with --expert-cache-mb)")
	fs.IntVar(&f.expertCacheMB, "expert-cache-mb", 0, "RAM budget in MiB for caching experts in the process (0: none; the OS page cache still helps unless --direct-io)")
	fs.IntVar(&f.threads, "threads", 0, "compute goroutines (0: all CPUs)")
	fs.IntVar(&f.prefillChunk, "prefill-chunk", 0, "most prompt tokens per batched prefill step (0: the model's default, 128); a GPU wants larger")
	fs.Float64Var(&f.vramCacheGB, "vram-cache-gb", 0, "GPU backends: device memory in GiB for keeping routed experts between tokens (0: what is free after the dense weights, less a reserve)")
	fs.BoolVar(&f.noVerify, "no-verify", false, "skip hashing model_weights.bin at start (sizes are still checked)")
}

// resolveBackend turns "auto" into the first registered backend that opens,
// saying in one line on stderr why each accelerator before it did not (no
// driver, no GPU), so a CPU fallback is never silent. Other names pass through.
func resolveBackend(name string, stderr io.Writer) string {
	if name != backend.Auto {
		return name
	}
	for _, n := range backend.Names() {
		if n == backend.Fallback {
			return n
		}
		d, err := backend.Open(n, backend.Options{})
		if err == nil {
			d.Close()
			return n
		}
		fmt.Fprintf(stderr, "note: --backend auto: %v; using the next backend\n", err)
	}
	return name
}

// open checks the flags and opens the engine; notes go to stderr.
func (f *engineFlags) open(ctx context.Context, stderr io.Writer) (*engine.Engine, error) {
	if f.model == "" {
		return nil, errors.New("--model is required")
	}
	if names := backend.Names(); f.backend != backend.Auto && !slices.Contains(names, f.backend) {
		return nil, fmt.Errorf("--backend %s: not available in this build (available: %s, %s)", f.backend, backend.Auto, strings.Join(names, ", "))
	}
	expertsDir := ""
	if f.threeBit {
		if f.twoBit {
			return nil, errors.New("--2bit and --3bit exclude each other")
		}
		expertsDir = layout.Experts3BitDir
	}
	if f.expertsPerToken < 0 {
		return nil, fmt.Errorf("--experts-per-token %d: must be positive", f.expertsPerToken)
	}
	if f.prefillChunk < 0 {
		return nil, fmt.Errorf("--prefill-chunk %d: must not be negative", f.prefillChunk)
	}
	if f.vramCacheGB < 0 {
		return nil, fmt.Errorf("--vram-cache-gb %g: must not be negative", f.vramCacheGB)
	}
	be := resolveBackend(f.backend, stderr)
	e, err := engine.Open(ctx, engine.Options{
		Dir:             f.model,
		TwoBit:          f.twoBit,
		ExpertsDir:      expertsDir,
		ExpertsPerToken: f.expertsPerToken,
		Backend:         be,
		Workers:         f.threads,
		DeviceCache:     int64(f.vramCacheGB * (1 << 30)),
		PrefillChunk:    f.prefillChunk,
		Store: experts.Options{
			IOThreads:  f.ioThreads,
			DirectIO:   f.directIO,
			CacheBytes: int64(f.expertCacheMB) << 20,
		},
		SkipDenseChecksum: f.noVerify,
	})
	if err != nil {
		return nil, err
	}
	if k := f.expertsPerToken; k > 0 {
		fmt.Fprintf(stderr, "note: --experts-per-token %d routes each token to %d of the model's %d experts per token; this changes the model's output\n",
			k, k, e.Model.Config().NumExpertsPerTok)
	}
	if e.Store != nil {
		for _, w := range e.Store.Warnings() {
			fmt.Fprintln(stderr, "note:", w)
		}
	}
	return e, nil
}

func newLogitsCmd() *cobra.Command {
	var (
		ef     engineFlags
		tokens string
		out    string
		decode bool
	)
	cmd := &cobra.Command{
		Use:   "logits --model OUT --tokens 1,2,3 --out FILE.safetensors [--decode] [--2bit]",
		Short: "Write the next-token logits of every position of a token sequence",
		Long: `logits runs a sequence of token ids through the model from an empty state and
writes a safetensors file with one F32 tensor "logits" of shape [T, vocab_size]:
row t holds the logits for the token after input token t.

By default the whole sequence goes through the batched prefill path; --decode
feeds the tokens one at a time through the single-token decode path instead.
Both must agree with the reference implementation (transformers).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, err := parseIDs(tokens)
			if err != nil {
				return err
			}
			if out == "" {
				return errors.New("--out is required")
			}
			ctx := cmd.Context()
			e, err := ef.open(ctx, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer e.Close()
			V := e.Model.Config().VocabSize
			for _, id := range ids {
				if id >= V {
					return fmt.Errorf("--tokens: id %d is outside the vocabulary [0, %d)", id, V)
				}
			}
			logits, err := e.Logits(ctx, ids, decode)
			if err != nil {
				return err
			}
			return engine.WriteLogits(out, logits, len(ids), V)
		},
	}
	ef.register(cmd.Flags())
	cmd.Flags().StringVar(&tokens, "tokens", "", "comma-separated token ids")
	cmd.Flags().StringVar(&out, "out", "", "output safetensors file")
	cmd.Flags().BoolVar(&decode, "decode", false, "feed tokens one at a time through the decode path")
	return cmd
}

// parseIDs parses "1,2,3" (spaces and a surrounding [] allowed).
func parseIDs(s string) ([]int, error) {
	s = strings.Trim(strings.TrimSpace(s), "[]")
	if s == "" {
		return nil, errors.New("--tokens: no token ids")
	}
	var ids []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v < 0 {
			return nil, fmt.Errorf("--tokens: %q is not a token id", strings.TrimSpace(f))
		}
		ids = append(ids, v)
	}
	return ids, nil
}
