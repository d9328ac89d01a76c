package cpu

import (
	"encoding/binary"
	"github.com/fm-moe/fm/pkg/internal/half"
)

// Inner-product kernels in plain Go. Several independent accumulators let the
// CPU overlap the floating-point adds; the reslicing to fixed-length arrays lets
// the compiler drop bounds checks inside the loops.

// dotF32 is Σ a[i]·b[i] over len(a) (b at least as long).
func dotF32(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	for len(a) >= 8 {
		pa, pb := (*[8]float32)(a), (*[8]float32)(b)
		s0 += pa[0]*pb[0] + pa[4]*pb[4]
		s1 += pa[1]*pb[1] + pa[5]*pb[5]
		s2 += pa[2]*pb[2] + pa[6]*pb[6]
		s3 += pa[3]*pb[3] + pa[7]*pb[7]
		a, b = a[8:], b[8:]
	}
	for i := range a {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// dotBF16 is Σ bf16(w[i])·x[i].
func dotBF16(w []uint16, x []float32) float32 {
	x = x[:len(w)]
	var s0, s1, s2, s3 float32
	for len(w) >= 4 {
		pw, px := (*[4]uint16)(w), (*[4]float32)(x)
		s0 += half.BF16ToF32(pw[0]) * px[0]
		s1 += half.BF16ToF32(pw[1]) * px[1]
		s2 += half.BF16ToF32(pw[2]) * px[2]
		s3 += half.BF16ToF32(pw[3]) * px[3]
		w, x = w[4:], x[4:]
	}
	for i := range w {
		s0 += half.BF16ToF32(w[i]) * x[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// dotF16 is Σ f16(w[i])·x[i].
func dotF16(w []uint16, x []float32) float32 {
	x = x[:len(w)]
	var s0, s1 float32
	i := 0
	for ; i+2 <= len(w); i += 2 {
		s0 += half.F16ToF32(w[i]) * x[i]
		s1 += half.F16ToF32(w[i+1]) * x[i+1]
	}
	for ; i < len(w); i++ {
		s0 += half.F16ToF32(w[i]) * x[i]
	}
	return s0 + s1
}

// dotQ4 is Σ q[i]·x[i] over the 4-bit codes packed 8 per word, low nibble first.
func dotQ4(words []uint32, x []float32) float32 {
	x = x[:8*len(words)]
	var s0, s1 float32
	for i, w := range words {
		px := (*[8]float32)(x[8*i:])
		s0 += float32(w&15)*px[0] + float32(w>>8&15)*px[2] + float32(w>>16&15)*px[4] + float32(w>>24&15)*px[6]
		s1 += float32(w>>4&15)*px[1] + float32(w>>12&15)*px[3] + float32(w>>20&15)*px[5] + float32(w>>28)*px[7]
	}
	return s0 + s1
}

// dotQ8 is Σ q[i]·x[i] over byte codes.
func dotQ8(codes []byte, x []float32) float32 {
	x = x[:len(codes)]
	var s0, s1, s2, s3 float32
	for len(codes) >= 4 {
		pc, px := (*[4]byte)(codes), (*[4]float32)(x)
		s0 += float32(pc[0]) * px[0]
		s1 += float32(pc[1]) * px[1]
		s2 += float32(pc[2]) * px[2]
		s3 += float32(pc[3]) * px[3]
		codes, x = codes[4:], x[4:]
	}
	for i := range codes {
		s0 += float32(codes[i]) * x[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// dotQ2 is Σ q[i]·x[i] over 2-bit codes packed 16 per word, lowest bits first.
func dotQ2(words []uint32, x []float32) float32 {
	x = x[:16*len(words)]
	var s0, s1 float32
	for i, w := range words {
		px := (*[16]float32)(x[16*i:])
		for k := 0; k < 16; k += 2 {
			s0 += float32(w>>(2*k)&3) * px[k]
			s1 += float32(w>>(2*k+2)&3) * px[k+1]
		}
	}
	return s0 + s1
}

// dotQBits is Σ q[i]·x[i] over any bit width (3, 5, 6 bits and the rest):
// every 8 codes occupy exactly `bits` bytes, so one little-endian 64-bit load
// holds a block of 8 codes.
func dotQBits(raw []byte, x []float32, bits int) float32 {
	mask := uint64(1)<<uint(bits) - 1
	b := uint(bits)
	var s0, s1 float32
	i := 0
	for ; i+8 <= len(x); i += 8 {
		off := i * bits / 8
		var v uint64
		if off+8 <= len(raw) {
			v = binary.LittleEndian.Uint64(raw[off:])
		} else {
			for j := bits - 1; j >= 0; j-- {
				v = v<<8 | uint64(raw[off+j])
			}
		}
		px := (*[8]float32)(x[i:])
		// Codes go through int32: converting a uint64 to float is much slower.
		c := func(k uint) float32 { return float32(int32(v >> (k * b) & mask)) }
		s0 += c(0)*px[0] + c(2)*px[2] + c(4)*px[4] + c(6)*px[6]
		s1 += c(1)*px[1] + c(3)*px[3] + c(5)*px[5] + c(7)*px[7]
	}
	for ; i < len(x); i++ {
		s0 += float32(bitCode(raw, i, bits)) * x[i]
	}
	return s0 + s1
}
