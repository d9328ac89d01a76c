package checkpoint

import (
	"context"
	"fmt"
	"reflect"
	"sync"

	"github.com/fm-moe/fm/pkg/experts"
	"github.com/fm-moe/fm/pkg/layout"
)

// expertPlan is the checked plan of every routed-expert file.
type expertPlan struct {
	set    layout.ExpertSet // components placed, checksums empty
	target matrixTarget
	layers []int // sparse layers, ascending
	// sources returns the gate, up and down matrices of one expert.
	sources           func(layer, expert int) [3]matrixSource
	srcBytesPerExpert int64
	// direct, when set, reads each expert's sources around the page cache,
	// all at once (gather), into buffers from gathered (*[]byte).
	direct   *directReads
	gathered sync.Pool
}

// planExperts checks the routed-expert tensors of every sparse layer against the
// config and against each other, and lays out the expert file. t.Bits 16 keeps
// the source's format (float, or MLX-quantized as it is).
func (c *Checkpoint) planExperts(t matrixTarget) (*expertPlan, error) {
	cfg := &c.Config
	E, I, H := int64(cfg.NumExperts), int64(cfg.MoEIntermediateSize), int64(cfg.HiddenSize)
	dims := [3][2]int64{{I, H}, {I, H}, {H, I}}
	perLayer := map[int]func(e int) [3]matrixSource{}
	plan := &expertPlan{target: t}
	for _, l := range c.sortedLayers() {
		if l >= cfg.NumLayers || !cfg.SparseLayers[l] {
			return nil, fmt.Errorf("%s: layer %d has routed-expert tensors but is not a sparse layer of this config", c.Dir, l)
		}
	}
	for l := range cfg.NumLayers {
		if !cfg.SparseLayers[l] {
			continue
		}
		plan.layers = append(plan.layers, l)
		le := c.experts[l]
		if le == nil {
			return nil, fmt.Errorf("%s: tensor %q missing (no routed-expert tensors for layer %d)", c.where(), c.sourceName(fmt.Sprintf("layers.%d.mlp.experts.0.gate_proj", l), ".weight"), l)
		}
		name := func(e int, p int) string { return fmt.Sprintf("layers.%d.experts.%d.%s", l, e, expertProjs[p]) }
		switch le.scheme {
		case schemePerExpert:
			srcs := make([][3]matrixSource, E)
			for e := range int(E) {
				ts := le.perExpert[e]
				for p := range 3 {
					if ts == nil || ts[p] == nil {
						return nil, fmt.Errorf("%s: tensor %q missing (config has %d experts)", c.where(), c.sourceName(fmt.Sprintf("layers.%d.mlp.experts.%d.%s", l, e, expertProjs[p]), ".weight"), E)
					}
					ms, err := c.floatMatrix(name(e, p), ts[p], nil, dims[p][0], dims[p][1])
					if err != nil {
						return nil, fmt.Errorf("%w, inconsistent with the other experts", err)
					}
					srcs[e][p] = ms
				}
			}
			for e, ts := range le.perExpert {
				if int64(e) >= E {
					return nil, fmt.Errorf("%s: tensor %q: expert %d, config has %d experts", c.File(ts[0]), ts[0].Name, e, E)
				}
			}
			perLayer[l] = func(e int) [3]matrixSource { return srcs[e] }
		case schemeFused:
			gu, down := le.fused[0], le.fused[2]
			if gu == nil || down == nil {
				return nil, fmt.Errorf("%s: tensor %q missing (fused experts need gate_up_proj and down_proj)", c.where(), c.sourceName(fmt.Sprintf("layers.%d.mlp.experts.gate_up_proj", l), ""))
			}
			guM, err := c.floatMatrix(fmt.Sprintf("layers.%d.experts.gate_up_proj", l), gu, []int64{E}, 2*I, H)
			if err != nil {
				return nil, err
			}
			dM, err := c.floatMatrix(fmt.Sprintf("layers.%d.experts.down_proj", l), down, []int64{E}, H, I)
			if err != nil {
				return nil, err
			}
			perLayer[l] = func(e int) [3]matrixSource {
				e64 := int64(e)
				return [3]matrixSource{guM.sub(e64*2*I, I), guM.sub(e64*2*I+I, I), dM.sub(e64*H, H)}
			}
		case schemeStacked:
			var ms [3]matrixSource
			for p := range 3 {
				m := le.stacked[p]
				if m == nil || m.weight == nil {
					return nil, fmt.Errorf("%s: tensor %q missing", c.where(), c.sourceName(fmt.Sprintf("layers.%d.mlp.switch_mlp.%s", l, expertProjs[p]), ".weight"))
				}
				var err error
				ms[p], err = c.moduleMatrix(name(0, p), m, []int64{E}, dims[p][0], dims[p][1])
				if err != nil {
					return nil, err
				}
			}
			perLayer[l] = func(e int) [3]matrixSource {
				e64 := int64(e)
				var out [3]matrixSource
				for p := range 3 {
					out[p] = ms[p].sub(e64*dims[p][0], dims[p][0])
				}
				return out
			}
		}
	}
	if len(plan.layers) == 0 {
		return nil, fmt.Errorf("%s: config has no sparse layers", c.Dir)
	}
	plan.sources = func(l, e int) [3]matrixSource { return perLayer[l](e) }

	// One component table for every expert file: check every layer's (and, for
	// per-expert checkpoints, every expert's) output layout agrees.
	var comps []layout.Tensor
	for _, l := range plan.layers {
		for e := range int(E) {
			if e > 0 && c.experts[l].scheme != schemePerExpert {
				break
			}
			srcs := plan.sources(l, e)
			var cs []layout.Tensor
			for p, ms := range srcs {
				if ms.q == nil && t.Bits != 16 && ms.cols%int64(t.GroupSize) != 0 {
					return nil, fmt.Errorf("%s: %d columns are not a multiple of group size %d", ms.name, ms.cols, t.GroupSize)
				}
				cs = append(cs, ms.layoutTensor(expertProjs[p], t))
			}
			if comps == nil {
				comps = cs
				var n int64
				for _, ms := range srcs {
					n += ms.sourceBytes()
				}
				plan.srcBytesPerExpert = n
			} else if !reflect.DeepEqual(comps, cs) {
				p := 0
				for p < 2 && reflect.DeepEqual(comps[p], cs[p]) {
					p++
				}
				st := srcs[p].w.t
				return nil, fmt.Errorf("%s: tensor %q: experts with inconsistent shapes or dtypes: layer %d expert %d stores %s, layer %d expert 0 stores %s",
					c.File(st), st.Name, l, e, describe(cs), plan.layers[0], describe(comps))
			}
		}
	}
	bits := 16
	gs := 0
	if comps[0].Quant != nil {
		bits, gs = comps[0].Quant.Bits, comps[0].Quant.GroupSize
	}
	size := layout.AlignUp(layout.PlaceParts(comps, 0, layout.ExpertAlignment), layout.ExpertAlignment)
	plan.set = layout.ExpertSet{
		Dir: layout.ExpertsDir, Bits: bits, GroupSize: gs,
		NameFormat: layout.ExpertNameFormat(cfg.NumLayers, cfg.NumExperts),
		FileSize:   size, Components: comps,
		Checksums: make([][]string, cfg.NumLayers),
	}
	return plan, nil
}

