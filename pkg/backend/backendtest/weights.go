package backendtest

import (
	"fmt"
	"math/rand/v2"

	"github.com/fm-moe/fm/pkg/backend"
	"github.com/fm-moe/fm/pkg/quant"
)

// format is a stored weight format to generate.
type format struct {
	f           backend.Format
	bits, group int
	scales      backend.Format
}

func (f format) String() string {
	if f.f == backend.Affine {
		return fmt.Sprintf("q%d_g%d_%v", f.bits, f.group, f.scales)
	}
	return f.f.String()
}

// allFormats is every format the contract supports: the float formats and
// each affine width with each scale format (groups of 32, 64 and 128).
func allFormats() []format {
	fs := []format{{f: backend.F32}, {f: backend.BF16}, {f: backend.F16}}
	groups := []int{64, 32, 128}
	i := 0
	for _, bits := range []int{2, 3, 4, 5, 6, 8} {
		for _, s := range []backend.Format{backend.BF16, backend.F16, backend.F32} {
			fs = append(fs, format{backend.Affine, bits, groups[i%len(groups)], s})
			i++
		}
	}
	return fs
}

// someFormats is one of each kind, for the composite operations.
func someFormats() []format {
	return []format{{f: backend.F32}, {f: backend.BF16}, {f: backend.F16},
		{backend.Affine, 4, 64, backend.BF16}, {backend.Affine, 3, 32, backend.F16}, {backend.Affine, 8, 32, backend.F32}, {backend.Affine, 2, 64, backend.BF16}}
}

// colsFor rounds n up to a width the format accepts (a multiple of the group).
func (f format) colsFor(n int) int {
	if f.f != backend.Affine {
		return n
	}
	return (n + f.group - 1) / f.group * f.group
}

// dense is a generated weight matrix: its stored bytes and the exact values
// they encode.
type dense struct {
	desc                 backend.MatrixDesc
	data, scales, biases []byte
	rows, cols           int
	w                    []float64 // the encoded values, row-major
}

func dtype(f backend.Format) string {
	switch f {
	case backend.F32:
		return "F32"
	case backend.BF16:
		return "BF16"
	case backend.F16:
		return "F16"
	}
	panic(fmt.Sprintf("no dtype for %v", f))
}

// newDense generates a [rows × cols] matrix of normal values times scale,
// stored in format f: float formats round it, 2-, 3-, 4- and 8-bit affine
// quantize it with pkg/quant (MLX's algorithm), 5 and 6 bits draw random codes
// (pkg/quant does not quantize to them; the kernels must still read them).
func newDense(r *rand.Rand, f format, rows, cols int, scale float64) *dense {
	m := &dense{rows: rows, cols: cols, desc: backend.MatrixDesc{Rows: rows, Cols: cols, Format: f.f}}
	src := make([]float32, rows*cols)
	for i := range src {
		src[i] = float32(r.NormFloat64() * scale)
	}
	if f.f != backend.Affine {
		m.data = make([]byte, rows*cols*f.f.ElemSize())
		must(quant.EncodeFloats(m.data, src, dtype(f.f)))
		dec := make([]float32, rows*cols)
		must(quant.DecodeFloats(dec, m.data, dtype(f.f)))
		m.w = widen(dec)
		return m
	}
	m.desc.Bits, m.desc.GroupSize, m.desc.ScaleFormat = f.bits, f.group, f.scales
	groups := rows * cols / f.group
	var words []uint32
	var scales, biases []float32
	switch f.bits {
	case 2, 3, 4, 8:
		p, err := quant.Quantize(src, rows, cols, f.bits, f.group)
		must(err)
		words, scales, biases = p.Codes, p.Scales, p.Biases
	default:
		wpr := quant.WordsPerRow(cols, f.bits)
		words = make([]uint32, rows*wpr)
		codes := make([]uint8, cols)
		for row := 0; row < rows; row++ {
			for i := range codes {
				codes[i] = uint8(r.IntN(1 << f.bits))
			}
			quant.PackCodes(words[row*wpr:(row+1)*wpr], codes, f.bits)
		}
		scales, biases = make([]float32, groups), make([]float32, groups)
		for g := range scales {
			scales[g] = float32(scale * (0.05 + 0.2*r.Float64()))
			biases[g] = float32(-scale * (0.5 + r.Float64()))
		}
	}
	m.data = make([]byte, 4*len(words))
	quant.EncodeCodes(m.data, words)
	es := f.scales.ElemSize()
	m.scales, m.biases = make([]byte, groups*es), make([]byte, groups*es)
	must(quant.EncodeFloats(m.scales, scales, dtype(f.scales)))
	must(quant.EncodeFloats(m.biases, biases, dtype(f.scales)))
	// The exact values: stored (rounded) scales and biases, codes as packed.
	s, b := make([]float32, groups), make([]float32, groups)
	must(quant.DecodeFloats(s, m.scales, dtype(f.scales)))
	must(quant.DecodeFloats(b, m.biases, dtype(f.scales)))
	wpr := quant.WordsPerRow(cols, f.bits)
	codes := make([]uint8, cols)
	m.w = make([]float64, rows*cols)
	for row := 0; row < rows; row++ {
		quant.UnpackCodes(codes, words[row*wpr:(row+1)*wpr], f.bits)
		for c, q := range codes {
			g := row*(cols/f.group) + c/f.group
			m.w[row*cols+c] = float64(s[g])*float64(q) + float64(b[g])
		}
	}
	return m
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}
