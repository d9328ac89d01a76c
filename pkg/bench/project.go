package bench

import (
	"fmt"
	"time"

	"github.com/fm-moe/fm/pkg/checkpoint"
	"github.com/fm-moe/fm/pkg/layout"
)

// LayerCost is the measured decode time of one layer kind, per token.
type LayerCost struct {
	// Compute is everything but the wait for expert files: the mixer, routing,
	// expert and shared-expert FFNs, norms.
	Compute time.Duration
	// ExpertIO is the wait for expert files that compute did not hide (a copy
	// from the page cache, or nothing for RAM-cache hits, in a warm run).
	ExpertIO time.Duration
}

// Total is the layer's time.
func (c LayerCost) Total() time.Duration { return c.Compute + c.ExpertIO }

// ProjectionInput is what the projection needs: the full model's shape, the
// measured per-layer costs of the truncated run, and this machine's ceilings.
type ProjectionInput struct {
	// Config is the whole model's config (all layers).
	Config *layout.Config
	// Bits and GroupSize of the run (they set the full model's file sizes).
	Bits, GroupSize int
	// K is the experts each token uses per sparse layer.
	K int
	// Full and Linear are the measured per-token costs of one full-attention
	// and one GatedDeltaNet layer (zero when the run had no layer of a kind:
	// the other kind's cost stands in, and Projection.Note says so).
	Full, Linear LayerCost
	// Head is the measured per-token time outside the layers: embedding,
	// final norm, output projection.
	Head time.Duration
	// RAMBytes is the memory the model may use: dense weights, then as many
	// experts as fit after Reserve.
	RAMBytes int64
	// Reserve is RAM kept for everything else (KV cache, buffers, the OS).
	Reserve int64
	// DiskBytesPerSecond is the parallel read bandwidth of the disk.
	DiskBytesPerSecond float64
	// DeviceExpertBytes is the memory of a device with its own memory (a
	// GPU's VRAM cache budget) that keeps experts: they are neither read nor
	// uploaded. 0: no such tier (the CPU). The measured layer costs must then
	// be those of experts resident on the device.
	DeviceExpertBytes int64
	// DeviceRunDenseBytes, when > 0, says DeviceExpertBytes is what the
	// device had free beside the run's dense weights (this many bytes): the
	// whole model's extra dense weights, which live on the device too, come
	// off it.
	DeviceRunDenseBytes int64
	// UploadBytesPerSecond is the host-to-device bandwidth from pinned
	// memory, at which the experts the device misses arrive (with
	// DeviceExpertBytes).
	UploadBytesPerSecond float64
}

// Projection is the projected decode speed of the full model.
type Projection struct {
	DenseBytes       int64   // model_weights.bin of the full model
	ExpertBytes      int64   // all routed expert files
	ExpertFileSize   int64   // one expert file
	CachedFraction   float64 // of the expert bytes that fit in RAM (the hit rate of uniform routing)
	MissBytes        float64 // expert bytes read from disk per token
	ComputeTime      time.Duration
	IOTime           time.Duration
	TokensPerSecond  float64
	ComputeBoundTokS float64 // if every expert were in RAM (on a device: in its memory)
	DiskBoundTokS    float64 // if compute were free (0 when nothing misses)
	// With a device tier: the share of the experts in its memory, the expert
	// bytes uploaded to it per token (the misses, from RAM or disk), their
	// time at UploadBytesPerSecond, and the rate if only uploads took time.
	DeviceFraction  float64
	UploadBytes     float64
	UploadTime      time.Duration
	UploadBoundTokS float64
	Note            string
}