func describe(ts []layout.Tensor) string {
	s := ""
	for _, t := range ts {
		q := t.Data.DType
		if t.Quant != nil {
			q = fmt.Sprintf("%d-bit/%s", t.Quant.Bits, t.Quant.Scales.DType)
		}
		s += fmt.Sprintf(" %s%v %s", t.Name, t.Shape, q)
	}
	return "[" + s[1:] + "]"
}

// prefetch asks the OS to start reading one expert's source bytes (see
// safetensors.Tensor.Prefetch): Repack calls it for the expert a worker will
// take a round later, so the disk is kept busy while the workers compute.
func (p *expertPlan) prefetch(layer, expert int) {
	for _, ms := range p.sources(layer, expert) {
		for _, src := range [...]rowSource{ms.w, ms.s, ms.b} {
			if src.t == nil {
				continue
			}
			for _, run := range src.runs {
				src.t.Prefetch(run.first*src.rowBytes, run.n*src.rowBytes)
			}
		}
	}
}

// gather reads every source byte of one expert into *mem (grown as needed)
// through p.direct, all of its pieces (up to blockBytes each) at once, and
// returns the sources reading from there. With buffered reads the kernel's
// read-ahead (prefetch) keeps the disk busy; direct reads have none, and a
// worker reading its pieces one by one between quantizing steps left the
// disk mostly idle (docs/PERF.md, "Converter: the source read around the page
// cache"). A source that is one run of a file read directly lands in an
// aligned slot of *mem with no copy (its aligned span is read, and the view
// starts inside it); others go through readRun.
func (p *expertPlan) gather(ms [3]matrixSource, mem *[]byte) ([3]matrixSource, error) {
	var reads []func() error
	var need int64
	var srcs []*rowSource
	for i := range ms {
		for _, rs := range [...]*rowSource{&ms[i].w, &ms[i].s, &ms[i].b} {
			if rs.t != nil {
				srcs = append(srcs, rs)
				need += directSpan(rs.rows*rs.rowBytes) + directAlign
			}
		}
	}
	if int64(len(*mem)) < need {
		*mem = experts.AlignedBuffer(int(need))
	}
	free := *mem
	for _, rs := range srcs {
		n := rs.rows * rs.rowBytes
		f, err := p.direct.open(rs.file)
		if err != nil {
			return ms, fmt.Errorf("%s: %w", rs.file, err)
		}
		if f != nil && len(rs.runs) == 1 {
			off := rs.t.Offset + rs.runs[0].first*rs.rowBytes
			start := off &^ (directAlign - 1)
			span := directSpan(off + n - start)
			slot := free[:span:span]
			free = free[span:]
			src, end := *rs, rs.t.Offset+rs.t.Size
			reads = append(reads, func() error {
				// The span may run past the end of the file (a tensor
				// at its end); only the tensor's bytes must come.
				if err := readSpan(f, slot, start, end); err != nil {
					return fmt.Errorf("%s: tensor %q: %w", src.file, src.t.Name, err)
				}
				return nil
			})
			rs.mem = slot[off-start : off-start+n]
			continue
		}
		// Refused (tmpfs, some FUSE mounts), or a view of several runs
		// (which no expert source is): through the page cache.
		region := free[:n:n]
		free = free[directSpan(n):]
		src := *rs
		reads = append(reads, func() error { return src.read(region, 0) })
		rs.mem = region
	}
	errs := make([]error, len(reads))
	var wg sync.WaitGroup
	for i, read := range reads {
		wg.Go(func() { errs[i] = read() })
	}
	wg.Wait()
	return ms, firstError(errs) // the first, for a one-line message
}

