package cpu

import (
	"encoding/binary"
	"github.com/fm-moe/fm/pkg/internal/half"
	"math"
	"math/rand/v2"
)

// The reference twins: the most direct reading of the formats, one element at a
// time, accumulated in float64. The optimized kernels are tested against them.

// refElem returns element (r, c) of m, dequantized.
func refElem(m *Matrix, r, c int) float64 {
	switch m.Format {
	case F32:
		off := (r*m.Cols + c) * 4
		return float64(math.Float32frombits(binary.LittleEndian.Uint32(m.Data[off:])))
	case BF16:
		off := (r*m.Cols + c) * 2
		return float64(math.Float32frombits(uint32(binary.LittleEndian.Uint16(m.Data[off:])) << 16))
	case F16:
		off := (r*m.Cols + c) * 2
		return float64(half.F16ToF32(binary.LittleEndian.Uint16(m.Data[off:])))
	case Affine:
		bit := (r*m.Cols + c) * m.Bits
		var q uint64
		for k := 0; k < m.Bits; k++ {
			b := bit + k
			q |= uint64(m.Data[b/8]>>(b%8)&1) << k
		}
		g := r*m.Groups() + c/m.GroupSize
		s := refScale(m.Scales, m.ScaleFormat, g)
		b := refScale(m.Biases, m.ScaleFormat, g)
		// MLX dequantizes in the scale dtype's arithmetic promoted to float32.
		return float64(float32(s)*float32(q) + float32(b))
	}
	panic("bad format")
}

func refScale(raw []byte, f Format, i int) float64 {
	switch f {
	case F32:
		return float64(math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])))
	case BF16:
		return float64(math.Float32frombits(uint32(binary.LittleEndian.Uint16(raw[2*i:])) << 16))
	case F16:
		return float64(half.F16ToF32(binary.LittleEndian.Uint16(raw[2*i:])))
	}
	panic("bad scale format")
}

// refMatVec returns M·x in float64, and Σ|m_rc·x_c| per row (the error scale).
func refMatVec(m *Matrix, x []float32) (y, mag []float64) {
	y = make([]float64, m.Rows)
	mag = make([]float64, m.Rows)
	for r := 0; r < m.Rows; r++ {
		for c := 0; c < m.Cols; c++ {
			v := refElem(m, r, c) * float64(x[c])
			y[r] += v
			mag[r] += math.Abs(v)
		}
	}
	return y, mag
}

// randomMatrix builds an m of the given format with random contents.
func randomMatrix(rng *rand.Rand, rows, cols int, f Format, bits, gs int, sf Format) *Matrix {
	m := &Matrix{Rows: rows, Cols: cols, Format: f, Bits: bits, GroupSize: gs, ScaleFormat: sf}
	switch f {
	case F32:
		m.Data = make([]byte, rows*cols*4)
		for i := 0; i < rows*cols; i++ {
			binary.LittleEndian.PutUint32(m.Data[4*i:], math.Float32bits(float32(rng.NormFloat64())))
		}
	case BF16:
		m.Data = make([]byte, rows*cols*2)
		for i := 0; i < rows*cols; i++ {
			binary.LittleEndian.PutUint16(m.Data[2*i:], half.F32ToBF16(float32(rng.NormFloat64())))
		}
	case F16:
		m.Data = make([]byte, rows*cols*2)
		for i := 0; i < rows*cols; i++ {
			// Random finite halves of moderate magnitude: exponent 10..20, random mantissa and sign.
			h := uint16(rng.IntN(2))<<15 | uint16(10+rng.IntN(11))<<10 | uint16(rng.IntN(1024))
			if i%17 == 0 {
				h = uint16(rng.IntN(1024)) // subnormals too
			}
			binary.LittleEndian.PutUint16(m.Data[2*i:], h)
		}
	case Affine:
		m.Data = make([]byte, rows*cols*bits/8)
		for i := range m.Data {
			m.Data[i] = byte(rng.IntN(256))
		}
		n := rows * cols / gs
		es := sf.ElemSize()
		m.Scales = make([]byte, n*es)
		m.Biases = make([]byte, n*es)
		put := func(b []byte, i int, v float32) {
			switch sf {
			case F32:
				binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
			case BF16:
				binary.LittleEndian.PutUint16(b[2*i:], half.F32ToBF16(v))
			case F16:
				binary.LittleEndian.PutUint16(b[2*i:], f32ToF16(v))
			}
		}
		for i := 0; i < n; i++ {
			// Scales may be negative in MLX files.
			put(m.Scales, i, float32(rng.NormFloat64()*0.05))
			put(m.Biases, i, float32(rng.NormFloat64()*0.3))
		}
	}
	return m
}

// f32ToF16 rounds to half precision (normal range only; enough for test data).
func f32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23&0xff) - 127 + 15
	mant := b & 0x7fffff
	if exp <= 0 {
		return sign
	}
	if exp >= 31 {
		return sign | 0x7c00
	}
	h := uint32(exp)<<10 | mant>>13
	// round to nearest even
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && h&1 == 1) {
		h++
	}
	return sign | uint16(h)
}

func randomVector(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

// softmaxRef normalizes x in place: exp(x − max) / Σ, the sum in float64 — the
// reference twin of SoftmaxF32 and of the attention kernels' softmax.
func softmaxRef(x []float32) {
	if len(x) == 0 {
		return
	}
	mx := x[0]
	for _, v := range x[1:] {
		if v > mx {
			mx = v
		}
	}
	var sum float64
	for i, v := range x {
		e := math.Exp(float64(v - mx))
		x[i] = float32(e)
		sum += e
	}
	inv := 1 / sum
	for i := range x {
		x[i] = float32(float64(x[i]) * inv)
	}
}
