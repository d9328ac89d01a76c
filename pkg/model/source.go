package model

import (
	"context"
	"fmt"

	"github.com/fm-moe/fm/pkg/backend/cpu"
	"github.com/fm-moe/fm/pkg/layout"
	"github.com/fm-moe/fm/pkg/safetensors"
)

// Weights supplies the dense tensors by canonical name (see pkg/layout).
type Weights interface {
	// Tensor returns the named tensor's description, or nil when absent.
	Tensor(name string) *layout.Tensor
	// Bytes returns the bytes of one part of a tensor.
	Bytes(p layout.Part) []byte
}

// Experts supplies the routed experts' files.
type Experts interface {
	// ExpertSet describes the layout of one expert file.
	ExpertSet() *layout.ExpertSet
	// FetchExperts returns the whole file of each listed expert of one layer;
	// data[i] belongs to ids[i]. release gives the buffers back once the caller
	// is done computing with them.
	FetchExperts(ctx context.Context, layer int, ids []int) (data [][]byte, release func(), err error)
}

// DirWeights adapts an opened prepared directory to Weights.
func DirWeights(d *layout.Dir) Weights { return dirWeights{d} }

type dirWeights struct{ d *layout.Dir }

func (w dirWeights) Tensor(name string) *layout.Tensor { return w.d.Manifest.Tensor(name) }
func (w dirWeights) Bytes(p layout.Part) []byte        { return w.d.Bytes(p) }

// formatOf maps a safetensors float dtype to a kernel format.
func formatOf(dtype string) (cpu.Format, bool) {
	switch safetensors.DType(dtype) {
	case safetensors.F32:
		return cpu.F32, true
	case safetensors.BF16:
		return cpu.BF16, true
	case safetensors.F16:
		return cpu.F16, true
	}
	return 0, false
}

// matrixTemplate describes a matrix whose bytes are located later (an expert
// component inside a file that is fetched per token).
type matrixTemplate struct {
	m                    cpu.Matrix
	data, scales, biases layout.Part
}

// bind returns the matrix over one buffer holding its parts at their offsets.
func (t *matrixTemplate) bind(buf []byte) cpu.Matrix {
	m := t.m
	m.Data = buf[t.data.Offset : t.data.Offset+t.data.Size]
	if m.Format == cpu.Affine {
		m.Scales = buf[t.scales.Offset : t.scales.Offset+t.scales.Size]
		m.Biases = buf[t.biases.Offset : t.biases.Offset+t.biases.Size]
	}
	return m
}

// newTemplate checks a tensor against the expected logical shape and builds
// the matrix description without bytes.
func newTemplate(t *layout.Tensor, rows, cols int) (*matrixTemplate, error) {
	if len(t.Shape) != 2 || t.Shape[0] != int64(rows) || t.Shape[1] != int64(cols) {
		return nil, fmt.Errorf("tensor %q: want shape [%d %d], got %v", t.Name, rows, cols, t.Shape)
	}
	mt := &matrixTemplate{m: cpu.Matrix{Rows: rows, Cols: cols}, data: t.Data}
	if q := t.Quant; q != nil {
		sf, ok := formatOf(q.Scales.DType)
		if !ok || q.Biases.DType != q.Scales.DType {
			return nil, fmt.Errorf("tensor %q: scales %s / biases %s, want one float dtype", t.Name, q.Scales.DType, q.Biases.DType)
		}
		mt.m.Format = cpu.Affine
		mt.m.Bits, mt.m.GroupSize, mt.m.ScaleFormat = q.Bits, q.GroupSize, sf
		mt.scales, mt.biases = q.Scales, q.Biases
	} else {
		f, ok := formatOf(t.Data.DType)
		if !ok {
			return nil, fmt.Errorf("tensor %q: dtype %s is not a supported float format", t.Name, t.Data.DType)
		}
		mt.m.Format = f
	}
	return mt, nil
}

// loadMatrix returns the named dense matrix, checked against its expected shape.
func loadMatrix(w Weights, name string, rows, cols int) (cpu.Matrix, error) {
	t := w.Tensor(name)
	if t == nil {
		return cpu.Matrix{}, fmt.Errorf("tensor %q missing", name)
	}
	mt, err := newTemplate(t, rows, cols)
	if err != nil {
		return cpu.Matrix{}, err
	}
	m := mt.m
	m.Data = w.Bytes(mt.data)
	if m.Format == cpu.Affine {
		m.Scales, m.Biases = w.Bytes(mt.scales), w.Bytes(mt.biases)
	}
	if err := m.Validate(); err != nil {
		return cpu.Matrix{}, fmt.Errorf("tensor %q: %w", name, err)
	}
	return m, nil
}

// loadVector returns a float vector (norm weights, A_log, dt_bias, conv taps)
// as float32, checked against its expected element count.
func loadVector(w Weights, name string, n int) ([]float32, error) {
	t := w.Tensor(name)
	if t == nil {
		return nil, fmt.Errorf("tensor %q missing", name)
	}
	if t.Quant != nil {
		return nil, fmt.Errorf("tensor %q: quantized, want a float tensor", name)
	}
	count := int64(1)
	for _, d := range t.Shape {
		count *= d
	}
	if count != int64(n) {
		return nil, fmt.Errorf("tensor %q: want %d elements, got shape %v", name, n, t.Shape)
	}
	f, ok := formatOf(t.Data.DType)
	if !ok {
		return nil, fmt.Errorf("tensor %q: dtype %s is not a supported float format", name, t.Data.DType)
	}
	v, err := cpu.DecodeFloats(w.Bytes(t.Data), f)
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", name, err)
	}
	if len(v) != n {
		return nil, fmt.Errorf("tensor %q: %d bytes of %s hold %d values, want %d", name, t.Data.Size, t.Data.DType, len(v), n)
	}
	return v, nil
}
