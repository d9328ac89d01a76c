package bench

import (
	"context"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fm-moe/fm/pkg/checkpoint"
	"github.com/fm-moe/fm/pkg/engine"
	"github.com/fm-moe/fm/pkg/layout"
	"github.com/fm-moe/fm/pkg/model"
)

// Expert file sizes of Qwen3.5-397B-A17B measured on the real mlx-community
// files (docs/flash-moe-notes.md §1.2): the plan must lay experts out the same.
func TestPlanMatchesKnownExpertSizes(t *testing.T) {
	for _, tc := range []struct {
		name string
		bits int
		want int64
	}{
		{"qwen3.5-397b-a17b", 4, 7077888},
		{"qwen3.5-397b-a17b", 2, 3932160},
		{"qwen3-30b-a3b", 4, 3 * (768*2048/2 + 2*768*2048/64*2)}, // codes + bf16 scales and biases, page aligned
	} {
		s, err := Lookup(tc.name)
		if err != nil {
			t.Fatal(err)
		}
		_, _, set, err := checkpoint.PlanLayout(&s.Config, tc.bits, 64)
		if err != nil {
			t.Fatal(err)
		}
		if set.FileSize != tc.want {
			t.Errorf("%s %d-bit: expert file %d bytes, want %d", tc.name, tc.bits, set.FileSize, tc.want)
		}
	}
}

func TestShapesAreValid(t *testing.T) {
	for _, name := range Names() {
		s, err := Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Config.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		c, err := Truncate(s.Config, 4)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err != nil {
			t.Errorf("%s, 4 layers: %v", name, err)
		}
		if s.Config.Arch != layout.ArchQwen3MoE && c.LayerTypes[3] != layout.FullAttention {
			t.Errorf("%s: layer 3 is %s, want full attention (every fourth)", name, c.LayerTypes[3])
		}
	}
	if _, err := Lookup("qwen9-1t"); err == nil || !strings.Contains(err.Error(), "qwen3-30b-a3b") {
		t.Errorf("unknown name: error %v should list the names", err)
	}
	s, _ := Lookup("qwen3-30b-a3b")
	if _, err := Truncate(s.Config, 49); err == nil {
		t.Error("49 of 48 layers accepted")
	}
}

// tinyShapes are small models of each architecture, for tests that write
// and run whole directories.
func tinyShapes() []Shape {
	moe := qwen3MoE(3, 128, 4, 2, 32, 8, 2, 64, 256, 4096, 1e6)
	moe.VocabSize, moe.EOSTokenIDs = 512, []int{1}
	next := hybrid(layout.ArchQwen3Next, "qwen3_next", 512, 4, 128, 2, 1, 1, 2, 8, 2, 64, 64, 256, []int{1})
	q35 := hybrid(layout.ArchQwen35MoE, "qwen3_5_moe_text", 512, 5, 128, 2, 1, 1, 2, 16, 4, 64, 64, 0, []int{1})
	return []Shape{{Name: "tiny-moe", Config: moe}, {Name: "tiny-next", Config: next}, {Name: "tiny-35", Config: q35}}
}

func TestSyntheticVerifiesOpensAndRuns(t *testing.T) {
	ctx := context.Background()
	for _, s := range tinyShapes() {
		for _, bits := range []int{4, 2, 16} {
			dir := filepath.Join(t.TempDir(), "m")
			o := SynthOptions{Shape: s, Layers: s.Config.NumLayers, Bits: bits}
			res, err := WriteSynthetic(ctx, dir, o)
			if err != nil {
				t.Fatalf("%s %d-bit: %v", s.Name, bits, err)
			}
			if res.Reused {
				t.Fatalf("%s: fresh directory reported as reused", s.Name)
			}
			problems, err := layout.Verify(ctx, dir, 2, nil)
			if err != nil || len(problems) > 0 {
				t.Fatalf("%s %d-bit: verify: %v %v", s.Name, bits, err, problems)
			}
			e, err := engine.Open(ctx, engine.Options{Dir: dir})
			if err != nil {
				t.Fatalf("%s %d-bit: open: %v", s.Name, bits, err)
			}
			logits, err := e.Logits(ctx, SyntheticPrompt(6, s.Config.VocabSize), false)
			e.Close()
			if err != nil {
				t.Fatalf("%s %d-bit: forward: %v", s.Name, bits, err)
			}
			var maxAbs float64
			for _, v := range logits {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					t.Fatalf("%s %d-bit: non-finite logit", s.Name, bits)
				}
				maxAbs = max(maxAbs, math.Abs(float64(v)))
			}
			// Unit-variance weights keep logits of the order of sqrt(hidden), not 0
			// (dead weights) and not huge (exploding activations).
			if maxAbs < 0.1 || maxAbs > 1e3 {
				t.Errorf("%s %d-bit: max |logit| %g, want a sane magnitude", s.Name, bits, maxAbs)
			}
			again, err := WriteSynthetic(ctx, dir, o)
			if err != nil || !again.Reused {
				t.Errorf("%s %d-bit: second write: reused %v, err %v; want reuse", s.Name, bits, again != nil && again.Reused, err)
			}
		}
	}
}

