package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"

	"github.com/fm-moe/fm/pkg/layout"
	"github.com/fm-moe/fm/pkg/model"
)

// WriteJSON prints the report as one JSON object.
func WriteJSON(w io.Writer, r *Report) error { return writeIndented(w, r) }

// writeIndented prints v as one indented JSON object and a newline.
func writeIndented(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// IOReport is `bench --io --json`'s object: this machine's ceilings alone,
// with the directory whose disk was read (a Report's model fields would all
// be zero there).
type IOReport struct {
	MemoryReadGBs     float64 `json:"memory_read_gbs"`
	ComputeF32GFLOPS  float64 `json:"compute_f32_gflops"`
	ComputeF32GFLOPS1 float64 `json:"compute_f32_gflops_one_core"`
	ComputeInt8GOPS   float64 `json:"compute_int8_gops"`
	ComputeKernel     string  `json:"compute_kernel"`
	DiskDir           string  `json:"disk_dir"`
	DiskReadGBs       float64 `json:"disk_read_gbs"`
	DiskDirect        bool    `json:"disk_direct"` // false: the file system refused O_DIRECT
	DiskReadBytes     int64   `json:"disk_read_bytes"`
	DiskThreads       int     `json:"disk_threads"`
	DiskBlockBytes    int     `json:"disk_block_bytes"`
}

// WriteIOJSON prints r as one indented JSON object.
func WriteIOJSON(w io.Writer, r *IOReport) error { return writeIndented(w, r) }

// WriteText prints the report for people.
func WriteText(w io.Writer, r *Report) {
	fmt.Fprintf(w, "model: %s (%s), %d of %d layers, %d-bit, K=%d, expert file %s, matmul %s, on %s\n", r.Model, r.Arch, r.Layers, r.ModelLayers,
		r.Bits, r.ExpertsPerToken, layout.FormatBytes(r.ExpertFileBytes), r.Matmul, r.Device)
	fmt.Fprintf(w, "prefill: %d tokens, %.1f tok/s (%.1f× decode)\n", r.PromptTokens, r.PrefillTokS, r.PrefillDecodeRatio)
	fmt.Fprintf(w, "decode:  %.2f tok/s (%.2f ms/token), best of the runs\n", r.DecodeTokS, 1e3/r.DecodeTokS)
	fmt.Fprintf(w, "\ndecode per token and layer (compute = all but the wait for expert files):\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "layer\ttype\tcompute ms\texpert I/O ms\t\n")
	for _, l := range r.PerLayer {
		fmt.Fprintf(tw, "%d\t%s\t%.3f\t%.3f\t\n", l.Layer, l.Type, l.ComputeMs, l.ExpertIOMs)
	}
	fmt.Fprintf(tw, "mean\t\t%.3f\t%.3f\t\n", r.LayerComputeMs, r.LayerExpertIOMs)
	tw.Flush()
	if len(r.LayerPhaseMs) > 0 {
		fmt.Fprintf(w, "mean layer by phase:")
		for ph := range model.NumPhases {
			fmt.Fprintf(w, " %s %.3f ms;", ph, r.LayerPhaseMs[ph.String()])
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "embedding + final norm + lm_head: %.3f ms\n", r.HeadMs)
	fmt.Fprintf(w, "\nexperts: %.1f%% served from the RAM cache, %.2f MB read from files per token\n",
		100*r.ExpertHitRate, r.ExpertFileBytesPerTok/1e6)
	if r.ExpertPackedRate > 0 {
		fmt.Fprintf(w, "experts computed row-interleaved (the RAM cache holds them packed for the int8 kernels): %.1f%%\n", 100*r.ExpertPackedRate)
	}
	if r.DeviceCacheLookupsPerTok > 0 {
		fmt.Fprintf(w, "device expert cache while decoding: hit rate %.3f of %.0f experts per token, %.2f MB uploaded per token\n",
			r.DeviceCacheHitRate, r.DeviceCacheLookupsPerTok, r.DeviceUploadBytesPerTok/1e6)
	}
	fmt.Fprintf(w, "weights read per token: %.2f MB (dense %.2f + experts %.2f) → %.2f GB/s\n",
		float64(r.BytesPerToken)/1e6, float64(r.DenseBytesPerToken)/1e6, float64(r.ExpertBytesPerToken)/1e6,
		float64(r.BytesPerToken)*r.DecodeTokS/1e9)
	if r.ComputeF32GFLOPS > 0 {
		fmt.Fprintf(w, "ceiling: arithmetic %.0f GFLOP/s float32 (%.0f on one core)", r.ComputeF32GFLOPS, r.ComputeF32GFLOPS1)
		if r.ComputeInt8GOPS > 0 {
			fmt.Fprintf(w, ", %.0f GOP/s int8 dot products", r.ComputeInt8GOPS)
		}
		fmt.Fprintf(w, " (%s, same run) → prefill %.1f GFLOP/s of weight products (%.2f GFLOP per token) at %.2f of the %s peak\n",
			r.ComputeKernel, r.PrefillGFLOPS, float64(r.PrefillFLOPsPerToken)/1e9, r.PrefillComputeRatio, map[bool]string{true: "int8", false: "float32"}[r.Matmul == "int8" && r.ComputeInt8GOPS > 0])
	}
	if st := r.CPUStealRatio; st != nil && *st >= 0.02 {
		fmt.Fprintf(w, "cpu steal: the hypervisor took %.0f%% of the CPU time the runs wanted", 100**st)
		if *st >= 0.1 {
			fmt.Fprintf(w, " — this machine's vCPUs are shared: figures are noisy, and fewer --threads may be faster")
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "ceiling: memory read %.2f GB/s", r.MemoryReadGBs)
	if n := len(r.MemoryReadSampleGBs); n > 1 {
		fmt.Fprintf(w, " (best of %d samples, one after each run; lowest %.2f)", n, slices.Min(r.MemoryReadSampleGBs))
	} else {
		fmt.Fprintf(w, " (same run)")
	}
	fmt.Fprintf(w, " → roofline ratio %.2f", r.RooflineRatio)
	if len(r.DecodeRunTokS) > 1 && r.RooflineRatioPaired > 0 {
		fmt.Fprintf(w, " (each run against the sample after it: median %.2f)", r.RooflineRatioPaired)
	}
	if r.UploadGBs > 0 {
		fmt.Fprintf(w, " (host memory: weights on a GPU are read from its own)")
	}
	fmt.Fprintln(w)
	if r.UploadGBs > 0 {
		fmt.Fprintf(w, "ceiling: host-to-device %.1f GB/s from pinned memory (same run) → expert uploads while decoding at %.2f of it\n",
			r.UploadGBs, r.DeviceUploadBytesPerTok*r.DecodeTokS/(r.UploadGBs*1e9))
	}
	if r.DiskReadGBs > 0 {
		kind := "O_DIRECT"
		if !r.DiskDirect {
			kind = "buffered after dropping the cache (the filesystem refused O_DIRECT)"
		}
		fmt.Fprintf(w, "ceiling: disk parallel read %.2f GB/s (%s) → expert reads while decoding at %.2f of it",
			r.DiskReadGBs, kind, r.DiskIORatio)
		if !r.DirectIO {
			fmt.Fprintf(w, " (page-cache hits included: --direct-io measures the disk alone)")
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "peak RSS %s\n", layout.FormatBytes(r.PeakRSS))
	if p := r.Projection; p != nil {
		fmt.Fprintf(w, "\nprojection: the whole %s (%d layers) with %s of RAM, K=%d:\n", r.Model, r.ModelLayers, layout.FormatBytes(r.RAMBytes), r.ExpertsPerToken)
		if r.DeviceCacheBudget > 0 {
			fmt.Fprintf(w, "  dense weights %s, experts %s (%s each); %.1f%% of the experts on the device, %.1f%% in RAM beside the dense weights and a %s reserve, the rest on disk\n",
				layout.FormatBytes(p.DenseBytes), layout.FormatBytes(p.ExpertBytes), layout.FormatBytes(p.ExpertFileSize),
				100*p.DeviceFraction, 100*p.CachedFraction, layout.FormatBytes(Reserve(r.RAMBytes)))
			fmt.Fprintf(w, "  per token: compute %.1f ms (layers scaled from this run) + %.1f MB uploaded at %.1f GB/s = %.1f ms + %.1f MB of expert misses at %.2f GB/s = %.1f ms\n",
				ms(p.ComputeTime), p.UploadBytes/1e6, r.UploadGBs, ms(p.UploadTime), p.MissBytes/1e6, r.DiskReadGBs, ms(p.IOTime))
		} else {
			fmt.Fprintf(w, "  dense weights %s, experts %s (%s each); %.1f%% of the experts fit beside the dense weights and a %s reserve\n",
				layout.FormatBytes(p.DenseBytes), layout.FormatBytes(p.ExpertBytes), layout.FormatBytes(p.ExpertFileSize),
				100*p.CachedFraction, layout.FormatBytes(Reserve(r.RAMBytes)))
			fmt.Fprintf(w, "  per token: compute %.1f ms (layers scaled from this run) + %.1f MB of expert misses at %.2f GB/s = %.1f ms\n",
				ms(p.ComputeTime), p.MissBytes/1e6, r.DiskReadGBs, ms(p.IOTime))
		}
		fmt.Fprintf(w, "  projected decode: %.2f tok/s (compute-bound %.2f", p.TokensPerSecond, p.ComputeBoundTokS)
		if p.UploadBoundTokS > 0 {
			fmt.Fprintf(w, ", upload-bound %.2f", p.UploadBoundTokS)
		}
		if p.DiskBoundTokS > 0 {
			fmt.Fprintf(w, ", disk-bound %.2f", p.DiskBoundTokS)
		}
		fmt.Fprintf(w, "); uniform routing assumed, so a lower bound (see docs/PERF.md)\n")
		if p.Note != "" {
			fmt.Fprintf(w, "  note: %s\n", p.Note)
		}
	}
}

// FormatSize prints a byte count with a binary unit.
func FormatSize(n int64) string { return layout.FormatBytes(n) }
