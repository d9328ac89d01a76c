package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fm-moe/fm/pkg/bench"
	"github.com/fm-moe/fm/pkg/cli"
	"github.com/fm-moe/fm/pkg/policy"
)

func newBenchCmd() *cobra.Command {
	var (
		ef           policy.EngineFlags
		promptTokens int
		genTokens    int
		runs         int
		synthetic    string
		layers       int
		bits         int
		ramGB        float32
		dir          string
		ioOnly       bool
		ioMB         int
		asJSON       bool
		cpuProfile   string
	)
	cmd := &cobra.Command{
		Use:   "bench (--model OUT | --synthetic NAME --layers N | --io) [flags]",
		Short: "Measure prefill and decode speed against this machine's ceilings, or predict a model's speed without it",
		Long: `bench measures, in one run:

  - prefill tok/s over a --prompt-tokens synthetic prompt and decode tok/s over
    --tokens greedy tokens, best of --runs;
  - the decode time per token and layer, split into compute and the wait for
    expert files, and the share of experts served from the RAM cache;
  - the ceilings, measured in the same run: memory read bandwidth (every core);
    on the CPU the arithmetic peak (float32 multiply-adds and int8 dot products,
    the prefill's ceiling); for --synthetic or with --io-mb, the parallel
    O_DIRECT read bandwidth of the disk holding the model; the ratios of decode
    and prefill to them.

--synthetic NAME writes (into --dir, or a temporary directory removed at the
end) a prepared directory with the first --layers layers of a named model: its
real per-layer shapes, layer-type pattern, vocabulary, --bits quantization and
file layout, with random weights. It then projects the whole model's decode
speed at --ram-gb of memory and --experts-per-token K: layer time scales with
the layer count, and the experts that do not fit in RAM are read at the
measured disk bandwidth (docs/PERF.md explains the model). Names:
  ` + strings.Join(bench.Names(), ", ") + `
(qwen3.5-122b-a10b: its config.json was not available; head sizes are the
Qwen3.5 family's.) Reuse a --dir between runs: it is regenerated only when the
model, --layers or --bits change.

--io measures only the ceilings (memory read, arithmetic peak, disk read under
--dir); with --json, one object of them (memory_read_gbs, compute_f32_gflops,
compute_int8_gops, disk_read_gbs, disk_dir, ...).

--json prints one JSON object (decode_tok_s, prefill_tok_s, bytes_per_token,
memory_read_gbs, roofline_ratio, expert_hit_rate, disk_read_gbs,
projected_tok_s, ...) instead of the text report. The memory ceiling is sampled
after every run and the best sample is the one the roofline ratio divides by
(memory_read_samples_gbs lists them: on a shared machine they move a lot);
roofline_ratio_paired is the median over the runs of each run's decode rate
(decode_runs_tok_s) over the sample taken right after it, the steadier figure
where the machine's bandwidth moves between minutes.

Expert reads come from the page cache when the files are cached; use
--direct-io (with --expert-cache-mb) to measure the disk instead.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			out, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
			if ioOnly {
				d := dir
				if d == "" {
					d = ef.Model
				}
				if d == "" {
					d = bench.DefaultIODir()
				}
				return runIOBench(cmd, d, int64(ioMB)<<20, asJSON)
			}
			o := bench.Options{PromptTokens: promptTokens, DecodeTokens: genTokens, Runs: runs,
				RAMBytes: int64(float64(ramGB) * (1 << 30)), Log: stderr,
				DirectIO: ef.DirectIO, CacheBytes: int64(ef.ExpertCacheMiB) << 20, Matmul: string(ef.Matmul),
				DeviceBudgetGiven: ef.VRAMCacheGB > 0}
			if ioMB > 0 {
				o.DiskBytes = int64(ioMB) << 20
			}
			switch {
			case synthetic != "" && ef.Model != "":
				return errors.New("--synthetic and --model exclude each other")
			case synthetic != "":
				shape, err := bench.Lookup(synthetic)
				if err != nil {
					return err
				}
				if layers < 1 {
					return fmt.Errorf("--layers %d: give the number of layers to run (1 to %d)", layers, shape.Config.NumLayers)
				}
				d := dir
				if d == "" {
					if d, err = os.MkdirTemp("", "fm-bench-"+shape.Name+"-"); err != nil {
						return err
					}
					defer os.RemoveAll(d)
				}
				fmt.Fprintf(stderr, "writing %d of %d layers of %s (%s) at %d bits into %s\n", layers, shape.Config.NumLayers, shape.Name, shape.Params, bits, d)
				start := time.Now()
				res, err := bench.WriteSynthetic(ctx, d, bench.SynthOptions{Shape: shape, Layers: layers, Bits: bits})
				if err != nil {
					return err
				}
				if res.Reused {
					fmt.Fprintf(stderr, "reusing the synthetic model already in %s\n", d)
				} else {
					el := time.Since(start)
					fmt.Fprintf(stderr, "wrote %s in %v (%.2f GB/s, synced)\n", bench.FormatSize(res.Bytes), el.Round(time.Millisecond), float64(res.Bytes)/el.Seconds()/1e9)
				}
				// bench wrote these files itself: no checksums at open or first read.
				ef.Model, ef.NoVerify, ef.NoVerifyExperts = d, true, true
				o.Shape, o.Bits, o.DiskDir = &shape, bits, d
			case ef.Model != "":
				if ioMB > 0 {
					o.DiskDir = ef.Model
				}
			default:
				return errors.New("give --model OUT, --synthetic NAME --layers N, or --io")
			}
			e, err := ef.Open(ctx, stderr)
			if err != nil {
				return err
			}
			defer e.Close()
			if cpuProfile != "" {
				stop, err := startCPUProfile(cpuProfile)
				if err != nil {
					return err
				}
				defer stop()
			}
			r, err := bench.Measure(ctx, e, o)
			if err != nil {
				return err
			}
			if asJSON {
				return bench.WriteJSON(out, r)
			}
			bench.WriteText(out, r)
			// A device that keeps experts resident reports its cache (hit
			// rate, bytes uploaded).
			if c, ok := e.Device.(interface{ CacheReport() string }); ok {
				fmt.Fprintln(out, c.CacheReport())
			}
			return nil
		},
	}
	ef.Register(cmd.Flags())
	f := cmd.Flags()
	cli.Int(f, &promptTokens, "prompt-tokens", "", 128, 1, math.MaxInt32, "length of the synthetic prompt for the prefill")
	cli.Int(f, &genTokens, "tokens", "", 32, 1, math.MaxInt32, "tokens to decode per run")
	cli.Int(f, &runs, "runs", "", 3, 1, math.MaxInt32, "repetitions; the best prefill and the best decode are reported")
	f.StringVar(&synthetic, "synthetic", "", "benchmark a named model's shapes with random weights: "+strings.Join(bench.Names(), ", "))
	cli.Int(f, &layers, "layers", "", 0, 0, math.MaxInt32, "with --synthetic: how many of the model's layers to write and run")
	cli.IntFunc(f, &bits, "bits", "", 4, cli.OneOf(2, 3, 4, 8, 16), "with --synthetic: expert bits (2, 3, 4, 8; 16 keeps bf16); dense matrices use max(4, bits)")
	cli.Float32(f, &ramGB, "ram-gb", "", 0, 0, math.MaxFloat32, "with --synthetic: memory budget of the projection in GiB (0: this machine's)")
	f.StringVar(&dir, "dir", "", "with --synthetic: where to write (or reuse) the synthetic model; with --io: where to test the disk")
	f.BoolVar(&ioOnly, "io", false, "only measure memory read bandwidth and parallel O_DIRECT disk read bandwidth")
	cli.Int(f, &ioMB, "io-mb", "", 0, 0, math.MaxInt32, "size of the disk test file in MiB (default 512; with --model it also turns the disk test on)")
	f.BoolVar(&asJSON, "json", false, "print one JSON object instead of the text report")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the measured runs (prefill, decode and the ceilings) to this file, for go tool pprof; --prompt-tokens 1 leaves mostly decode")
	return cmd
}

// startCPUProfile starts Go's CPU profiler writing to path; the returned
// function stops it and closes the file.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("--cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("--cpuprofile %s: %w", path, err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// runIOBench measures the ceilings alone.
func runIOBench(cmd *cobra.Command, dir string, size int64, asJSON bool) error {
	if size <= 0 {
		size = 512 << 20
	}
	mem := bench.MemoryReadBandwidth(256<<20, 5)
	all, one := bench.ComputeCeiling(3)
	d, err := bench.DiskReadBandwidth(cmd.Context(), dir, size, 0, 0)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if asJSON {
		return bench.WriteIOJSON(out, &bench.IOReport{MemoryReadGBs: mem / 1e9,
			ComputeF32GFLOPS: all.F32FLOPS / 1e9, ComputeF32GFLOPS1: one.F32FLOPS / 1e9, ComputeInt8GOPS: all.Int8OPS / 1e9,
			ComputeKernel: all.Kernel, DiskDir: dir, DiskReadGBs: d.BytesPerSecond / 1e9, DiskDirect: d.Direct,
			DiskReadBytes: d.Bytes, DiskThreads: d.Threads, DiskBlockBytes: d.BlockSize})
	}
	kind := "O_DIRECT"
	if !d.Direct {
		kind = "buffered after dropping the cache (the filesystem refused O_DIRECT)"
	}
	fmt.Fprintf(out, "memory read: %.2f GB/s (256 MiB, every core)\n", mem/1e9)
	fmt.Fprintf(out, "arithmetic:  %.0f GFLOP/s float32 (%.0f on one core), %.0f GOP/s int8 dot products (%s kernels, every core)\n",
		all.F32FLOPS/1e9, one.F32FLOPS/1e9, all.Int8OPS/1e9, all.Kernel)
	fmt.Fprintf(out, "disk read:   %.2f GB/s (%s of %s, %d threads × %d KiB reads, %s)\n", d.BytesPerSecond/1e9,
		bench.FormatSize(d.Bytes), dir, d.Threads, d.BlockSize>>10, kind)
	return nil
}
