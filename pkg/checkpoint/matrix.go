package checkpoint

import (
	"context"
	"fmt"
	"sync"

	"github.com/fm-moe/fm/pkg/layout"
	"github.com/fm-moe/fm/pkg/quant"
	"github.com/fm-moe/fm/pkg/safetensors"
)

// matrixSource is a logical [rows, cols] matrix in the source: float rows, or
// MLX-quantized rows (packed codes plus scales and biases, each a rowSource
// over the same logical rows).
type matrixSource struct {
	name       string // canonical name, for messages
	rows, cols int64
	dtype      string // float dtype of the weight, or of the scales when quantized
	w          rowSource
	q          *QuantParams
	s, b       rowSource
}

// permute reorders logical rows (the same runs apply to codes, scales and biases).
func (m matrixSource) permute(name string, runs []rowRun) matrixSource {
	out := m
	out.name = name
	out.w = m.w.permute(runs)
	out.rows = out.w.rows
	if m.q != nil {
		out.s, out.b = m.s.permute(runs), m.b.permute(runs)
	}
	return out
}

// sub selects logical rows [first, first+n).
func (m matrixSource) sub(first, n int64) matrixSource {
	return m.permute(m.name, []rowRun{{first, n}})
}

// sourceBytes is how much of the source the matrix reads.
func (m matrixSource) sourceBytes() int64 {
	n := m.w.rows * m.w.rowBytes
	if m.q != nil {
		n += m.s.rows*m.s.rowBytes + m.b.rows*m.b.rowBytes
	}
	return n
}

func isF8(dt safetensors.DType) bool { return dt == safetensors.F8E4M3 || dt == safetensors.F8E5M2 }

// checkFloat checks that t is a BF16, F16 or F32 tensor.
func checkFloat(file string, t *safetensors.Tensor) error {
	if t.Err != nil {
		return fmt.Errorf("%s: %w", file, t.Err)
	}
	switch {
	case isF8(t.DType):
		return fmt.Errorf("%s: tensor %q: dtype %s is not supported for conversion (convert the checkpoint to bf16 first)", file, t.Name, t.DType)
	case t.DType != safetensors.BF16 && t.DType != safetensors.F16 && t.DType != safetensors.F32:
		return fmt.Errorf("%s: tensor %q: dtype %s, want BF16, F16 or F32", file, t.Name, t.DType)
	}
	return nil
}

func shapeIs(got []int64, want ...int64) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

// floatMatrix checks that t is a float tensor of shape lead ++ [rows, cols] and
// views it as lead·rows rows.
func (c *Checkpoint) floatMatrix(name string, t *safetensors.Tensor, lead []int64, rows, cols int64) (matrixSource, error) {
	file := c.File(t)
	if err := checkFloat(file, t); err != nil {
		return matrixSource{}, err
	}
	want := append(append([]int64{}, lead...), rows, cols)
	if !shapeIs(t.Shape, want...) {
		return matrixSource{}, fmt.Errorf("%s: tensor %q: shape %v, want %v (from config.json)", file, t.Name, t.Shape, want)
	}
	total := rows
	for _, d := range lead {
		total *= d
	}
	return matrixSource{name: name, rows: total, cols: cols, dtype: string(t.DType), w: newRowSource(t, file, total, nil)}, nil
}

