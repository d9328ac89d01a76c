package checkpoint

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/fm-moe/fm/pkg/layout"
	"github.com/fm-moe/fm/pkg/quant"
)

// denseItem is one planned tensor of model_weights.bin.
type denseItem struct {
	out      layout.Tensor
	srcBytes int64
	encode   func(ctx context.Context, emit func(part int, b []byte) error) error
}

// Kinds of dense tensors.
const (
	kindMatrix = iota // projection or embedding: quantized with --bits 4/8
	kindExact         // router and shared-expert gate: never quantized by us
	kindNorm          // RMSNorm weight → F32 multiplier
	kindConv          // conv1d → [C, K]
	kindVector        // A_log, dt_bias: bytes unchanged
)

type denseShape struct {
	name       string
	kind       int
	rows, cols int64 // vectors and norms: rows = length, cols = 0
	shift      bool  // norm: zero-centred (stored 1+w in the layout)
}

func denseShapes(c *layout.Config) []denseShape {
	H, V := int64(c.HiddenSize), int64(c.VocabSize)
	zc := c.Arch != layout.ArchQwen3MoE
	head := []denseShape{{name: "embed_tokens", kind: kindMatrix, rows: V, cols: H}}
	tail := []denseShape{{name: "norm", kind: kindNorm, rows: H, shift: zc}}
	if !c.TieWordEmbeddings {
		tail = append(tail, denseShape{name: "lm_head", kind: kindMatrix, rows: V, cols: H})
	}
	var out []denseShape
	out = append(out, head...)
	for i := range c.NumLayers {
		p := "layers." + strconv.Itoa(i) + "."
		l := []denseShape{
			{name: p + "input_layernorm", kind: kindNorm, rows: H, shift: zc},
			{name: p + "post_attention_layernorm", kind: kindNorm, rows: H, shift: zc},
		}
		if c.LayerTypes[i] == layout.FullAttention {
			nH, nKV, D := int64(c.NumAttentionHeads), int64(c.NumKeyValueHeads), int64(c.HeadDim)
			qRows := nH * D
			if c.AttnOutputGate {
				qRows *= 2
			}
			l = append(l,
				denseShape{name: p + "self_attn.q_proj", kind: kindMatrix, rows: qRows, cols: H},
				denseShape{name: p + "self_attn.k_proj", kind: kindMatrix, rows: nKV * D, cols: H},
				denseShape{name: p + "self_attn.v_proj", kind: kindMatrix, rows: nKV * D, cols: H},
				denseShape{name: p + "self_attn.o_proj", kind: kindMatrix, rows: H, cols: nH * D},
				denseShape{name: p + "self_attn.q_norm", kind: kindNorm, rows: D, shift: zc},
				denseShape{name: p + "self_attn.k_norm", kind: kindNorm, rows: D, shift: zc},
			)
		} else {
			Kd := int64(c.LinearNumKeyHeads * c.LinearKeyHeadDim)
			Vd := int64(c.LinearNumValueHeads * c.LinearValueHeadDim)
			nv := int64(c.LinearNumValueHeads)
			l = append(l,
				denseShape{name: p + "linear_attn.in_proj_qkv", kind: kindMatrix, rows: 2*Kd + Vd, cols: H},
				denseShape{name: p + "linear_attn.in_proj_z", kind: kindMatrix, rows: Vd, cols: H},
				denseShape{name: p + "linear_attn.in_proj_b", kind: kindMatrix, rows: nv, cols: H},
				denseShape{name: p + "linear_attn.in_proj_a", kind: kindMatrix, rows: nv, cols: H},
				denseShape{name: p + "linear_attn.conv1d", kind: kindConv, rows: 2*Kd + Vd, cols: int64(c.LinearConvKernelDim)},
				denseShape{name: p + "linear_attn.A_log", kind: kindVector, rows: nv},
				denseShape{name: p + "linear_attn.dt_bias", kind: kindVector, rows: nv},
				denseShape{name: p + "linear_attn.norm", kind: kindNorm, rows: int64(c.LinearValueHeadDim)},
				denseShape{name: p + "linear_attn.out_proj", kind: kindMatrix, rows: H, cols: Vd},
			)
		}
		if c.SparseLayers[i] {
			l = append(l, denseShape{name: p + "mlp.gate", kind: kindExact, rows: int64(c.NumExperts), cols: H})
			if is := int64(c.SharedExpertIntermediateSize); is > 0 {
				l = append(l,
					denseShape{name: p + "mlp.shared_expert.gate_proj", kind: kindMatrix, rows: is, cols: H},
					denseShape{name: p + "mlp.shared_expert.up_proj", kind: kindMatrix, rows: is, cols: H},
					denseShape{name: p + "mlp.shared_expert.down_proj", kind: kindMatrix, rows: H, cols: is},
					denseShape{name: p + "mlp.shared_expert_gate", kind: kindExact, rows: 1, cols: H},
				)
			}
		} else {
			im := int64(c.IntermediateSize)
			l = append(l,
				denseShape{name: p + "mlp.gate_proj", kind: kindMatrix, rows: im, cols: H},
				denseShape{name: p + "mlp.up_proj", kind: kindMatrix, rows: im, cols: H},
				denseShape{name: p + "mlp.down_proj", kind: kindMatrix, rows: H, cols: im},
			)
		}
		sort.Slice(l, func(a, b int) bool { return l[a].name < l[b].name })
		out = append(out, l...)
	}
	return append(out, tail...)
}

