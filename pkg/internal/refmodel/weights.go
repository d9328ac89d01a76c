package refmodel

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"

	"github.com/fm-moe/fm/pkg/safetensors"
)

// matrix is a row-major [rows, cols] weight, y = W·x.
type matrix struct {
	rows, cols int
	w          []float32
}

// apply returns W·x in float64.
func (m matrix) apply(x []float64) []float64 {
	if len(x) != m.cols {
		panic(fmt.Sprintf("refmodel: matrix [%d, %d] applied to a vector of %d", m.rows, m.cols, len(x)))
	}
	y := make([]float64, m.rows)
	for r := range y {
		row := m.w[r*m.cols : (r+1)*m.cols]
		// Four partial sums only to keep the tests fast; float64 makes the
		// order immaterial at the tolerances used.
		var s0, s1, s2, s3 float64
		c := 0
		for ; c+4 <= len(row); c += 4 {
			s0 += float64(row[c]) * x[c]
			s1 += float64(row[c+1]) * x[c+1]
			s2 += float64(row[c+2]) * x[c+2]
			s3 += float64(row[c+3]) * x[c+3]
		}
		for ; c < len(row); c++ {
			s0 += float64(row[c]) * x[c]
		}
		y[r] = (s0 + s1) + (s2 + s3)
	}
	return y
}

// source reads tensors of one checkpoint by name, dequantizing MLX modules.
type source struct {
	st  *safetensors.Checkpoint
	cfg *Config
	mlx bool
	// text is the prefix of the text tower ("model.", "model.language_model."
	// or "language_model.model."); head is the name of the output matrix
	// module without ".weight".
	text, head string
}

func openSource(dir string, cfg *Config) (*source, error) {
	st, err := safetensors.OpenDir(dir)
	if err != nil {
		return nil, err
	}
	s := &source{st: st, cfg: cfg}
	for _, p := range []string{"model.language_model.", "language_model.model.", "model."} {
		if st.Tensor(p+"embed_tokens.weight") != nil {
			s.text = p
			break
		}
	}
	if s.text == "" {
		st.Close()
		return nil, fmt.Errorf("%s: no embed_tokens.weight under model., model.language_model. or language_model.model.", dir)
	}
	s.mlx = cfg.quantization != nil || strings.HasPrefix(s.text, "language_model.") ||
		st.Tensor(s.text+"embed_tokens.scales") != nil
	s.head = "lm_head"
	if strings.HasPrefix(s.text, "language_model.") {
		s.head = "language_model.lm_head"
	}
	return s, nil
}

func (s *source) close() error { return s.st.Close() }

func (s *source) has(name string) bool { return s.st.Tensor(name) != nil }

// floats decodes a float tensor of any float dtype.
func (s *source) floats(name string) ([]float32, []int64, error) {
	t := s.st.Tensor(name)
	if t == nil {
		return nil, nil, fmt.Errorf("%s: tensor %q missing", s.st.Dir, name)
	}
	b, err := t.ReadAll()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: tensor %q: %w", s.st.Dir, name, err)
	}
	out := make([]float32, t.NumElements())
	switch t.DType {
	case safetensors.BF16:
		for i := range out {
			out[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16)
		}
	case safetensors.F16:
		for i := range out {
			out[i] = half(binary.LittleEndian.Uint16(b[2*i:]))
		}
	case safetensors.F32:
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	default:
		return nil, nil, fmt.Errorf("%s: tensor %q: dtype %s is not a float", s.st.Dir, name, t.DType)
	}
	return out, t.Shape, nil
}

// half decodes an IEEE binary16 value.
func half(h uint16) float32 {
	sign := float32(1)
	if h&0x8000 != 0 {
		sign = -1
	}
	exp := int(h>>10) & 0x1f
	frac := float64(h & 0x3ff)
	switch exp {
	case 0:
		return sign * float32(math.Ldexp(frac, -24))
	case 0x1f:
		if frac == 0 {
			return sign * float32(math.Inf(1))
		}
		return float32(math.NaN())
	}
	return sign * float32(math.Ldexp(1+frac/1024, exp-15))
}