// Project computes the full model's decode speed from the costs measured on
// its first layers (docs/PERF.md, "projection model"):
//
//	compute = n_full·Full + n_linear·Linear + Head     (dense time scales with layers)
//	cached  = clamp((RAM − dense − reserve) / expert_bytes, 0, 1)
//	misses  = sparse_layers · K · expert_file · (1 − cached)   bytes per token
//	tok/s   = 1 / (compute + misses / disk_bandwidth)
//
// With a device tier (a GPU keeping DeviceExpertBytes of experts), the
// device holds its share, host RAM the next, the disk the rest; every expert
// the device lacks is uploaded:
//
//	on_device = clamp(DeviceExpertBytes / expert_bytes, 0, 1)
//	cached    = clamp((RAM − dense − reserve) / expert_bytes, 0, 1 − on_device)
//	uploads   = sparse_layers · K · expert_file · (1 − on_device)
//	tok/s     = 1 / (compute + uploads / upload_bandwidth + misses / disk_bandwidth)
//
// The cached fraction is the hit rate of a cache holding that share of the
// experts when routing is uniform; trained routers are skewed (PERF.md's
// routing study: LRU 62.7 % at 25 % of the experts), so it is a lower bound
// on the hit rate and the projection a lower bound on the speed. The model
// does not overlap reads with compute across layers (fm cannot: routing
// depends on the previous layer), which is why the two times add.
func Project(in ProjectionInput) (Projection, error) {
	c := in.Config
	_, denseSize, set, err := checkpoint.PlanLayout(c, in.Bits, in.GroupSize)
	if err != nil {
		return Projection{}, err
	}
	if in.K <= 0 || in.K > c.NumExperts {
		return Projection{}, fmt.Errorf("experts per token %d: want 1 to %d", in.K, c.NumExperts)
	}
	var p Projection
	p.DenseBytes, p.ExpertFileSize = denseSize, set.FileSize
	full, lin := in.Full, in.Linear
	switch {
	case full.Total() == 0 && lin.Total() == 0:
		return p, fmt.Errorf("projection: no measured layer time")
	case full.Total() == 0:
		full = lin
		p.Note = "the run had no full-attention layer: its cost is assumed equal to a GatedDeltaNet layer's (run more --layers)"
	case lin.Total() == 0 && hasLinear(c):
		lin = full
		p.Note = "the run had no GatedDeltaNet layer: its cost is assumed equal to a full-attention layer's (run more --layers)"
	}
	sparse := 0
	p.ComputeTime = in.Head
	for i, t := range c.LayerTypes {
		if t == layout.FullAttention {
			p.ComputeTime += full.Total()
		} else {
			p.ComputeTime += lin.Total()
		}
		if c.SparseLayers[i] {
			sparse++
		}
	}
	p.ExpertBytes = int64(sparse) * int64(c.NumExperts) * set.FileSize
	avail := in.RAMBytes - denseSize - in.Reserve
	deviceExperts := in.DeviceExpertBytes
	if deviceExperts > 0 && in.DeviceRunDenseBytes > 0 {
		deviceExperts = max(1, deviceExperts-max(0, denseSize-in.DeviceRunDenseBytes))
	}
	if p.ExpertBytes > 0 && deviceExperts > 0 {
		p.DeviceFraction = min(1, float64(deviceExperts)/float64(p.ExpertBytes))
	}
	switch {
	case p.ExpertBytes == 0:
		p.CachedFraction = 1
	case avail > 0:
		p.CachedFraction = min(1-p.DeviceFraction, float64(avail)/float64(p.ExpertBytes))
	}
	perToken := float64(sparse*in.K) * float64(set.FileSize)
	p.MissBytes = perToken * (1 - p.DeviceFraction - p.CachedFraction)
	if p.MissBytes < perToken*1e-9 {
		p.MissBytes = 0 // rounding of the fractions
	}
	if in.DeviceExpertBytes > 0 {
		p.UploadBytes = perToken * (1 - p.DeviceFraction)
		if p.UploadBytes > 0 {
			if in.UploadBytesPerSecond <= 0 {
				return p, fmt.Errorf("projection: %.0f bytes per token miss the device's memory but the upload bandwidth is unknown", p.UploadBytes)
			}
			p.UploadTime = time.Duration(p.UploadBytes / in.UploadBytesPerSecond * 1e9)
			p.UploadBoundTokS = in.UploadBytesPerSecond / p.UploadBytes
		}
	}
	if p.MissBytes > 0 {
		if in.DiskBytesPerSecond <= 0 {
			return p, fmt.Errorf("projection: %.0f bytes per token miss the RAM budget but the disk bandwidth is unknown", p.MissBytes)
		}
		p.IOTime = time.Duration(p.MissBytes / in.DiskBytesPerSecond * 1e9)
		p.DiskBoundTokS = in.DiskBytesPerSecond / p.MissBytes
	}
	p.ComputeBoundTokS = 1 / p.ComputeTime.Seconds()
	p.TokensPerSecond = 1 / (p.ComputeTime + p.UploadTime + p.IOTime).Seconds()
	return p, nil
}

func hasLinear(c *layout.Config) bool {
	for _, t := range c.LayerTypes {
		if t == layout.LinearAttention {
			return true
		}
	}
	return false
}

// BytesPerToken is the weight bytes one decode token reads from a prepared
// directory's manifest: every dense tensor except the embedding, of which one
// row, plus K expert files per sparse layer.
func BytesPerToken(m *layout.Manifest, set *layout.ExpertSet, k int) (dense, experts int64) {
	for i := range m.Tensors {
		t := &m.Tensors[i]
		var n int64
		for _, p := range t.Parts() {
			n += p.Size
		}
		if t.Name == "embed_tokens" && len(t.Shape) > 0 && t.Shape[0] > 0 {
			n /= t.Shape[0]
		}
		dense += n
	}
	if set != nil {
		for _, s := range m.Config.SparseLayers {
			if s {
				experts += int64(k) * set.FileSize
			}
		}
	}
	return dense, experts
}

// WeightMACsPerPromptToken is the multiply-adds with weights that one prompt
// token of a prefill needs: every dense matrix but the embedding (a lookup)
// and the LM head (a prefill runs it for its last token only), plus K
// experts' matrices per sparse layer. Attention's scores grow with the
// position and are not weights, so they are left out; the figure is what a
// prefill's matrix kernels must do, whatever the context.
func WeightMACsPerPromptToken(m *layout.Manifest, set *layout.ExpertSet, k int) int64 {
	matMACs := func(t *layout.Tensor) int64 {
		if len(t.Shape) < 2 {
			return 0 // norms and biases: no multiply-adds with a vector
		}
		n := int64(1)
		for _, d := range t.Shape {
			n *= d
		}
		return n
	}
	var macs int64
	for i := range m.Tensors {
		t := &m.Tensors[i]
		if t.Name == "embed_tokens" || t.Name == "lm_head" {
			continue
		}
		macs += matMACs(t)
	}
	if set != nil {
		var perExpert int64
		for i := range set.Components {
			perExpert += matMACs(&set.Components[i])
		}
		for _, s := range m.Config.SparseLayers {
			if s {
				macs += int64(k) * perExpert
			}
		}
	}
	return macs
}
