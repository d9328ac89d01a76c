package model

import (
	"context"
	"fmt"

	"github.com/fm-moe/fm/pkg/backend"
	"github.com/fm-moe/fm/pkg/layout"
	"github.com/fm-moe/fm/pkg/quant"
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
	// FetchExperts stores the whole file of each listed expert of one layer
	// in data[i] (ids[i]'s; len(data) == len(ids)). data is the caller's, so
	// that a decode step's fetch allocates nothing; the source must not keep
	// it. release gives the buffers back once the caller is done computing
	// with them; it is not nil when err is nil.
	FetchExperts(ctx context.Context, layer int, ids []int, data [][]byte) (release func(), err error)
}

// AsyncExperts is an optional Experts interface for a source that reads in
// the background (the expert store's workers). The model then fetches each
// expert through a reusable ExpertSlot instead of a goroutine calling
// FetchExperts: a decode step allocates nothing for its reads, and the worker
// that finishes a read wakes the model directly (one hand-off, not two).
type AsyncExperts interface {
	// NewExpertSlot returns an idle slot; the model keeps one per expert it
	// has in flight or holds, and reuses them.
	NewExpertSlot() ExpertSlot
}

// ExpertSlot fetches one expert file at a time and is reused: Start, Wait,
// Release, over and over. It is used by one goroutine at a time.
type ExpertSlot interface {
	// Start begins fetching expert id of layer (releasing what the slot held
	// before) and returns without waiting; its errors are reported by Wait.
	Start(ctx context.Context, layer, id int)
	// Ready reports whether Wait would return without waiting for a read.
	Ready() bool
	// Wait returns the whole file, the source's and read-only, valid until
	// Release; or an error naming the file (Start's context cancelled
	// included). On an error the slot holds nothing.
	Wait() ([]byte, error)
	// Release gives the file back, abandoning a read still in flight; it does
	// nothing on an idle slot.
	Release()
}

// InstantExperts is an optional Experts interface. FetchesInstantly reports
// whether FetchExperts returns without waiting for a read (the files are
// mapped, or in memory): the model then fetches a layer's experts in one
// call and hands them to the device together (backend.ExpertBatcher), as
// there is no I/O for their compute to overlap.
type InstantExperts interface {
	FetchesInstantly() bool
}

// DirWeights adapts an opened prepared directory to Weights.
func DirWeights(d *layout.Dir) Weights { return dirWeights{d} }

type dirWeights struct{ d *layout.Dir }

func (w dirWeights) Tensor(name string) *layout.Tensor { return w.d.Manifest.Tensor(name) }
func (w dirWeights) Bytes(p layout.Part) []byte        { return w.d.Bytes(p) }

// formatOf maps a safetensors float dtype to a stored format.
func formatOf(dtype string) (backend.Format, bool) {
	switch safetensors.DType(dtype) {
	case safetensors.F32:
		return backend.F32, true
	case safetensors.BF16:
		return backend.BF16, true
	case safetensors.F16:
		return backend.F16, true
	}
	return 0, false
}

// describe checks a tensor against the expected logical shape and returns its
// matrix descriptor.
func describe(t *layout.Tensor, rows, cols int) (backend.MatrixDesc, error) {
	if len(t.Shape) != 2 || t.Shape[0] != int64(rows) || t.Shape[1] != int64(cols) {
		return backend.MatrixDesc{}, fmt.Errorf("tensor %q: want shape [%d %d], got %v", t.Name, rows, cols, t.Shape)
	}
	d := backend.MatrixDesc{Rows: rows, Cols: cols}
	if q := t.Quant; q != nil {
		sf, ok := formatOf(q.Scales.DType)
		if !ok || q.Biases.DType != q.Scales.DType {
			return d, fmt.Errorf("tensor %q: scales %s / biases %s, want one float dtype", t.Name, q.Scales.DType, q.Biases.DType)
		}
		d.Format, d.Bits, d.GroupSize, d.ScaleFormat = backend.Affine, q.Bits, q.GroupSize, sf
	} else {
		f, ok := formatOf(t.Data.DType)
		if !ok {
			return d, fmt.Errorf("tensor %q: dtype %s is not a supported float format", t.Name, t.Data.DType)
		}
		d.Format = f
	}
	if err := d.Validate(); err != nil {
		return d, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	return d, nil
}

// expertLayout locates the SwiGLU matrices of every expert file of set.
// ExpertLayout is the layout of the expert files of set for a model of
// config c (what Model binds each file with), for callers that need it
// before the model exists (the engine, sizing a device's expert cache).
func ExpertLayout(set *layout.ExpertSet, c *layout.Config) (*backend.ExpertLayout, error) {
	return expertLayout(set, c.HiddenSize, c.MoEIntermediateSize)
}

func expertLayout(set *layout.ExpertSet, H, I int) (*backend.ExpertLayout, error) {
	if set == nil {
		return nil, fmt.Errorf("expert source has no expert set")
	}
	l := &backend.ExpertLayout{FileSize: int(set.FileSize)}
	for _, c := range []struct {
		dst        *backend.ExpertMatrix
		name       string
		rows, cols int
	}{{&l.Gate, "gate_proj", I, H}, {&l.Up, "up_proj", I, H}, {&l.Down, "down_proj", H, I}} {
		t := set.Component(c.name)
		if t == nil {
			return nil, fmt.Errorf("%s: expert component %q missing", set.Dir, c.name)
		}
		desc, err := describe(t, c.rows, c.cols)
		if err != nil {
			return nil, fmt.Errorf("%s: expert component: %w", set.Dir, err)
		}
		part := func(p layout.Part) backend.Part { return backend.Part{Offset: int(p.Offset), Size: int(p.Size)} }
		*c.dst = backend.ExpertMatrix{Desc: desc, Data: part(t.Data)}
		if q := t.Quant; q != nil {
			c.dst.Scales, c.dst.Biases = part(q.Scales), part(q.Biases)
		}
	}
	if err := l.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", set.Dir, err)
	}
	return l, nil
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
	raw := w.Bytes(t.Data)
	if len(raw) != n*f.ElemSize() {
		return nil, fmt.Errorf("tensor %q: %d bytes of %s hold %d values, want %d", name, len(raw), t.Data.DType, len(raw)/f.ElemSize(), n)
	}
	v := make([]float32, n)
	if err := quant.DecodeFloats(v, raw, t.Data.DType); err != nil {
		return nil, fmt.Errorf("tensor %q: %w", name, err)
	}
	return v, nil
}
