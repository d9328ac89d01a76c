package safetensors

import "fmt"

// DType is a safetensors element type name such as "BF16" or "F8_E4M3".
type DType string

// The dtypes this package knows the element size of.
const (
	BOOL   DType = "BOOL"
	U8     DType = "U8"
	I8     DType = "I8"
	I16    DType = "I16"
	U16    DType = "U16"
	F16    DType = "F16"
	BF16   DType = "BF16"
	I32    DType = "I32"
	U32    DType = "U32"
	F32    DType = "F32"
	F64    DType = "F64"
	I64    DType = "I64"
	U64    DType = "U64"
	F8E4M3 DType = "F8_E4M3"
	F8E5M2 DType = "F8_E5M2"
)

var dtypeSizes = map[DType]int{
	BOOL: 1, U8: 1, I8: 1, F8E4M3: 1, F8E5M2: 1,
	I16: 2, U16: 2, F16: 2, BF16: 2,
	I32: 4, U32: 4, F32: 4,
	F64: 8, I64: 8, U64: 8,
}

// Size returns the size of one element in bytes, or an error for an unknown dtype.
func (d DType) Size() (int, error) {
	n, ok := dtypeSizes[d]
	if !ok {
		return 0, fmt.Errorf("unknown dtype %q", string(d))
	}
	return n, nil
}

// Known reports whether the element size of d is known.
func (d DType) Known() bool { _, ok := dtypeSizes[d]; return ok }

// IsFloat reports whether d is a floating-point type.
func (d DType) IsFloat() bool {
	switch d {
	case F16, BF16, F32, F64, F8E4M3, F8E5M2:
		return true
	}
	return false
}