// moduleMatrix returns the source of a module that is a logical [rows, cols]
// matrix (lead: leading dimensions of stacked tensors), float or MLX-quantized.
// Quantized shapes are cross-checked: packed_cols·32/bits == scales_cols·group
// == cols, with bits and group from config.json's quantization (per-module
// override first).
func (c *Checkpoint) moduleMatrix(name string, m *module, lead []int64, rows, cols int64) (matrixSource, error) {
	if m.scales == nil && m.biases == nil {
		return c.floatMatrix(name, m.weight, lead, rows, cols)
	}
	file := c.File(m.weight)
	if m.scales == nil || m.biases == nil {
		return matrixSource{}, fmt.Errorf("%s: tensor %q: quantized module needs both scales and biases", file, m.srcName)
	}
	if c.Quant == nil {
		return matrixSource{}, fmt.Errorf("%s: tensor %q: has scales but config.json has no \"quantization\"", file, m.srcName)
	}
	p, ok := c.Quant.For(m.srcModule)
	if !ok {
		return matrixSource{}, fmt.Errorf("%s: tensor %q: has scales but config.json quantization says %q is not quantized", file, m.srcName, m.srcModule)
	}
	w, s, b := m.weight, m.scales, m.biases
	if w.Err != nil {
		return matrixSource{}, fmt.Errorf("%s: %w", file, w.Err)
	}
	if w.DType != safetensors.U32 {
		return matrixSource{}, fmt.Errorf("%s: tensor %q: dtype %s, want U32 packed codes", file, w.Name, w.DType)
	}
	for _, t := range []*safetensors.Tensor{s, b} {
		if err := checkFloat(c.File(t), t); err != nil {
			return matrixSource{}, err
		}
	}
	if s.DType != b.DType {
		return matrixSource{}, fmt.Errorf("%s: tensor %q: dtype %s, scales are %s", c.File(b), b.Name, b.DType, s.DType)
	}
	n := len(lead)
	if len(w.Shape) != n+2 || !shapeIs(w.Shape[:n+1], append(append([]int64{}, lead...), rows)...) {
		return matrixSource{}, fmt.Errorf("%s: tensor %q: shape %v, want %v (from config.json) by packed columns", file, w.Name, w.Shape, append(append([]int64{}, lead...), rows))
	}
	packed := w.Shape[n+1]
	if packed*32 != cols*int64(p.Bits) {
		implied := packed * 32 / max(cols, 1)
		return matrixSource{}, fmt.Errorf("%s: tensor %q: %d packed columns hold %d %d-bit values (config.json quantization), want %d columns (shapes imply %d bits)", file, w.Name, packed, packed*32/int64(p.Bits), p.Bits, cols, implied)
	}
	wantS := append(append([]int64{}, lead...), rows, cols/int64(p.GroupSize))
	if cols%int64(p.GroupSize) != 0 {
		return matrixSource{}, fmt.Errorf("%s: tensor %q: %d columns are not a multiple of group size %d", file, w.Name, cols, p.GroupSize)
	}
	for _, t := range []*safetensors.Tensor{s, b} {
		if !shapeIs(t.Shape, wantS...) {
			return matrixSource{}, fmt.Errorf("%s: tensor %q: shape %v, want %v for group size %d", c.File(t), t.Name, t.Shape, wantS, p.GroupSize)
		}
	}
	total := rows
	for _, d := range lead {
		total *= d
	}
	pc := p
	return matrixSource{
		name: name, rows: total, cols: cols, dtype: string(s.DType), q: &pc,
		w: newRowSource(w, file, total, nil), s: newRowSource(s, c.File(s), total, nil), b: newRowSource(b, c.File(b), total, nil),
	}, nil
}

// matrixTarget says how a matrix is written: Bits 16 keeps the source (float
// bytes, or MLX-quantized bytes as they are); 2, 3, 4 or 8 quantizes a float
// source with GroupSize.
type matrixTarget struct{ Bits, GroupSize int }

// quantScaleDType is the dtype of scales and biases this converter writes when
// it quantizes (as MLX stores them for bf16 models).
const quantScaleDType = "BF16"

// layoutTensor returns the output tensor (parts sized, offsets zero) of m written as t.
func (m matrixSource) layoutTensor(name string, t matrixTarget) layout.Tensor {
	part := func(dtype string, rows, cols int64) layout.Part {
		es, _ := safetensors.DType(dtype).Size()
		return layout.Part{DType: dtype, Shape: []int64{rows, cols}, Size: rows * cols * int64(es)}
	}
	out := layout.Tensor{Name: name, Shape: []int64{m.rows, m.cols}}
	bits, gs, sdt := 0, 0, ""
	switch {
	case m.q != nil:
		bits, gs, sdt = m.q.Bits, m.q.GroupSize, m.dtype
	case t.Bits != 16:
		bits, gs, sdt = t.Bits, t.GroupSize, quantScaleDType
	default:
		out.Data = part(m.dtype, m.rows, m.cols)
		return out
	}
	out.Data = part("U32", m.rows, m.cols*int64(bits)/32)
	out.Quant = &layout.Quant{Bits: bits, GroupSize: gs,
		Scales: part(sdt, m.rows, m.cols/int64(gs)), Biases: part(sdt, m.rows, m.cols/int64(gs))}
	return out
}