// vector reads a 1-D (or [1, n]) float tensor as float64.
func (s *source) vector(name string, n int) ([]float64, error) {
	v, _, err := s.floats(name)
	if err != nil {
		return nil, err
	}
	if len(v) != n {
		return nil, fmt.Errorf("%s: tensor %q: want %d values, got %d", s.st.Dir, name, n, len(v))
	}
	out := make([]float64, n)
	for i, x := range v {
		out[i] = float64(x)
	}
	return out, nil
}

// stack reads the module (name without ".weight") as `count` stacked
// [rows, cols] matrices: a float tensor of that shape, or an MLX quantized
// triple .weight/.scales/.biases.
func (s *source) stack(module string, count, rows, cols int) ([]matrix, error) {
	var w []float32
	if s.has(module + ".scales") {
		var err error
		if w, err = s.dequantize(module, count*rows, cols); err != nil {
			return nil, err
		}
	} else {
		name := module + ".weight"
		if !s.has(name) {
			name = module // fused HF experts carry no .weight suffix
		}
		v, shape, err := s.floats(name)
		if err != nil {
			return nil, err
		}
		if len(v) != count*rows*cols || shape[len(shape)-1] != int64(cols) {
			return nil, fmt.Errorf("%s: tensor %q: want %d×[%d, %d], got shape %v", s.st.Dir, name, count, rows, cols, shape)
		}
		w = v
	}
	out := make([]matrix, count)
	for i := range out {
		out[i] = matrix{rows, cols, w[i*rows*cols : (i+1)*rows*cols]}
	}
	return out, nil
}

func (s *source) matrix(module string, rows, cols int) (matrix, error) {
	m, err := s.stack(module, 1, rows, cols)
	if err != nil {
		return matrix{}, err
	}
	return m[0], nil
}

// dequantize expands an MLX affine-quantized module: element c of a row is
// bits [c·b, (c+1)·b) of the row's little-endian uint32 words, and
// ŵ = scale·q + bias per group of groupSize columns, in float32 as mlx and the
// golden harness compute it (reference-math.md §4.2–4.3).
func (s *source) dequantize(module string, rows, cols int) ([]float32, error) {
	bits, gs := s.cfg.quantFor(module)
	if bits == 0 || gs == 0 {
		return nil, fmt.Errorf("%s: module %q is quantized but config.json has no quantization", s.st.Dir, module)
	}
	if 32%bits != 0 || cols%gs != 0 {
		return nil, fmt.Errorf("%s: module %q: %d bits, group %d over %d columns not supported", s.st.Dir, module, bits, gs, cols)
	}
	wt := s.st.Tensor(module + ".weight")
	if wt == nil || wt.DType != safetensors.U32 {
		return nil, fmt.Errorf("%s: tensor %q: want U32 packed codes", s.st.Dir, module+".weight")
	}
	words, err := wt.ReadAll()
	if err != nil {
		return nil, err
	}
	scales, _, err := s.floats(module + ".scales")
	if err != nil {
		return nil, err
	}
	biases, _, err := s.floats(module + ".biases")
	if err != nil {
		return nil, err
	}
	wordsPerRow := cols * bits / 32
	groups := cols / gs
	if len(words) != rows*wordsPerRow*4 || len(scales) != rows*groups || len(biases) != rows*groups {
		return nil, fmt.Errorf("%s: module %q: want [%d, %d] at %d bits, group %d; got %d code bytes, %d scales, %d biases",
			s.st.Dir, module, rows, cols, bits, gs, len(words), len(scales), len(biases))
	}
	out := make([]float32, rows*cols)
	mask := uint32(1)<<bits - 1
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			bit := c * bits
			word := binary.LittleEndian.Uint32(words[4*(r*wordsPerRow+bit/32):])
			q := float32((word >> (bit % 32)) & mask)
			g := r*groups + c/gs
			out[r*cols+c] = float32(scales[g]*q) + biases[g]
		}
	}
	return out, nil
}