func TestSyntheticRegeneratesOnChange(t *testing.T) {
	ctx := context.Background()
	s := tinyShapes()[0]
	dir := t.TempDir()
	if _, err := WriteSynthetic(ctx, dir, SynthOptions{Shape: s, Layers: 2, Bits: 4}); err != nil {
		t.Fatal(err)
	}
	res, err := WriteSynthetic(ctx, dir, SynthOptions{Shape: s, Layers: 3, Bits: 4})
	if err != nil || res.Reused || res.Manifest.Config.NumLayers != 3 {
		t.Fatalf("more layers: reused=%v err=%v", res != nil && res.Reused, err)
	}
	res, err = WriteSynthetic(ctx, dir, SynthOptions{Shape: s, Layers: 3, Bits: 8})
	if err != nil || res.Reused || res.Manifest.Experts[0].Bits != 8 {
		t.Fatalf("other bits: reused=%v err=%v", res != nil && res.Reused, err)
	}
	if problems, err := layout.Verify(ctx, dir, 2, nil); err != nil || len(problems) > 0 {
		t.Fatalf("verify after regeneration: %v %v", err, problems)
	}
}

func TestMeasureAndProjectTiny(t *testing.T) {
	ctx := context.Background()
	s := tinyShapes()[2]
	dir := t.TempDir()
	if _, err := WriteSynthetic(ctx, dir, SynthOptions{Shape: s, Layers: 4, Bits: 4}); err != nil {
		t.Fatal(err)
	}
	e, err := engine.Open(ctx, engine.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	r, err := Measure(ctx, e, Options{PromptTokens: 8, DecodeTokens: 3, Runs: 2, Shape: &s, Bits: 4,
		RAMBytes: 64 << 30, DiskDir: dir, DiskBytes: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if r.DecodeTokS <= 0 || r.PrefillTokS <= 0 || r.MemoryReadGBs <= 0 || r.DiskReadGBs <= 0 || r.RooflineRatio <= 0 ||
		r.ComputeF32GFLOPS <= 0 || r.PrefillFLOPsPerToken <= 0 || r.PrefillComputeRatio <= 0 {
		t.Errorf("missing measurements: %+v", r)
	}
	if len(r.MemoryReadSampleGBs) != 2 || r.MemoryReadGBs != slices.Max(r.MemoryReadSampleGBs) {
		t.Errorf("memory ceiling %.2f GB/s from samples %v: want the best of one after each of 2 runs", r.MemoryReadGBs, r.MemoryReadSampleGBs)
	}
	if len(r.DecodeRunTokS) != 2 || slices.Max(r.DecodeRunTokS) != r.DecodeTokS {
		t.Errorf("decode rates per run %v: want 2, the best %.2f", r.DecodeRunTokS, r.DecodeTokS)
	}
	b := float64(r.BytesPerToken) / 1e9
	if want := (b*r.DecodeRunTokS[0]/r.MemoryReadSampleGBs[0] + b*r.DecodeRunTokS[1]/r.MemoryReadSampleGBs[1]) / 2; math.Abs(r.RooflineRatioPaired-want) > 1e-9*want {
		t.Errorf("paired roofline %v, want the median (mean of two) of each run over the sample after it, %v", r.RooflineRatioPaired, want)
	}
	if _, ok := readCPUTimes(); ok != (r.CPUStealRatio != nil) || ok && (*r.CPUStealRatio < 0 || *r.CPUStealRatio > 1) {
		t.Errorf("cpu_steal_ratio %v where /proc/stat is readable: %v", r.CPUStealRatio, ok)
	}
	if want := e.Device.Name(); r.Device != want || !strings.HasPrefix(r.Device, "cpu:") {
		t.Errorf("device %q, want the engine's %q", r.Device, want)
	}
	if len(r.PerLayer) != 4 || r.ModelLayers != 5 || r.Layers != 4 {
		t.Errorf("layers: %d reported, model %d, run %d", len(r.PerLayer), r.ModelLayers, r.Layers)
	}
	if r.Projection == nil || r.ProjectedTokS <= 0 || r.Projection.CachedFraction != 1 {
		t.Errorf("projection %+v", r.Projection)
	}
	// The phase split covers the layer: its parts add up to compute + I/O.
	sum := 0.0
	for ph := range model.NumPhases {
		v, ok := r.LayerPhaseMs[ph.String()]
		if !ok {
			t.Errorf("layer_phase_ms has no %q: %v", ph, r.LayerPhaseMs)
		}
		sum += v
	}
	if whole := r.LayerComputeMs + r.LayerExpertIOMs; r.LayerPhaseMs[model.PhaseMixer.String()] <= 0 || math.Abs(sum-whole) > 1e-3+1e-6*whole {
		t.Errorf("layer phases sum to %.6f ms, the layer is %.6f ms: %v", sum, whole, r.LayerPhaseMs)
	}
	d, x := BytesPerToken(e.Dir.Manifest, e.Set, 4)
	if x != 4*4*e.Set.FileSize || d <= 0 || r.BytesPerToken != d+x {
		t.Errorf("bytes per token: dense %d experts %d report %d", d, x, r.BytesPerToken)
	}
}

// TestPairedRoofline: the median of each run's rate over the sample after it,
// whatever the order; runs without a sample are left out.
func TestPairedRoofline(t *testing.T) {
	for _, c := range []struct {
		rates, samples []float64
		want           float64
	}{
		{[]float64{10, 20, 30}, []float64{100, 100, 100}, 0.2},
		{[]float64{30, 10, 20}, []float64{50, 100, 100}, 0.2}, // 0.6, 0.1, 0.2
		{[]float64{10, 20}, []float64{100, 100}, 0.15},
		{[]float64{10, 20, 30}, []float64{100}, 0.1},
		{nil, nil, 0},
	} {
		if got := pairedRoofline(1, c.rates, c.samples); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("rates %v samples %v: %v, want %v", c.rates, c.samples, got, c.want)
		}
	}
}

func TestProjection(t *testing.T) {
	s, _ := Lookup("qwen3-30b-a3b")
	_, dense, set, err := checkpoint.PlanLayout(&s.Config, 4, 64)
	if err != nil {
		t.Fatal(err)
	}
	const file = 2654208 // 3 × (786432 codes + 2 × 49152 scales/biases)
	if set.FileSize != file {
		t.Fatalf("expert file %d, want %d", set.FileSize, file)
	}
	experts := int64(48 * 128 * file)
	base := ProjectionInput{Config: &s.Config, Bits: 4, GroupSize: 64, K: 8,
		Full: LayerCost{Compute: 1500 * time.Microsecond, ExpertIO: 500 * time.Microsecond},
		Head: 4 * time.Millisecond, Reserve: 1 << 30, DiskBytesPerSecond: 1e9}
	for _, tc := range []struct {
		name   string
		ram    int64
		k      int
		cached float64
		miss   float64 // bytes per token
		tokS   float64
	}{
		// 48 layers × 2 ms + 4 ms = 100 ms.
		{"all in RAM", 1 << 40, 8, 1, 0, 10},
		// Half the experts fit: 48 × 8 × 2654208 / 2 = 509607936 B at 1 GB/s.
		{"half cached", dense + 1<<30 + experts/2, 8, 0.5, 509607936, 1 / (0.1 + 0.509607936)},
		// Nothing fits beside the dense weights: every expert is read.
		{"no room", dense, 8, 0, 1019215872, 1 / (0.1 + 1.019215872)},
		// K = 4 halves the misses (the measured layer cost is taken as given).
		{"K=4 no room", 1 << 30, 4, 0, 509607936, 1 / (0.1 + 0.509607936)},
	} {
		in := base
		in.RAMBytes, in.K = tc.ram, tc.k
		p, err := Project(in)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if math.Abs(p.CachedFraction-tc.cached) > 1e-9 || math.Abs(p.MissBytes-tc.miss) > 1 ||
			math.Abs(p.TokensPerSecond-tc.tokS) > 1e-6*tc.tokS {
			t.Errorf("%s: cached %g miss %g tok/s %g; want %g %g %g", tc.name, p.CachedFraction, p.MissBytes, p.TokensPerSecond, tc.cached, tc.miss, tc.tokS)
		}
		if p.ExpertBytes != experts || p.DenseBytes != dense {
			t.Errorf("%s: expert bytes %d dense %d", tc.name, p.ExpertBytes, p.DenseBytes)
		}
	}

	// A hybrid model measured without a full-attention layer: the GatedDeltaNet
	// cost stands in, and the projection says so. Qwen3.5-35B: 40 layers.
	h, _ := Lookup("qwen3.5-35b-a3b")
	p, err := Project(ProjectionInput{Config: &h.Config, Bits: 4, K: 8, Linear: LayerCost{Compute: time.Millisecond},
		RAMBytes: 1 << 40, Reserve: 1 << 30})
	if err != nil || p.Note == "" || math.Abs(p.TokensPerSecond-25) > 1e-9 {
		t.Errorf("hybrid without full layers: %g tok/s, note %q, err %v; want 25 and a note", p.TokensPerSecond, p.Note, err)
	}
	// Full 2 ms, linear 1 ms: 10 full + 30 linear = 50 ms.
	p, _ = Project(ProjectionInput{Config: &h.Config, Bits: 4, K: 8, Full: LayerCost{Compute: 2 * time.Millisecond},
		Linear: LayerCost{Compute: time.Millisecond}, RAMBytes: 1 << 40, Reserve: 1 << 30})
	if math.Abs(p.TokensPerSecond-20) > 1e-9 || p.Note != "" {
		t.Errorf("hybrid: %g tok/s (note %q), want 20", p.TokensPerSecond, p.Note)
	}

	for _, bad := range []ProjectionInput{
		{Config: &s.Config, Bits: 4, K: 9999, Full: base.Full, RAMBytes: 1 << 40},
		{Config: &s.Config, Bits: 4, K: 8, RAMBytes: 1 << 40},
		{Config: &s.Config, Bits: 4, K: 8, Full: base.Full, RAMBytes: 1 << 30}, // misses, no disk bandwidth
		{Config: &s.Config, Bits: 5, K: 8, Full: base.Full, RAMBytes: 1 << 40},
	} {
		if _, err := Project(bad); err == nil {
			t.Errorf("Project(%+v) succeeded", bad)
		}
	}
}

// --dir pointing at a converted model must not be overwritten.
func TestSyntheticRefusesPreparedModel(t *testing.T) {
	ctx := context.Background()
	s := tinyShapes()[0]
	dir := t.TempDir()
	res, err := WriteSynthetic(ctx, dir, SynthOptions{Shape: s, Layers: 2, Bits: 4})
	if err != nil {
		t.Fatal(err)
	}
	m := res.Manifest
	m.Source.Format = "hf"
	if err := layout.WriteManifest(dir, m, layout.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteSynthetic(ctx, dir, SynthOptions{Shape: s, Layers: 3, Bits: 4}); err == nil || !strings.Contains(err.Error(), "choose another --dir") {
		t.Fatalf("rewrote a prepared model: %v", err)
	}
	if problems, err := layout.Verify(ctx, dir, 2, nil); err != nil || len(problems) > 0 {
		t.Fatalf("prepared model damaged: %v %v", err, problems)
	}
}

// TestProjectionDeviceTier checks the GPU tiers: experts on the device are
// neither read nor uploaded, those in RAM are uploaded, the rest read from
// disk and uploaded.
func TestProjectionDeviceTier(t *testing.T) {
	s, _ := Lookup("qwen3-30b-a3b")
	_, dense, _, err := checkpoint.PlanLayout(&s.Config, 4, 64)
	if err != nil {
		t.Fatal(err)
	}
	const file = 2654208
	experts := int64(48 * 128 * file)
	perTok := float64(48 * 8 * file) // 1019215872
	base := ProjectionInput{Config: &s.Config, Bits: 4, GroupSize: 64, K: 8,
		Full: LayerCost{Compute: 2 * time.Millisecond}, Head: 4 * time.Millisecond, // 100 ms
		Reserve: 1 << 30, DiskBytesPerSecond: 1e9, UploadBytesPerSecond: 50e9}
	for _, tc := range []struct {
		name               string
		device, ram        int64
		onDevice, cached   float64
		upload, miss, tokS float64
	}{
		{"all on the device", experts, 1 << 40, 1, 0, 0, 0, 10},
		// 40 % on the device, the rest in RAM: 60 % uploaded at 50 GB/s.
		{"device 40 %, RAM the rest", experts * 2 / 5, 1 << 40, 0.4, 0.6, 0.6 * perTok, 0, 1 / (0.1 + 0.6*perTok/50e9)},
		// 25 % on the device, 25 % in RAM, half from disk (and uploaded).
		{"device 25 %, RAM 25 %", experts / 4, dense + 1<<30 + experts/4, 0.25, 0.25, 0.75 * perTok, 0.5 * perTok,
			1 / (0.1 + 0.75*perTok/50e9 + 0.5*perTok/1e9)},
	} {
		in := base
		in.DeviceExpertBytes, in.RAMBytes = tc.device, tc.ram
		p, err := Project(in)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		near := func(a, b float64) bool { return math.Abs(a-b) <= 1e-6*max(1, math.Abs(b)) }
		if !near(p.DeviceFraction, tc.onDevice) || !near(p.CachedFraction, tc.cached) || !near(p.UploadBytes, tc.upload) ||
			!near(p.MissBytes, tc.miss) || !near(p.TokensPerSecond, tc.tokS) {
			t.Errorf("%s: device %g cached %g upload %g miss %g tok/s %g; want %g %g %g %g %g", tc.name,
				p.DeviceFraction, p.CachedFraction, p.UploadBytes, p.MissBytes, p.TokensPerSecond,
				tc.onDevice, tc.cached, tc.upload, tc.miss, tc.tokS)
		}
	}
	// A budget measured beside a truncated run's dense weights (100 MiB of
	// them) loses the whole model's extra dense weights: 40 % remains.
	in := base
	in.DeviceExpertBytes, in.DeviceRunDenseBytes, in.RAMBytes = experts*2/5+dense-(100<<20), 100<<20, 1<<40
	if p, err := Project(in); err != nil || math.Abs(p.DeviceFraction-0.4) > 1e-9 {
		t.Errorf("budget beside the run's dense weights: device fraction %g (err %v), want 0.4", p.DeviceFraction, err)
	}
	in = base
	in.DeviceExpertBytes, in.RAMBytes, in.UploadBytesPerSecond = experts/2, 1<<40, 0
	if _, err := Project(in); err == nil {
		t.Error("uploads without a measured upload bandwidth: want an error")
	}
}

// TestWeightMACsPerPromptToken checks the prefill's work against the
// Qwen3-MoE formula written out from the config: per layer q, k, v, o and
// the router, K experts' gate, up and down; no embedding, no LM head.
func TestWeightMACsPerPromptToken(t *testing.T) {
	ctx := context.Background()
	s := tinyShapes()[0]
	dir := t.TempDir()
	if _, err := WriteSynthetic(ctx, dir, SynthOptions{Shape: s, Layers: 2, Bits: 4}); err != nil {
		t.Fatal(err)
	}
	d, err := layout.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c := &d.Manifest.Config
	H, q, kv := int64(c.HiddenSize), int64(c.NumAttentionHeads*c.HeadDim), int64(c.NumKeyValueHeads*c.HeadDim)
	for _, k := range []int{1, c.NumExpertsPerTok} {
		perLayer := H*q + 2*H*kv + q*H + int64(c.NumExperts)*H + int64(k)*3*H*int64(c.MoEIntermediateSize)
		if got, want := WeightMACsPerPromptToken(d.Manifest, &d.Manifest.Experts[0], k), int64(c.NumLayers)*perLayer; got != want {
			t.Errorf("K=%d: %d multiply-adds per prompt token, want %d", k, got, want)
		}
	}
}