// blockBytes bounds the memory of one streamed block.
const blockBytes = 4 << 20

// encode produces the parts of m written as t, in order, through emit (part
// index 0 data, 1 scales, 2 biases; each part may come in several calls).
func (m matrixSource) encode(ctx context.Context, t matrixTarget, emit func(part int, b []byte) error) error {
	if m.q != nil || t.Bits == 16 {
		srcs := []rowSource{m.w}
		if m.q != nil {
			srcs = append(srcs, m.s, m.b)
		}
		for i, src := range srcs {
			if err := copyRows(ctx, src, func(b []byte) error { return emit(i, b) }); err != nil {
				return err
			}
		}
		return nil
	}
	return m.quantize(ctx, t, emit)
}

// copyRows streams the rows of src in blocks.
func copyRows(ctx context.Context, src rowSource, emit func([]byte) error) error {
	step := max(1, blockBytes/src.rowBytes)
	buf := make([]byte, min(step, src.rows)*src.rowBytes)
	for r := int64(0); r < src.rows; r += step {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(step, src.rows-r)
		b, err := src.view(buf, r, n)
		if err != nil {
			return err
		}
		if err := emit(b); err != nil {
			return err
		}
	}
	return nil
}

// quantScratch is the reusable memory of one quantize call: without it every
// expert matrix allocated ~4 MiB, and the garbage collector's work (and its
// preemption of the quantizing goroutines) cost a fifth of fm-repack --bits 4.
type quantScratch struct {
	raw, codes, scales, biases, sb []byte
	vals                           []float32
	p                              quant.Packed
}

var quantScratchPool = sync.Pool{New: func() any { return new(quantScratch) }}

func grow[T any](s []T, n int) []T {
	if cap(s) >= n {
		return s[:n]
	}
	return make([]T, n)
}

// quantize streams the packed codes block by block and emits the scales and
// biases (1/16 of the codes' size at 4 bits, kept in memory) at the end.
func (m matrixSource) quantize(ctx context.Context, t matrixTarget, emit func(part int, b []byte) error) error {
	cols := int(m.cols)
	sdtSize, _ := quant.FloatSize(quantScaleDType)
	sc := quantScratchPool.Get().(*quantScratch)
	defer quantScratchPool.Put(sc)
	scales := sc.scales[:0]
	biases := sc.biases[:0]
	step := max(1, blockBytes/m.w.rowBytes)
	raw := grow(sc.raw, int(min(step, m.rows)*m.w.rowBytes))
	vals := sc.vals
	if m.dtype != "BF16" {
		vals = grow(sc.vals, int(min(step, m.rows)*int64(cols)))
	}
	sc.raw, sc.vals = raw, vals
	for r := int64(0); r < m.rows; r += step {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(step, m.rows-r)
		b, err := m.w.view(raw, r, n)
		if err != nil {
			return err
		}
		if m.dtype == "BF16" {
			// Widened a few thousand values at a time inside the quantizer.
			err = quant.QuantizeBF16Into(&sc.p, b, int(n), cols, t.Bits, t.GroupSize)
		} else {
			v := vals[:n*int64(cols)]
			if err := quant.DecodeFloats(v, b, m.dtype); err != nil {
				return err
			}
			err = quant.QuantizeInto(&sc.p, v, int(n), cols, t.Bits, t.GroupSize)
		}
		if err != nil {
			return fmt.Errorf("%s, the %d rows from row %d: %w", m.name, n, r, err)
		}
		p := &sc.p
		sc.codes = grow(sc.codes, 4*len(p.Codes))
		quant.EncodeCodes(sc.codes, p.Codes)
		if err := emit(0, sc.codes); err != nil {
			return err
		}
		sc.sb = grow(sc.sb, len(p.Scales)*sdtSize)
		quant.EncodeFloats(sc.sb, p.Scales, quantScaleDType)
		scales = append(scales, sc.sb...)
		quant.EncodeFloats(sc.sb, p.Biases, quantScaleDType)
		biases = append(biases, sc.sb...)
	}
	sc.scales, sc.biases = scales, biases
	if err := emit(1, scales); err != nil {
		return err
	}
	return emit(2, biases)
}
