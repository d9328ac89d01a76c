package checkpoint

import (
	"fmt"

	"github.com/fm-moe/fm/pkg/layout"
)

// DenseKind says what a dense tensor is, so that a writer that makes up
// weights (the synthetic benchmark) can give each kind sane values.
type DenseKind int

// Kinds of dense tensors in a planned layout.
const (
	DenseMatrix DenseKind = kindMatrix // projection or embedding (quantized at --bits 2..8)
	DenseExact  DenseKind = kindExact  // router or shared-expert gate, always BF16
	DenseNorm   DenseKind = kindNorm   // RMSNorm multiplier, F32 (1+w already folded in)
	DenseConv   DenseKind = kindConv   // GatedDeltaNet conv1d taps [C, K], BF16
	DenseVector DenseKind = kindVector // A_log, dt_bias, BF16
)

// PlannedTensor is one dense tensor of a planned layout.
type PlannedTensor struct {
	layout.Tensor
	Kind DenseKind
}

// PlanLayout returns the dense tensors (offsets placed, in model_weights.bin
// order) and the routed-expert set (components placed, checksums empty) that
// fm-extract and fm-repack write for a bf16 HuggingFace checkpoint of config c
// at bits (16 keeps bf16) and groupSize, without reading any checkpoint. It is
// the converters' own plan, so a directory written from it is laid out exactly
// as a converted one.
func PlanLayout(c *layout.Config, bits, groupSize int) (dense []PlannedTensor, denseSize int64, set layout.ExpertSet, err error) {
	if groupSize == 0 {
		groupSize = 64
	}
	switch bits {
	case 2, 3, 4, 8, 16:
	default:
		return nil, 0, set, fmt.Errorf("bits %d: want 2, 3, 4, 8 or 16", bits)
	}
	t := matrixTarget{Bits: bits, GroupSize: groupSize}
	// Dense matrices are written at 4 or 8 bits by fm-extract; below 4 the
	// dense part stays at 4 (fm-extract refuses 2 and 3).
	dt := t
	if bits < 4 {
		dt.Bits = 4
	}
	src := func(rows, cols int64) matrixSource {
		return matrixSource{rows: rows, cols: cols, dtype: "BF16"}
	}
	var ts []layout.Tensor
	var kinds []DenseKind
	for _, s := range denseShapes(c) {
		var out layout.Tensor
		switch s.kind {
		case kindMatrix, kindExact:
			mt := dt
			if s.kind == kindExact || mt.Bits != 16 && int(s.cols)%mt.GroupSize != 0 {
				mt = matrixTarget{Bits: 16}
			}
			out = src(s.rows, s.cols).layoutTensor(s.name, mt)
		case kindNorm:
			out = layout.Tensor{Name: s.name, Shape: []int64{s.rows}, Data: layout.Part{DType: "F32", Shape: []int64{s.rows}, Size: 4 * s.rows}}
		case kindConv:
			shape := []int64{s.rows, s.cols}
			out = layout.Tensor{Name: s.name, Shape: shape, Data: layout.Part{DType: "BF16", Shape: shape, Size: 2 * s.rows * s.cols}}
		case kindVector:
			out = layout.Tensor{Name: s.name, Shape: []int64{s.rows}, Data: layout.Part{DType: "BF16", Shape: []int64{s.rows}, Size: 2 * s.rows}}
		}
		ts = append(ts, out)
		kinds = append(kinds, DenseKind(s.kind))
	}
	denseSize = layout.AlignUp(layout.PlaceParts(ts, 0, layout.DenseAlignment), layout.DenseAlignment)
	dense = make([]PlannedTensor, len(ts))
	for i := range ts {
		dense[i] = PlannedTensor{Tensor: ts[i], Kind: kinds[i]}
	}

	E, I, H := int64(c.NumExperts), int64(c.MoEIntermediateSize), int64(c.HiddenSize)
	dims := [3][2]int64{{I, H}, {I, H}, {H, I}}
	var comps []layout.Tensor
	for p, d := range dims {
		if bits != 16 && d[1]%int64(groupSize) != 0 {
			return nil, 0, set, fmt.Errorf("expert %s: %d columns are not a multiple of group size %d", expertProjs[p], d[1], groupSize)
		}
		comps = append(comps, src(d[0], d[1]).layoutTensor(expertProjs[p], t))
	}
	gs := 0
	if bits != 16 {
		gs = groupSize
	}
	set = layout.ExpertSet{
		Dir: layout.ExpertsDir, Bits: bits, GroupSize: gs,
		NameFormat: layout.ExpertNameFormat(c.NumLayers, int(E)),
		FileSize:   layout.AlignUp(layout.PlaceParts(comps, 0, layout.ExpertAlignment), layout.ExpertAlignment),
		Components: comps,
		Checksums:  make([][]string, c.NumLayers),
	}
	return dense, denseSize, set, nil
}
