package cpu

import (
	"fmt"
	"github.com/fm-moe/fm/pkg/internal/half"
	"unsafe"

	"github.com/fm-moe/fm/pkg/backend"
)

// Format is the storage format of a matrix or of its quantization scales: the
// contract's formats (backend.Affine is MLX affine group quantization: element
// c of row r is scale[r, c/GroupSize]·q + bias[r, c/GroupSize], where q is the
// Bits-wide code at bit offset c·Bits of the row's little-endian,
// least-significant-bit-first bit stream; for 2, 4 and 8 bits this is exactly
// MLX's uint32 word packing, for 3, 5 and 6 bits its byte-triple packing).
type Format = backend.Format

// The formats, as the kernels name them.
const (
	F32    = backend.F32
	BF16   = backend.BF16
	F16    = backend.F16
	Affine = backend.Affine
)

// Matrix is a read-only view of a row-major [Rows, Cols] weight matrix whose
// bytes live elsewhere (a memory-mapped file, an expert buffer). A linear layer
// with this weight computes y = M·x.
type Matrix struct {
	Rows, Cols int
	Format     Format
	Data       []byte

	// Affine only.
	Bits, GroupSize int
	Scales, Biases  []byte
	ScaleFormat     Format // F32, BF16 or F16
}

// Desc is the matrix's contract descriptor.
func (m *Matrix) Desc() backend.MatrixDesc {
	return backend.MatrixDesc{Rows: m.Rows, Cols: m.Cols, Format: m.Format, Bits: m.Bits, GroupSize: m.GroupSize, ScaleFormat: m.ScaleFormat}
}

// RowBytes is the size of one row of Data.
func (m *Matrix) RowBytes() int { return m.Desc().RowBytes() }

// Groups is the number of quantization groups per row (Affine only).
func (m *Matrix) Groups() int { return m.Cols / m.GroupSize }

// Validate checks the shape and format, and that the byte slices have the
// sizes they need.
func (m *Matrix) Validate() error {
	var scales, biases []byte
	if m.Format == Affine {
		scales, biases = m.Scales, m.Biases
	}
	return m.Desc().CheckBytes(m.Data, scales, biases)
}

// Row writes the dequantized row r into dst[:Cols].
func (m *Matrix) Row(dst []float32, r int) {
	dst = dst[:m.Cols]
	rb := m.RowBytes()
	raw := m.Data[r*rb : (r+1)*rb]
	switch m.Format {
	case F32:
		copy(dst, f32s(raw))
	case BF16:
		for i, v := range u16s(raw) {
			dst[i] = half.BF16ToF32(v)
		}
	case F16:
		for i, v := range u16s(raw) {
			dst[i] = half.F16ToF32(v)
		}
	case Affine:
		g := m.Groups()
		scales := make([]float32, g)
		biases := make([]float32, g)
		decodeFloats(scales, m.Scales, m.ScaleFormat, r*g)
		decodeFloats(biases, m.Biases, m.ScaleFormat, r*g)
		unpackCodes(dst, raw, m.Bits)
		gs := m.GroupSize
		for j := 0; j < g; j++ {
			s, b := scales[j], biases[j]
			seg := dst[j*gs : (j+1)*gs]
			for i, q := range seg {
				seg[i] = s*q + b
			}
		}
	}
}

// unpackCodes writes the len(dst) codes of a bit stream as float32 values.
func unpackCodes(dst []float32, raw []byte, bits int) {
	switch bits {
	case 8:
		for i := range dst {
			dst[i] = float32(raw[i])
		}
	case 4:
		for i := 0; i+1 < len(dst); i += 2 {
			b := raw[i>>1]
			dst[i] = float32(b & 15)
			dst[i+1] = float32(b >> 4)
		}
	case 2:
		for i := 0; i+3 < len(dst); i += 4 {
			b := raw[i>>2]
			dst[i] = float32(b & 3)
			dst[i+1] = float32(b >> 2 & 3)
			dst[i+2] = float32(b >> 4 & 3)
			dst[i+3] = float32(b >> 6)
		}
	default:
		for i := range dst {
			dst[i] = float32(bitCode(raw, i, bits))
		}
	}
}

// bitCode extracts code i of an LSB-first bit stream of bits-wide codes.
func bitCode(raw []byte, i, bits int) uint32 {
	bit := i * bits
	byteIdx := bit >> 3
	shift := uint(bit & 7)
	// A code of at most 8 bits spans at most two bytes.
	v := uint32(raw[byteIdx])
	if int(shift)+bits > 8 {
		v |= uint32(raw[byteIdx+1]) << 8
	}
	return v >> shift & (1<<uint(bits) - 1)
}

// decodeFloats converts len(dst) elements starting at element index first of a
// float array stored in format f.
func decodeFloats(dst []float32, raw []byte, f Format, first int) {
	switch f {
	case F32:
		copy(dst, f32s(raw)[first:first+len(dst)])
	case BF16:
		for i, v := range u16s(raw)[first : first+len(dst)] {
			dst[i] = half.BF16ToF32(v)
		}
	case F16:
		for i, v := range u16s(raw)[first : first+len(dst)] {
			dst[i] = half.F16ToF32(v)
		}
	default:
		panic(fmt.Sprintf("cpu: decodeFloats of format %v", f))
	}
}

// DecodeFloats converts a little-endian F32/BF16/F16 array to float32.
func DecodeFloats(raw []byte, f Format) ([]float32, error) {
	es := f.ElemSize()
	if es == 0 || len(raw)%es != 0 {
		return nil, fmt.Errorf("cannot decode %d bytes as %v", len(raw), f)
	}
	out := make([]float32, len(raw)/es)
	decodeFloats(out, raw, f, 0)
	return out, nil
}

// The views below reinterpret little-endian bytes in place. fm targets
// little-endian machines only (amd64, arm64); the weights' byte order is fixed by
// the safetensors format, so a big-endian port would need converting loads here.

func u16s(b []byte) []uint16 {
	if len(b) < 2 {
		return nil
	}
	return unsafe.Slice((*uint16)(unsafe.Pointer(&b[0])), len(b)/2)
}

func u32s(b []byte) []uint32 {
	if len(b) < 4 {
		return nil
	}
	return unsafe.Slice((*uint32)(unsafe.Pointer(&b[0])), len(b)/4)
}

func f32s(b []byte) []float32 {
	if len(b) < 4 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4)
}

// F32Bytes views a float32 slice as its little-endian bytes (no copy).
func F32Bytes(f []float32) []byte {
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), len(f)*4)
}