// nextSplit returns, for a Qwen3-Next layer, the row runs that take the
// interleaved in_proj_qkvz [nk·(2dk+2r·dv), H] to in_proj_qkv and in_proj_z, and
// in_proj_ba [nk·2r, H] to in_proj_b and in_proj_a (reference-math.md §3.3).
func nextSplit(c *layout.Config) (qkv, z, b, a []rowRun) {
	nk, dk, dv := int64(c.LinearNumKeyHeads), int64(c.LinearKeyHeadDim), int64(c.LinearValueHeadDim)
	r := int64(c.LinearNumValueHeads) / nk
	G := 2*dk + 2*r*dv
	var qs, ks, vs []rowRun
	for i := range nk {
		qs = append(qs, rowRun{i * G, dk})
		ks = append(ks, rowRun{i*G + dk, dk})
		vs = append(vs, rowRun{i*G + 2*dk, r * dv})
		z = append(z, rowRun{i*G + 2*dk + r*dv, r * dv})
		b = append(b, rowRun{i * 2 * r, r})
		a = append(a, rowRun{i*2*r + r, r})
	}
	qkv = append(append(qs, ks...), vs...)
	return qkv, z, b, a
}

// planDense checks every dense tensor the config implies against the source and
// returns the write plan. t is the target of quantizable matrices (Bits 16:
// keep); routers and norms are never quantized by the converter.
func (c *Checkpoint) planDense(t matrixTarget) ([]denseItem, error) {
	cfg := &c.Config
	used := map[string]bool{}
	var items []denseItem
	var qkvRuns, zRuns, bRuns, aRuns []rowRun
	if cfg.Arch == layout.ArchQwen3Next {
		qkvRuns, zRuns, bRuns, aRuns = nextSplit(cfg)
	}
	for _, s := range denseShapes(cfg) {
		srcName, runs := s.name, []rowRun(nil)
		var srcRows int64
		if cfg.Arch == layout.ArchQwen3Next && c.modules[s.name] == nil {
			base, leaf, _ := strings.Cut(s.name, "linear_attn.")
			Kd := int64(cfg.LinearNumKeyHeads * cfg.LinearKeyHeadDim)
			Vd := int64(cfg.LinearNumValueHeads * cfg.LinearValueHeadDim)
			nv := int64(cfg.LinearNumValueHeads)
			switch leaf {
			case "in_proj_qkv":
				srcName, runs, srcRows = base+"linear_attn.in_proj_qkvz", qkvRuns, 2*Kd+2*Vd
			case "in_proj_z":
				srcName, runs, srcRows = base+"linear_attn.in_proj_qkvz", zRuns, 2*Kd+2*Vd
			case "in_proj_b":
				srcName, runs, srcRows = base+"linear_attn.in_proj_ba", bRuns, 2*nv
			case "in_proj_a":
				srcName, runs, srcRows = base+"linear_attn.in_proj_ba", aRuns, 2*nv
			}
		}
		m := c.modules[srcName]
		if m == nil {
			return nil, fmt.Errorf("%s: tensor %q missing (the %s config implies it)", c.where(), c.sourceName(srcName, ".weight"), cfg.SourceModelType)
		}
		used[srcName] = true
		var it denseItem
		var err error
		switch s.kind {
		case kindMatrix, kindExact:
			rows := s.rows
			if runs != nil {
				rows = srcRows
			}
			var ms matrixSource
			ms, err = c.moduleMatrix(s.name, m, nil, rows, s.cols)
			if err != nil {
				break
			}
			if runs != nil {
				ms = ms.permute(s.name, runs)
			}
			mt := t
			if s.kind == kindExact || ms.q != nil || mt.Bits != 16 && int(s.cols)%mt.GroupSize != 0 {
				mt = matrixTarget{Bits: 16}
			}
			it = denseItem{out: ms.layoutTensor(s.name, mt), srcBytes: ms.sourceBytes(),
				encode: func(ctx context.Context, emit func(int, []byte) error) error { return ms.encode(ctx, mt, emit) }}
		case kindNorm:
			it, err = c.normItem(s, m)
		case kindConv:
			it, err = c.rawItem(s, m, [][]int64{{s.rows, 1, s.cols}, {s.rows, s.cols, 1}, {s.rows, s.cols}}, []int64{s.rows, s.cols})
		case kindVector:
			it, err = c.rawItem(s, m, [][]int64{{s.rows}}, []int64{s.rows})
		}
		if err != nil {
			return nil, err
		}
		items = append(items, it)
	}
	if m := c.modules["lm_head"]; m != nil && cfg.TieWordEmbeddings {
		used["lm_head"] = true
		c.Skipped[SkipTied]++
	}
	var extra []string
	for name, m := range c.modules {
		if !used[name] {
			extra = append(extra, m.srcName)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		t := c.st.Tensor(extra[0])
		return nil, fmt.Errorf("%s: tensor %q is not part of a %s model with this config (%d unexpected tensors)", c.File(t), extra[0], cfg.SourceModelType, len(extra))
	}
	return items, nil
}

// normItem converts an RMSNorm weight to the layout's F32 multiplier: 1+w
// computed in float32 for the zero-centred norms of an HF source (MLX files
// already hold 1+w), w otherwise.
func (c *Checkpoint) normItem(s denseShape, m *module) (denseItem, error) {
	t := m.weight
	file := c.File(t)
	if m.scales != nil {
		return denseItem{}, fmt.Errorf("%s: tensor %q: a norm weight cannot be quantized", file, t.Name)
	}
	if err := checkFloat(file, t); err != nil {
		return denseItem{}, err
	}
	if !shapeIs(t.Shape, s.rows) {
		return denseItem{}, fmt.Errorf("%s: tensor %q: shape %v, want [%d] (from config.json)", file, t.Name, t.Shape, s.rows)
	}
	addOne := s.shift && c.Format == FormatHF
	out := layout.Tensor{Name: s.name, Shape: []int64{s.rows}, Data: layout.Part{DType: "F32", Shape: []int64{s.rows}, Size: 4 * s.rows}}
	src := newRowSource(t, file, 1, nil)
	dtype := string(t.DType)
	return denseItem{out: out, srcBytes: t.Size, encode: func(ctx context.Context, emit func(int, []byte) error) error {
		raw := make([]byte, t.Size)
		if err := src.read(raw, 0); err != nil {
			return err
		}
		v := make([]float32, s.rows)
		if err := quant.DecodeFloats(v, raw, dtype); err != nil {
			return err
		}
		b := make([]byte, 4*len(v))
		for i, w := range v {
			if addOne {
				w = 1 + w // float32 arithmetic, as transformers computes (1 + weight.float())
			}
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(w))
		}
		return emit(0, b)
	}}, nil
}

// rawItem copies a float tensor's bytes unchanged under a new shape.
func (c *Checkpoint) rawItem(s denseShape, m *module, accept [][]int64, shape []int64) (denseItem, error) {
	t := m.weight
	file := c.File(t)
	if m.scales != nil {
		return denseItem{}, fmt.Errorf("%s: tensor %q: must not be quantized", file, t.Name)
	}
	if err := checkFloat(file, t); err != nil {
		return denseItem{}, err
	}
	ok := false
	for _, a := range accept {
		ok = ok || shapeIs(t.Shape, a...)
	}
	if !ok {
		return denseItem{}, fmt.Errorf("%s: tensor %q: shape %v, want %v (from config.json)", file, t.Name, t.Shape, accept[0])
	}
	out := layout.Tensor{Name: s.name, Shape: shape, Data: layout.Part{DType: string(t.DType), Shape: shape, Size: t.Size}}
	src := newRowSource(t, file, 1, nil)
	return denseItem{out: out, srcBytes: t.Size, encode: func(ctx context.Context, emit func(int, []byte) error) error {
		return copyRows(ctx, src, func(b []byte) error { return emit(0, b) })
	}}, nil
}
