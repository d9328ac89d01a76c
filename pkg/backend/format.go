package backend

import "fmt"

// Format is the storage format of a matrix or of its quantization scales.
type Format uint8

// The stored formats.
const (
	// F32 is IEEE float32.
	F32 Format = iota + 1
	// BF16 is bfloat16 (the upper half of a float32).
	BF16
	// F16 is IEEE half precision.
	F16
	// Affine is MLX affine group quantization (see the package doc).
	Affine
)

func (f Format) String() string {
	switch f {
	case F32:
		return "F32"
	case BF16:
		return "BF16"
	case F16:
		return "F16"
	case Affine:
		return "affine"
	}
	return fmt.Sprintf("Format(%d)", uint8(f))
}

// ElemSize is the byte size of one element of a float format, 0 for Affine
// and unknown formats.
func (f Format) ElemSize() int {
	switch f {
	case F32:
		return 4
	case BF16, F16:
		return 2
	}
	return 0
}

// MatrixDesc describes a stored weight matrix [Rows × Cols].
type MatrixDesc struct {
	Rows, Cols int
	Format     Format
	// Affine only: code width, columns per group, and the format of the
	// scales and biases ([Rows × Cols/GroupSize] each).
	Bits, GroupSize int
	ScaleFormat     Format
}

func (d MatrixDesc) String() string {
	if d.Format == Affine {
		return fmt.Sprintf("[%d %d] %d-bit affine, groups of %d, %v scales", d.Rows, d.Cols, d.Bits, d.GroupSize, d.ScaleFormat)
	}
	return fmt.Sprintf("[%d %d] %v", d.Rows, d.Cols, d.Format)
}

// RowBytes is the size of one row of the data.
func (d MatrixDesc) RowBytes() int {
	if d.Format == Affine {
		return d.Cols * d.Bits / 8
	}
	return d.Cols * d.Format.ElemSize()
}

// DataBytes is the size of the data (codes or floats).
func (d MatrixDesc) DataBytes() int { return d.Rows * d.RowBytes() }

// ScaleBytes is the size of the scales, and of the biases (0 unless Affine).
func (d MatrixDesc) ScaleBytes() int {
	if d.Format != Affine || d.GroupSize <= 0 {
		return 0
	}
	return d.Rows * (d.Cols / d.GroupSize) * d.ScaleFormat.ElemSize()
}

// Validate checks that the shape and format are ones every backend supports:
// positive shape; affine codes of 2, 3, 4, 5, 6 or 8 bits in groups that
// divide the row and fill whole 32-bit words, with float scales.
func (d MatrixDesc) Validate() error {
	if d.Rows <= 0 || d.Cols <= 0 {
		return fmt.Errorf("matrix shape [%d, %d] is not positive", d.Rows, d.Cols)
	}
	switch d.Format {
	case F32, BF16, F16:
	case Affine:
		switch d.Bits {
		case 2, 3, 4, 5, 6, 8:
		default:
			return fmt.Errorf("affine matrix: unsupported bits %d", d.Bits)
		}
		if d.GroupSize <= 0 || d.Cols%d.GroupSize != 0 || d.GroupSize*d.Bits%32 != 0 {
			return fmt.Errorf("affine matrix: %d columns do not split into groups of %d that fill whole 32-bit words at %d bits", d.Cols, d.GroupSize, d.Bits)
		}
		if d.ScaleFormat.ElemSize() == 0 {
			return fmt.Errorf("affine matrix: scale format %v is not a float format", d.ScaleFormat)
		}
	default:
		return fmt.Errorf("unknown matrix format %v", d.Format)
	}
	return nil
}

// CheckBytes validates d and the sizes of the byte slices that hold it.
func (d MatrixDesc) CheckBytes(data, scales, biases []byte) error {
	if err := d.Validate(); err != nil {
		return err
	}
	if want := d.DataBytes(); len(data) != want {
		return fmt.Errorf("%v matrix: data needs %d bytes, have %d", d, want, len(data))
	}
	if want := d.ScaleBytes(); len(scales) != want || len(biases) != want {
		return fmt.Errorf("%v matrix: scales/biases need %d bytes each, have %d and %d", d, want, len(scales), len(biases))
	}
	return nil
}

// Part is a byte range of an expert file.
type Part struct{ Offset, Size int }

// ExpertMatrix locates one matrix of an expert inside the expert's file.
type ExpertMatrix struct {
	Desc                 MatrixDesc
	Data, Scales, Biases Part // Scales and Biases are zero unless Affine
}

// ExpertLayout is where the SwiGLU matrices of every routed expert of a model
// are in its file: gate and up [I × H], down [H × I]. One layout serves every
// expert (the files have identical layouts).
type ExpertLayout struct {
	FileSize       int
	Gate, Up, Down ExpertMatrix
}

// Validate checks the descriptors and that every part lies inside the file
// and has the size its descriptor implies.
func (l *ExpertLayout) Validate() error {
	for _, c := range []struct {
		name string
		m    *ExpertMatrix
	}{{"gate", &l.Gate}, {"up", &l.Up}, {"down", &l.Down}} {
		d := c.m.Desc
		if err := d.Validate(); err != nil {
			return fmt.Errorf("expert %s matrix: %w", c.name, err)
		}
		type part struct {
			what string
			p    Part
			want int
		}
		parts := []part{{"data", c.m.Data, d.DataBytes()}}
		if d.Format == Affine {
			parts = append(parts, part{"scales", c.m.Scales, d.ScaleBytes()}, part{"biases", c.m.Biases, d.ScaleBytes()})
		}
		for _, p := range parts {
			if p.p.Size != p.want {
				return fmt.Errorf("expert %s matrix %v: %s has %d bytes, want %d", c.name, d, p.what, p.p.Size, p.want)
			}
			if p.p.Offset < 0 || p.p.Offset+p.p.Size > l.FileSize {
				return fmt.Errorf("expert %s matrix: %s bytes [%d, %d) outside the %d-byte file", c.name, p.what, p.p.Offset, p.p.Offset+p.p.Size, l.FileSize)
			}
		}
	}
	if l.Gate.Desc.Rows != l.Up.Desc.Rows || l.Gate.Desc.Cols != l.Up.Desc.Cols ||
		l.Down.Desc.Rows != l.Gate.Desc.Cols || l.Down.Desc.Cols != l.Gate.Desc.Rows {
		return fmt.Errorf("expert matrices gate %v, up %v, down %v do not form a SwiGLU FFN", l.Gate.Desc, l.Up.Desc, l.Down.Desc)
	}
	return nil
}

// Bytes returns the matrix's data, scales and biases inside buf, an expert
// file (scales and biases nil unless Affine).
func (m *ExpertMatrix) Bytes(buf []byte) (data, scales, biases []byte) {
	at := func(p Part) []byte { return buf[p.Offset : p.Offset+p.Size : p.Offset+p.Size] }
	data = at(m.Data)
	if m.Desc.Format == Affine {
		scales, biases = at(m.Scales), at(m.Biases)
	}
	return data, scales, biases
}
