package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/fm-moe/fm/pkg/backend"
	"github.com/fm-moe/fm/pkg/backend/cpu"
	"github.com/fm-moe/fm/pkg/engine"
	"github.com/fm-moe/fm/pkg/internal/sysmem"
	"github.com/fm-moe/fm/pkg/layout"
	"github.com/fm-moe/fm/pkg/model"
	"github.com/fm-moe/fm/pkg/sample"
)

// Options configure Measure.
type Options struct {
	PromptTokens int // synthetic prompt length for the prefill
	DecodeTokens int // tokens decoded per run
	Runs         int // repetitions; the best prefill and the best decode are reported
	// Shape, when set, is the named model the directory is a truncation of:
	// the report then projects the full model's speed.
	Shape *Shape
	// Bits and GroupSize of the synthetic model (for the projection).
	Bits, GroupSize int
	// RAMBytes is the memory budget of the projection (0: this machine's).
	RAMBytes int64
	// DiskDir is where the disk read test writes its file (the disk the
	// experts are on); empty skips the disk test unless Shape is set.
	DiskDir   string
	DiskBytes int64 // size of the disk test file (0: 512 MiB)
	// DirectIO and CacheBytes are the expert store's settings, for the report.
	DirectIO   bool
	CacheBytes int64
	// Matmul is the backend's numerics for quantized products (--matmul),
	// for the report.
	Matmul string
	// DeviceBudgetGiven says the device's expert cache budget was set by the
	// user (--vram-cache-gb): the projection gives the full model's experts
	// that much. Otherwise the budget was what the device had free beside
	// the run's dense weights, and the full model's extra dense weights are
	// taken from it.
	DeviceBudgetGiven bool
	// Log receives progress notes (nil: none).
	Log io.Writer
}

// LayerReport is one layer's decode time per token.
type LayerReport struct {
	Layer      int     `json:"layer"`
	Type       string  `json:"type"`
	ComputeMs  float64 `json:"compute_ms"`
	ExpertIOMs float64 `json:"expert_io_ms"`
}

