package layout

import (
	"fmt"

	"github.com/fm-moe/fm/pkg/safetensors"
)

func (p *Part) check(what string, limit int64) error {
	dt := safetensors.DType(p.DType)
	es, err := dt.Size()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	n := int64(es)
	for _, d := range p.Shape {
		if d < 0 {
			return fmt.Errorf("%s: negative dimension in shape %v", what, p.Shape)
		}
		n *= d
	}
	if n != p.Size {
		return fmt.Errorf("%s: shape %v of %s needs %d bytes, manifest says %d", what, p.Shape, p.DType, n, p.Size)
	}
	if p.Offset < 0 || p.Offset+p.Size > limit {
		return fmt.Errorf("%s: bytes [%d, %d) outside the %d-byte file", what, p.Offset, p.Offset+p.Size, limit)
	}
	return nil
}

// Check validates a tensor's parts against the size of the file holding them.
func (t *Tensor) Check(limit int64) error {
	if len(t.Shape) == 0 {
		return fmt.Errorf("tensor %q: empty shape", t.Name)
	}
	if err := t.Data.check(fmt.Sprintf("tensor %q data", t.Name), limit); err != nil {
		return err
	}
	if t.Quant == nil {
		if !safetensors.DType(t.Data.DType).IsFloat() {
			return fmt.Errorf("tensor %q: unquantized tensor has non-float dtype %s", t.Name, t.Data.DType)
		}
		return nil
	}
	q := t.Quant
	switch q.Bits {
	case 2, 3, 4, 5, 6, 8:
	default:
		return fmt.Errorf("tensor %q: unsupported quantization bits %d", t.Name, q.Bits)
	}
	if q.GroupSize <= 0 || len(t.Shape) != 2 || t.Shape[1]%int64(q.GroupSize) != 0 {
		return fmt.Errorf("tensor %q: shape %v is not a matrix divisible by group size %d", t.Name, t.Shape, q.GroupSize)
	}
	rows, cols := t.Shape[0], t.Shape[1]
	if t.Data.DType != "U32" || t.Data.Size != rows*cols*int64(q.Bits)/8 {
		return fmt.Errorf("tensor %q: %d-bit [%d, %d] needs %d bytes of U32, manifest says %d of %s", t.Name, q.Bits, rows, cols, rows*cols*int64(q.Bits)/8, t.Data.Size, t.Data.DType)
	}
	for _, p := range []struct {
		n string
		p *Part
	}{{"scales", &q.Scales}, {"biases", &q.Biases}} {
		if err := p.p.check(fmt.Sprintf("tensor %q %s", t.Name, p.n), limit); err != nil {
			return err
		}
		if !safetensors.DType(p.p.DType).IsFloat() || int64(len(p.p.Shape)) != 2 || p.p.Shape[0] != rows || p.p.Shape[1] != cols/int64(q.GroupSize) {
			return fmt.Errorf("tensor %q: %s shape %v %s, want [%d, %d] float", t.Name, p.n, p.p.Shape, p.p.DType, rows, cols/int64(q.GroupSize))
		}
	}
	return nil
}

func (m *Manifest) validate() error {
	if m.ChecksumAlgorithm != ChecksumXXH3 {
		return fmt.Errorf("checksum_algorithm %q, want %q", m.ChecksumAlgorithm, ChecksumXXH3)
	}
	seen := map[string]bool{}
	for i := range m.Tensors {
		t := &m.Tensors[i]
		if seen[t.Name] {
			return fmt.Errorf("tensor %q listed twice", t.Name)
		}
		seen[t.Name] = true
		if err := t.Check(m.Dense.Size); err != nil {
			return fmt.Errorf("%s: %w", m.Dense.File, err)
		}
	}
	for i := range m.Experts {
		s := &m.Experts[i]
		if len(s.Checksums) != m.Config.NumLayers {
			return fmt.Errorf("%s: checksums for %d layers, model has %d", s.Dir, len(s.Checksums), m.Config.NumLayers)
		}
		for l, cs := range s.Checksums {
			if m.Config.SparseLayers[l] && len(cs) != m.Config.NumExperts {
				return fmt.Errorf("%s: layer %d has %d expert checksums, want %d", s.Dir, l, len(cs), m.Config.NumExperts)
			}
		}
		for _, name := range []string{"gate_proj", "up_proj", "down_proj"} {
			c := s.Component(name)
			if c == nil {
				return fmt.Errorf("%s: component %q missing", s.Dir, name)
			}
			if err := c.Check(s.FileSize); err != nil {
				return fmt.Errorf("%s: %w", s.Dir, err)
			}
		}
	}
	return nil
}
