package quant

import (
	"encoding/binary"
	"fmt"
	"github.com/fm-moe/fm/pkg/internal/half"
	"math"
)

// FloatSize returns the byte size of one element of a float dtype named as in
// safetensors ("BF16", "F16", "F32"), or an error for any other name.
func FloatSize(dtype string) (int, error) {
	switch dtype {
	case "BF16", "F16":
		return 2, nil
	case "F32":
		return 4, nil
	}
	return 0, fmt.Errorf("dtype %s is not BF16, F16 or F32", dtype)
}

// DecodeFloats converts little-endian elements of dtype (BF16, F16 or F32) in src
// to float32 in dst; len(dst) elements are decoded.
func DecodeFloats(dst []float32, src []byte, dtype string) error {
	es, err := FloatSize(dtype)
	if err != nil {
		return err
	}
	if len(src) < len(dst)*es {
		return fmt.Errorf("decode %d %s values from %d bytes", len(dst), dtype, len(src))
	}
	switch dtype {
	case "BF16":
		half.DecodeBF16(dst, src)
	case "F16":
		for i := range dst {
			dst[i] = half.F16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	case "F32":
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
	}
	return nil
}

// EncodeFloats rounds src to dtype (BF16, F16 or F32; round to nearest even) and
// writes the little-endian elements to dst, which must hold len(src) of them.
func EncodeFloats(dst []byte, src []float32, dtype string) error {
	es, err := FloatSize(dtype)
	if err != nil {
		return err
	}
	if len(dst) < len(src)*es {
		return fmt.Errorf("encode %d %s values into %d bytes", len(src), dtype, len(dst))
	}
	switch dtype {
	case "BF16":
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], half.F32ToBF16(v))
		}
	case "F16":
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], half.F32ToF16(v))
		}
	case "F32":
		for i, v := range src {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
		}
	}
	return nil
}