// directSpan rounds n up to the direct-read alignment.
func directSpan(n int64) int64 { return (n + directAlign - 1) &^ (directAlign - 1) }

// build fills buf (FileSize bytes, zeroed padding) with one expert file.
func (p *expertPlan) build(ctx context.Context, layer, expert int, buf []byte) error {
	srcs := p.sources(layer, expert)
	if p.direct != nil {
		mem := p.gathered.Get().(*[]byte)
		defer p.gathered.Put(mem)
		var err error
		if srcs, err = p.gather(srcs, mem); err != nil {
			return err
		}
	}
	for i, ms := range srcs {
		parts := p.set.Components[i].Parts()
		if ms.q != nil || p.target.Bits == 16 {
			// A copy: pread straight into the file image.
			srcs := []rowSource{ms.w}
			if ms.q != nil {
				srcs = append(srcs, ms.s, ms.b)
			}
			for j, src := range srcs {
				part := parts[j]
				if src.rows*src.rowBytes != part.Size {
					return fmt.Errorf("%s: %d source bytes for a %d-byte part", ms.name, src.rows*src.rowBytes, part.Size)
				}
				if err := src.read(buf[part.Offset:part.Offset+part.Size], 0); err != nil {
					return err
				}
			}
			continue
		}
		pos := make([]int64, len(parts))
		err := ms.encode(ctx, p.target, func(j int, b []byte) error {
			part := parts[j]
			if pos[j]+int64(len(b)) > part.Size {
				return fmt.Errorf("%s: part %d overflows its %d bytes", ms.name, j, part.Size)
			}
			copy(buf[part.Offset+pos[j]:], b)
			pos[j] += int64(len(b))
			return nil
		})
		if err != nil {
			return err
		}
		for j, part := range parts {
			if pos[j] != part.Size {
				return fmt.Errorf("%s: part %d got %d of %d bytes", ms.name, j, pos[j], part.Size)
			}
		}
	}
	return nil
}