// Report is the result of one bench run; its JSON form is `fm-infer bench --json`.
type Report struct {
	Model           string `json:"model"`
	Arch            string `json:"arch"`
	Layers          int    `json:"layers"`
	ModelLayers     int    `json:"model_layers"`
	Bits            int    `json:"bits,omitempty"`
	ExpertsPerToken int    `json:"experts_per_token"`
	ExpertFileBytes int64  `json:"expert_file_bytes"`
	DirectIO        bool   `json:"direct_io"`
	CacheBytes      int64  `json:"expert_cache_bytes"`
	Matmul          string `json:"matmul"`
	// Device is the backend that ran it, as it names itself: "cpu:16
	// threads", "cuda:0 NVIDIA H200" (a figure means little without the
	// thread count that made it).
	Device string `json:"device,omitempty"`

	PromptTokens       int     `json:"prompt_tokens"`
	DecodedTokens      int     `json:"decoded_tokens"`
	PrefillTokS        float64 `json:"prefill_tok_s"`
	DecodeTokS         float64 `json:"decode_tok_s"`
	PrefillDecodeRatio float64 `json:"prefill_decode_ratio"`

	// Weight bytes one decode token reads (dense + K experts per sparse layer).
	BytesPerToken       int64 `json:"bytes_per_token"`
	DenseBytesPerToken  int64 `json:"dense_bytes_per_token"`
	ExpertBytesPerToken int64 `json:"expert_bytes_per_token"`
	// Ceiling and ratio: weights read per second while decoding over memory
	// read bandwidth measured in the same run: sampled after every run, the
	// best sample (the ratio is then the conservative one), every sample kept.
	MemoryReadGBs       float64   `json:"memory_read_gbs"`
	MemoryReadSampleGBs []float64 `json:"memory_read_samples_gbs,omitempty"`
	RooflineRatio       float64   `json:"roofline_ratio"`
	// DecodeRunTokS is each run's decode rate, and RooflineRatioPaired the
	// median over the runs of its rate over the ceiling sampled right after
	// it: on a machine whose memory bandwidth moves from minute to minute
	// (shared hosts), a steadier figure than the best rate over the best
	// sample, which pairs a rate and a ceiling from different minutes.
	DecodeRunTokS       []float64 `json:"decode_runs_tok_s,omitempty"`
	RooflineRatioPaired float64   `json:"roofline_ratio_paired,omitempty"`
	// CPUStealRatio is, over the runs, the share of the CPU time the
	// machine wanted that its hypervisor gave to something else (Linux's
	// steal time; absent where the system does not report it). On a
	// virtual machine whose vCPUs are shared, every hand-off between the
	// workers waits for the slowest, so a few per cent of steal cost far
	// more than a few per cent of speed (docs/PERF.md, round twelve).
	CPUStealRatio *float64 `json:"cpu_steal_ratio,omitempty"`
	// The prefill's ceiling: the arithmetic peak measured in the same run
	// (every core, and one core alone), the multiply-adds with weights one
	// prompt token needs (2 operations each; attention's scores and the LM
	// head, which a prefill runs for its last token only, are left out), and
	// the prefill's rate over the peak of its numerics (--matmul int8: int8
	// dot products; exact: float32).
	ComputeF32GFLOPS     float64 `json:"compute_f32_gflops"`
	ComputeF32GFLOPS1    float64 `json:"compute_f32_gflops_one_core"`
	ComputeInt8GOPS      float64 `json:"compute_int8_gops"`
	ComputeKernel        string  `json:"compute_kernel"`
	PrefillFLOPsPerToken int64   `json:"prefill_flops_per_token"`
	PrefillGFLOPS        float64 `json:"prefill_gflops"`
	PrefillComputeRatio  float64 `json:"prefill_compute_ratio"`

	ExpertHitRate float64 `json:"expert_hit_rate"` // RAM cache or shared-buffer hits / experts requested
	// ExpertPackedRate is, over the decode, the share of routed experts the
	// CPU computed from its row-interleaved copies (int8 mode with
	// --expert-cache-mb, which that cache then holds; 0 otherwise).
	ExpertPackedRate      float64 `json:"expert_packed_rate"`
	ExpertFileBytesPerTok float64 `json:"expert_read_bytes_per_token"` // read from expert files (page cache or disk)
	// A device that keeps experts in its own memory (a GPU's VRAM cache),
	// over the decode only: its hit rate and the expert bytes uploaded to it
	// per token (PCIe traffic); its budget; the ceiling of the uploads,
	// host-to-device bandwidth from pinned memory measured in the same run.
	// All 0 on the CPU.
	DeviceCacheBudget        int64   `json:"device_cache_budget_bytes"`
	UploadGBs                float64 `json:"upload_gbs"`
	DeviceCacheHitRate       float64 `json:"device_cache_hit_rate"`
	DeviceUploadBytesPerTok  float64 `json:"device_upload_bytes_per_token"`
	DeviceCacheLookupsPerTok float64 `json:"device_cache_lookups_per_token"`
	DiskReadGBs              float64 `json:"disk_read_gbs"`      // parallel read bandwidth of the disk, same run (0: not measured)
	DiskDirect               bool    `json:"disk_direct"`        // the disk test used O_DIRECT
	DiskIORatio              float64 `json:"disk_io_ratio"`      // expert file bytes per second while decoding / disk_read_gbs
	LayerComputeMs           float64 `json:"layer_compute_ms"`   // per token, average layer
	LayerExpertIOMs          float64 `json:"layer_expert_io_ms"` // per token, average layer
	HeadMs                   float64 `json:"head_ms"`            // per token: embedding, final norm, output projection
	// LayerPhaseMs splits the average layer's decode time by phase (names
	// from model.Phase: attention/delta-net, routing, expert I/O, expert
	// compute, other), so that a slow layer says which part is slow.
	LayerPhaseMs map[string]float64 `json:"layer_phase_ms"`
	PerLayer     []LayerReport      `json:"per_layer"`
	PeakRSS      int64              `json:"peak_rss_bytes"`

	// With --synthetic: the whole model at the RAM budget.
	ProjectedTokS  float64     `json:"projected_tok_s"`
	RAMBytes       int64       `json:"ram_bytes,omitempty"`
	Projection     *Projection `json:"projection,omitempty"`
	ProjectionNote string      `json:"projection_note,omitempty"`
}

