package quant

import (
	"encoding/binary"
	"fmt"
	"math"
)

// BF16ToF32 widens a bfloat16 (the top half of a float32) exactly.
func BF16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// F32ToBF16 rounds a float32 to the nearest bfloat16, ties to even. NaNs stay
// NaN (quiet, sign kept); overflow rounds to ±Inf as IEEE rounding does.
func F32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x0040
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// F16ToF32 widens an IEEE 754 half-precision float exactly.
func F16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch exp {
	case 0:
		// Zero or subnormal: mant · 2^-24, exact in float32.
		v := float32(mant) * (1.0 / (1 << 24))
		return math.Float32frombits(math.Float32bits(v) | sign)
	case 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
}

// F32ToF16 rounds a float32 to the nearest IEEE half, ties to even, with
// subnormal results and overflow to ±Inf. NaNs stay NaN.
func F32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			return sign | 0x7e00 | uint16(mant>>13)
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		if e < -10 {
			return sign
		}
		full := mant | 0x800000
		shift := uint(14 - e)
		r := full >> shift
		rem := full & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || rem == half && r&1 == 1 {
			r++
		}
		return sign | uint16(r)
	}
	r := uint32(e)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || rem == 0x1000 && r&1 == 1 {
		r++ // a carry into the exponent is the correct rounding, up to Inf
	}
	return sign | uint16(r)
}

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
		decodeBF16(dst, src)
	case "F16":
		for i := range dst {
			dst[i] = F16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
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
			binary.LittleEndian.PutUint16(dst[2*i:], F32ToBF16(v))
		}
	case "F16":
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], F32ToF16(v))
		}
	case "F32":
		for i, v := range src {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
		}
	}
	return nil
}
