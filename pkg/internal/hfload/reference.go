package hfload

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/fm-moe/fm/pkg/safetensors"
)

// Reference is an opened reference.safetensors (transformers outputs).
type Reference struct{ f *safetensors.File }

// OpenReference opens a reference file.
func OpenReference(path string) (*Reference, error) {
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, err
	}
	return &Reference{f}, nil
}

// Close closes the file.
func (r *Reference) Close() error { return r.f.Close() }

// Has reports whether the named tensor exists.
func (r *Reference) Has(name string) bool { return r.f.Tensor(name) != nil }

// IDs reads an I64 vector of token ids.
func (r *Reference) IDs(name string) ([]int, error) {
	t := r.f.Tensor(name)
	if t == nil {
		return nil, fmt.Errorf("%s: tensor %q missing", r.f.Path, name)
	}
	if t.DType != safetensors.I64 {
		return nil, fmt.Errorf("%s: tensor %q: want I64, got %s", r.f.Path, name, t.DType)
	}
	b, err := t.ReadAll()
	if err != nil {
		return nil, err
	}
	ids := make([]int, len(b)/8)
	for i := range ids {
		ids[i] = int(int64(binary.LittleEndian.Uint64(b[8*i:])))
	}
	return ids, nil
}

// F32 reads an F32 tensor and its shape.
func (r *Reference) F32(name string) ([]float32, []int64, error) {
	t := r.f.Tensor(name)
	if t == nil {
		return nil, nil, fmt.Errorf("%s: tensor %q missing", r.f.Path, name)
	}
	if t.DType != safetensors.F32 {
		return nil, nil, fmt.Errorf("%s: tensor %q: want F32, got %s", r.f.Path, name, t.DType)
	}
	b, err := t.ReadAll()
	if err != nil {
		return nil, nil, err
	}
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v, t.Shape, nil
}

// Prompt is one reference case: p{i}.ids and the transformers logits of one
// full forward over them, p{i}.logits (row t follows token t).
type Prompt struct {
	IDs    []int
	Logits []float32
}

// ReadPrompts opens the reference file at path, reads its prompts and closes
// it (the prompts are copies).
func ReadPrompts(path string) ([]Prompt, error) {
	r, err := OpenReference(path)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return r.Prompts()
}

// Prompts reads p0, p1, … for as long as they exist.
func (r *Reference) Prompts() ([]Prompt, error) {
	var out []Prompt
	for p := 0; r.Has(fmt.Sprintf("p%d.ids", p)); p++ {
		ids, err := r.IDs(fmt.Sprintf("p%d.ids", p))
		if err != nil {
			return nil, err
		}
		lg, _, err := r.F32(fmt.Sprintf("p%d.logits", p))
		if err != nil {
			return nil, err
		}
		out = append(out, Prompt{ids, lg})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no p0.ids", r.f.Path)
	}
	return out, nil
}

// RowComparison is how one row of logits compares with the reference.
type RowComparison struct {
	// RelErr is max|Δ| over the row divided by the reference row's max |logit|.
	RelErr float64
	// Argmax of the reference and of the candidate, and the reference's top-2 margin.
	RefArgmax, GotArgmax int
	Margin               float64
}

// CompareRow compares a candidate logits row with the reference row.
func CompareRow(got, ref []float32) RowComparison {
	var maxAbs, maxDiff float64
	for i := range ref {
		maxAbs = math.Max(maxAbs, math.Abs(float64(ref[i])))
		maxDiff = math.Max(maxDiff, math.Abs(float64(got[i])-float64(ref[i])))
		if math.IsNaN(float64(got[i])) {
			maxDiff = math.Inf(1)
		}
	}
	c := RowComparison{RelErr: maxDiff / maxAbs, RefArgmax: argmax(ref), GotArgmax: argmax(got)}
	second := math.Inf(-1)
	for i, v := range ref {
		if i != c.RefArgmax && float64(v) > second {
			second = float64(v)
		}
	}
	c.Margin = float64(ref[c.RefArgmax]) - second
	return c
}

// OK applies the project's exactness gate: relative error ≤ tol and the same
// argmax wherever the reference's top-2 margin exceeds 1e-3.
func (c RowComparison) OK(tol float64) bool {
	if c.RelErr > tol {
		return false
	}
	return c.Margin <= 1e-3 || c.RefArgmax == c.GotArgmax
}

func argmax(v []float32) int {
	best := 0
	for i, x := range v {
		if x > v[best] {
			best = i
		}
	}
	return best
}

// KL is the KL divergence KL(p_ref ‖ p_got) of the softmaxes of two logit rows.
func KL(got, ref []float32) float64 {
	lse := func(v []float32) float64 {
		mx := math.Inf(-1)
		for _, x := range v {
			mx = math.Max(mx, float64(x))
		}
		var s float64
		for _, x := range v {
			s += math.Exp(float64(x) - mx)
		}
		return mx + math.Log(s)
	}
	lr, lg := lse(ref), lse(got)
	var kl float64
	for i := range ref {
		lp := float64(ref[i]) - lr
		kl += math.Exp(lp) * (lp - (float64(got[i]) - lg))
	}
	return kl
}