// Measure runs prefill and decode on the opened engine, measures the
// ceilings in the same run and, for a synthetic model, projects the full
// model's speed.
func Measure(ctx context.Context, e *engine.Engine, o Options) (*Report, error) {
	if o.PromptTokens < 1 || o.DecodeTokens < 1 || o.Runs < 1 {
		return nil, errors.New("bench: --prompt-tokens, --tokens and --runs must be positive")
	}
	logf := func(format string, a ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, format+"\n", a...)
		}
	}
	cfg := e.Model.Config()
	k := e.Model.ExpertsPerToken()
	m := e.Dir.Manifest
	r := &Report{Model: m.Source.Dir, Arch: cfg.Arch, Layers: cfg.NumLayers, ModelLayers: cfg.NumLayers,
		ExpertsPerToken: k, Bits: o.Bits, DirectIO: o.DirectIO, CacheBytes: o.CacheBytes, Matmul: o.Matmul,
		Device: e.Device.Name()}
	if e.Set != nil {
		r.ExpertFileBytes = e.Set.FileSize
		if r.Bits == 0 {
			r.Bits = e.Set.Bits
		}
	}
	if o.Shape != nil {
		r.Model = o.Shape.Name
		r.ModelLayers = o.Shape.Config.NumLayers
	}
	ids := SyntheticPrompt(o.PromptTokens, cfg.VocabSize)
	// Greedy decoding of random weights settles on one repeated token, whose
	// tokens then route to the same experts every step: a RAM cache would
	// look perfect. Sampling at temperature 1 (fixed seed) keeps the tokens,
	// and so the routing, varied, like real text. Among the 40 most likely
	// tokens only: random weights give a nearly flat distribution, and
	// sampling the whole vocabulary costs one float64 exp per entry — 2.5–5
	// ms a token on a 152k–248k vocabulary, which on a GPU was half of each
	// decode step (docs/PERF.md); top-k needs one pass and 40 exps.
	params := sample.Params{}
	if o.Shape != nil {
		params = sample.Params{Temperature: 1, TopK: 40, Seed: 1}
	}
	var best *engine.Stats
	bestPrefill := 0.0
	var ceiling *ReadCeiling
	var runs cpuTimes // CPU time over the runs (not the ceilings' samples)
	timesOK := true
	for run := 0; run < o.Runs; run++ {
		st := e.Model.NewState()
		t0, ok0 := readCPUTimes()
		res, err := e.Generate(ctx, st, ids, engine.GenerateOptions{
			MaxTokens: o.DecodeTokens + 1, Sampler: sample.New(params), History: ids})
		t1, ok1 := readCPUTimes()
		timesOK = timesOK && ok0 && ok1
		if timesOK && t1.busy >= t0.busy && t1.steal >= t0.steal {
			runs.busy += t1.busy - t0.busy
			runs.steal += t1.steal - t0.steal
		}
		st.Release() // a GPU's memory for the next run, not at the next GC
		if err != nil {
			return nil, err
		}
		s := res.Stats
		logf("run %d: prefill %.1f tok/s, decode %.2f tok/s", run+1, s.PrefillTokensPerSecond(), s.DecodeTokensPerSecond())
		bestPrefill = max(bestPrefill, s.PrefillTokensPerSecond())
		r.DecodeRunTokS = append(r.DecodeRunTokS, s.DecodeTokensPerSecond())
		if best == nil || s.DecodeTokensPerSecond() > best.DecodeTokensPerSecond() {
			best = &s
		}
		if run == 0 {
			// The peak RSS of the runs, before the ceiling's buffer adds
			// to the process's high-water mark.
			r.PeakRSS = s.PeakRSS
			logf("measuring memory read bandwidth (after each run)")
			ceiling = NewReadCeiling(256 << 20)
		}
		ceiling.Sample(5)
	}
	if timesOK {
		steal := stealRatio(cpuTimes{}, runs)
		r.CPUStealRatio = &steal
	}
	r.PromptTokens, r.DecodedTokens = best.PromptTokens, best.DecodedTokens
	r.PrefillTokS, r.DecodeTokS = bestPrefill, best.DecodeTokensPerSecond()
	if r.DecodeTokS > 0 {
		r.PrefillDecodeRatio = r.PrefillTokS / r.DecodeTokS
	}
	r.DenseBytesPerToken, r.ExpertBytesPerToken = BytesPerToken(m, e.Set, k)
	r.BytesPerToken = r.DenseBytesPerToken + r.ExpertBytesPerToken
	r.ExpertHitRate = best.DecodeIO.HitRate()
	r.ExpertFileBytesPerTok = best.DecodeBytesPerToken()
	if dc := best.DecodeDeviceCache; dc.Host && dc.Hits+dc.Misses > 0 {
		// The device's RAM cache (the CPU's row-interleaved experts) took
		// the store's budget: the store sees only its misses, so an expert
		// came from RAM when the device or the store had it.
		io := best.DecodeIO
		r.ExpertHitRate = float64(dc.Hits+io.Hits+io.Shared) / float64(dc.Hits+dc.Misses)
		r.ExpertPackedRate = dc.HitRate()
	} else if dc.Hits+dc.Misses > 0 && best.DecodedTokens > 0 {
		r.DeviceCacheHitRate = dc.HitRate()
		r.DeviceUploadBytesPerTok = float64(dc.UploadBytes) / float64(best.DecodedTokens)
		r.DeviceCacheLookupsPerTok = float64(dc.Hits+dc.Misses) / float64(best.DecodedTokens)
	}

	// Per-layer split of the decode time.
	n := time.Duration(max(1, best.DecodedTokens))
	p := &best.DecodeProfile
	var full, lin LayerCost
	var nFull, nLin time.Duration
	var sumC, sumIO time.Duration
	var phases [model.NumPhases]time.Duration
	for i, l := range p.Layers {
		var c LayerCost
		for ph, d := range l {
			phases[ph] += d
			if model.Phase(ph) == model.PhaseExpertIO {
				c.ExpertIO += d
			} else {
				c.Compute += d
			}
		}
		c.Compute /= n
		c.ExpertIO /= n
		typ := cfg.LayerTypes[i]
		r.PerLayer = append(r.PerLayer, LayerReport{Layer: i, Type: typ, ComputeMs: ms(c.Compute), ExpertIOMs: ms(c.ExpertIO)})
		sumC += c.Compute
		sumIO += c.ExpertIO
		if typ == layout.FullAttention {
			full.Compute += c.Compute
			full.ExpertIO += c.ExpertIO
			nFull++
		} else {
			lin.Compute += c.Compute
			lin.ExpertIO += c.ExpertIO
			nLin++
		}
	}
	if nl := time.Duration(len(p.Layers)); nl > 0 {
		r.LayerComputeMs, r.LayerExpertIOMs = ms(sumC/nl), ms(sumIO/nl)
		r.LayerPhaseMs = make(map[string]float64, len(phases))
		for ph, d := range phases {
			r.LayerPhaseMs[model.Phase(ph).String()] = ms(d / n / nl)
		}
	}
	if nFull > 0 {
		full.Compute, full.ExpertIO = full.Compute/nFull, full.ExpertIO/nFull
	}
	if nLin > 0 {
		lin.Compute, lin.ExpertIO = lin.Compute/nLin, lin.ExpertIO/nLin
	}
	head := p.Head / n
	r.HeadMs = ms(head)

	// Ceilings: the memory's was sampled after each run; the arithmetic peak
	// is measured now, once.
	mem := ceiling.Best()
	r.MemoryReadGBs = mem / 1e9
	for _, bw := range ceiling.Samples() {
		r.MemoryReadSampleGBs = append(r.MemoryReadSampleGBs, bw/1e9)
	}
	r.RooflineRatio = float64(r.BytesPerToken) * r.DecodeTokS / mem
	r.RooflineRatioPaired = pairedRoofline(float64(r.BytesPerToken), r.DecodeRunTokS, ceiling.Samples())
	ceiling = nil // its buffer for the arithmetic peak's run
	if _, onCPU := e.Device.(*cpu.Device); onCPU {
		logf("measuring the arithmetic peak")
		all, one := ComputeCeiling(3)
		r.ComputeF32GFLOPS, r.ComputeF32GFLOPS1, r.ComputeInt8GOPS, r.ComputeKernel = all.F32FLOPS/1e9, one.F32FLOPS/1e9, all.Int8OPS/1e9, all.Kernel
		r.PrefillFLOPsPerToken = 2 * WeightMACsPerPromptToken(m, e.Set, k)
		r.PrefillGFLOPS = float64(r.PrefillFLOPsPerToken) * r.PrefillTokS / 1e9
		peak := r.ComputeF32GFLOPS
		if o.Matmul == "int8" && r.ComputeInt8GOPS > 0 {
			peak = r.ComputeInt8GOPS
		}
		if peak > 0 {
			r.PrefillComputeRatio = r.PrefillGFLOPS / peak
		}
	}
	if o.DiskDir != "" {
		size := o.DiskBytes
		if size <= 0 {
			size = 512 << 20
		}
		logf("measuring parallel read bandwidth of the disk under %s (%s file)", o.DiskDir, layout.FormatBytes(size))
		d, err := DiskReadBandwidth(ctx, o.DiskDir, size, 0, 0)
		if err != nil {
			return nil, err
		}
		r.DiskReadGBs, r.DiskDirect = d.BytesPerSecond/1e9, d.Direct
		if d.BytesPerSecond > 0 {
			r.DiskIORatio = r.ExpertFileBytesPerTok * r.DecodeTokS / d.BytesPerSecond
		}
	}

	var deviceBudget int64
	if c, ok := e.Device.(backend.ExpertCache); ok && !c.ExpertCacheStats().Host {
		deviceBudget = c.ExpertCacheStats().Budget
		r.DeviceCacheBudget = deviceBudget
	}
	if um, ok := e.Device.(backend.UploadMeter); ok {
		logf("measuring host-to-device bandwidth from pinned memory")
		bw, err := um.MeasureUpload(256 << 20)
		if err != nil {
			return nil, fmt.Errorf("bench: upload bandwidth: %w", err)
		}
		r.UploadGBs = bw / 1e9
	}

	if o.Shape != nil {
		ram := o.RAMBytes
		if ram <= 0 {
			if ram = sysmem.Total(); ram <= 0 {
				return nil, errors.New("bench: cannot read this machine's memory size; give --ram-gb")
			}
		}
		r.RAMBytes = ram
		whole := o.Shape.Config
		in := ProjectionInput{Config: &whole, Bits: o.Bits, GroupSize: o.GroupSize, K: k,
			Full: full, Linear: lin, Head: head,
			RAMBytes: ram, Reserve: Reserve(ram), DiskBytesPerSecond: r.DiskReadGBs * 1e9}
		if deviceBudget > 0 {
			in.DeviceExpertBytes, in.UploadBytesPerSecond = deviceBudget, r.UploadGBs*1e9
			if !o.DeviceBudgetGiven {
				in.DeviceRunDenseBytes = m.Dense.Size
			}
		}
		proj, err := Project(in)
		if err != nil {
			return nil, err
		}
		if deviceBudget > 0 && r.DeviceCacheHitRate < 0.99 {
			note := fmt.Sprintf("the run's experts did not all stay on the device (hit rate %.3f while decoding): its layer times include their uploads, which the projection adds again; run with a --vram-cache-gb that holds this run's experts", r.DeviceCacheHitRate)
			if proj.Note != "" {
				note = proj.Note + "; " + note
			}
			proj.Note = note
		}
		r.Projection = &proj
		r.ProjectedTokS = proj.TokensPerSecond
		r.ProjectionNote = proj.Note
	}
	return r, nil
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// Reserve is the RAM the projection keeps for everything but weights: a
// tenth of the budget (KV cache, expert buffers, the OS), at least 1 GiB.
func Reserve(ram int64) int64 { return max(1<<30, ram/10) }

// SyntheticPrompt is a fixed pseudo-random id sequence (the same every run).
func SyntheticPrompt(n, vocab int) []int {
	ids := make([]int, n)
	x := uint32(2463534242)
	for i := range ids {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		ids[i] = int(x % uint32(vocab))
	}
	return ids
}

// pairedRoofline is the median over the runs of bytes × rate / the ceiling
// sample taken right after that run (0 without a pair).
func pairedRoofline(bytes float64, rates, samples []float64) float64 {
	var rs []float64
	for i := range min(len(rates), len(samples)) {
		if samples[i] > 0 {
			rs = append(rs, bytes*rates[i]/samples[i])
		}
	}
	if len(rs) == 0 {
		return 0
	}
	slices.Sort(rs)
	if n := len(rs); n%2 == 0 {
		return (rs[n/2-1] + rs[n/2]) / 2
	}
	return rs[len(rs)/2]
}
