// Package hfload is a test helper: it builds a model's weights in the prepared
// directory's conventions (canonical tensor names, folded 1+w norms, split
// Qwen3-Next projections, per-expert files with a component table) straight
// from a HuggingFace or MLX checkpoint directory, in memory. It lets the runtime
// math be checked against the golden references without the converter.
// Commands never use it.
package hfload

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/fm-moe/fm/pkg/backend/cpu"
	"github.com/fm-moe/fm/pkg/layout"
	"github.com/fm-moe/fm/pkg/safetensors"
)

// Checkpoint is a loaded checkpoint in canonical form.
type Checkpoint struct {
	Config layout.Config
	// Format is "hf" or "mlx".
	Format string

	blob    []byte
	tensors map[string]*layout.Tensor
	set     *layout.ExpertSet
	experts [][][]byte // [layer][expert] expert file bytes; nil for dense layers
}

// Tensor returns the named dense tensor, or nil.
func (c *Checkpoint) Tensor(name string) *layout.Tensor { return c.tensors[name] }

// Bytes returns the bytes of a part of the dense blob.
func (c *Checkpoint) Bytes(p layout.Part) []byte { return c.blob[p.Offset : p.Offset+p.Size] }

// TensorNames lists the dense tensors.
func (c *Checkpoint) TensorNames() []string {
	names := make([]string, 0, len(c.tensors))
	for n := range c.tensors {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ExpertSet describes the in-memory expert files.
func (c *Checkpoint) ExpertSet() *layout.ExpertSet { return c.set }

// FetchesInstantly implements model.InstantExperts: the files are in memory.
func (c *Checkpoint) FetchesInstantly() bool { return true }

// FetchExperts stores the expert files of one layer in data (model.Experts).
func (c *Checkpoint) FetchExperts(ctx context.Context, layer int, ids []int, data [][]byte) (func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if layer < 0 || layer >= len(c.experts) || c.experts[layer] == nil {
		return nil, fmt.Errorf("layer %d has no routed experts", layer)
	}
	if len(data) != len(ids) {
		return nil, fmt.Errorf("layer %d: %d destinations for %d experts", layer, len(data), len(ids))
	}
	for i, id := range ids {
		if id < 0 || id >= len(c.experts[layer]) {
			return nil, fmt.Errorf("layer %d: expert %d out of range", layer, id)
		}
		data[i] = c.experts[layer][id]
	}
	return noRelease, nil
}

// noRelease is the release of files that live as long as the checkpoint.
func noRelease() {}

// module is one weight: a plain tensor, or an MLX quantized triple.
type module struct {
	src                    string // checkpoint name without .weight (MLX quantization key)
	weight, scales, biases *safetensors.Tensor
}

type quantInfo struct{ bits, gs int }

type loader struct {
	ck     *safetensors.Checkpoint
	cfg    layout.Config
	mlx    bool
	quant  jsonObj
	out    *Checkpoint
	expert map[[2]int]map[string]*array // (layer, expert) → component → array
}

// array is a logical matrix with its bytes (quantized or float).
type array struct {
	name       string
	shape      []int64 // logical
	dtype      string
	data       []byte
	dataShape  []int64
	q          *quantInfo
	sdtype     string
	scales     []byte
	biases     []byte
	scaleShape []int64
}

var (
	perExpertRe = regexp.MustCompile(`^layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)$`)
	fusedRe     = regexp.MustCompile(`^layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)$`)
	switchRe    = regexp.MustCompile(`^layers\.(\d+)\.mlp\.switch_mlp\.(gate_proj|up_proj|down_proj)$`)
)

// Load reads dir (an HF bf16 or MLX quantized checkpoint).
func Load(dir string) (*Checkpoint, error) {
	cfg, top, err := parseConfig(dir)
	if err != nil {
		return nil, err
	}
	ck, err := safetensors.OpenDir(dir)
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	l := &loader{ck: ck, cfg: cfg, quant: top.obj("quantization"), expert: map[[2]int]map[string]*array{}}
	l.mlx = l.quant != nil
	l.out = &Checkpoint{Config: cfg, Format: "hf", tensors: map[string]*layout.Tensor{}}
	if l.mlx {
		l.out.Format = "mlx"
	}
	mods := map[string]*module{}
	for _, name := range ck.Names() {
		canon, suffix, ok := canonicalName(name)
		if !ok {
			continue
		}
		m := mods[canon]
		if m == nil {
			m = &module{}
			mods[canon] = m
		}
		t := ck.Tensor(name)
		switch suffix {
		case "scales":
			m.scales = t
		case "biases":
			m.biases = t
		default:
			m.weight = t
			m.src = strings.TrimSuffix(name, ".weight")
		}
	}
	names := make([]string, 0, len(mods))
	for n := range mods {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := l.module(n, mods[n]); err != nil {
			return nil, fmt.Errorf("%s: %w", dir, err)
		}
	}
	if err := l.buildExperts(); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return l.out, nil
}

// canonicalName maps a checkpoint name to (canonical module, suffix); ok is
// false for tensors inference does not use (vision tower, MTP head).
func canonicalName(name string) (string, string, bool) {
	for _, skip := range []string{"model.visual.", "vision_tower.", "mtp.", "model.mtp.", "language_model.mtp."} {
		if strings.HasPrefix(name, skip) {
			return "", "", false
		}
	}
	if strings.Contains(name, "rotary_emb.") {
		return "", "", false
	}
	base := name
	switch {
	case strings.HasPrefix(base, "model.language_model."):
		base = strings.TrimPrefix(base, "model.language_model.")
	case strings.HasPrefix(base, "language_model.model."):
		base = strings.TrimPrefix(base, "language_model.model.")
	case strings.HasPrefix(base, "language_model.lm_head."):
		base = strings.TrimPrefix(base, "language_model.")
	case strings.HasPrefix(base, "model."):
		base = strings.TrimPrefix(base, "model.")
	case strings.HasPrefix(base, "lm_head."):
	default:
		return "", "", false
	}
	for _, s := range []string{"weight", "scales", "biases"} {
		if strings.HasSuffix(base, "."+s) {
			return strings.TrimSuffix(base, "."+s), s, true
		}
	}
	return base, "", true
}

func (l *loader) read(t *safetensors.Tensor) ([]byte, error) {
	if t == nil {
		return nil, nil
	}
	return t.ReadAll()
}

// toArray reads a module as a logical matrix or vector.
func (l *loader) toArray(name string, m *module) (*array, error) {
	if m.weight == nil {
		return nil, fmt.Errorf("tensor %q: no weight", name)
	}
	data, err := l.read(m.weight)
	if err != nil {
		return nil, err
	}
	a := &array{name: name, dtype: string(m.weight.DType), data: data, dataShape: m.weight.Shape, shape: m.weight.Shape}
	if m.scales == nil {
		return a, nil
	}
	if m.biases == nil {
		return nil, fmt.Errorf("tensor %q: scales without biases", name)
	}
	q := l.quantFor(m.src)
	if a.scales, err = l.read(m.scales); err != nil {
		return nil, err
	}
	if a.biases, err = l.read(m.biases); err != nil {
		return nil, err
	}
	a.q = &q
	a.sdtype = string(m.scales.DType)
	a.scaleShape = m.scales.Shape
	shape := append([]int64(nil), m.weight.Shape...)
	last := len(shape) - 1
	shape[last] = shape[last] * 32 / int64(q.bits)
	if sc := m.scales.Shape[len(m.scales.Shape)-1] * int64(q.gs); sc != shape[last] {
		return nil, fmt.Errorf("tensor %q: %d-bit packed width %d implies %d columns, scales imply %d", name, q.bits, m.weight.Shape[last], shape[last], sc)
	}
	a.shape = shape
	return a, nil
}

func (l *loader) quantFor(src string) quantInfo {
	q := quantInfo{bits: 4, gs: 64}
	if v, ok := l.quant.num("bits"); ok {
		q.bits = int(v)
	}
	if v, ok := l.quant.num("group_size"); ok {
		q.gs = int(v)
	}
	if o := l.quant.obj(src); o != nil {
		if v, ok := o.num("bits"); ok {
			q.bits = int(v)
		}
		if v, ok := o.num("group_size"); ok {
			q.gs = int(v)
		}
	}
	return q
}

func (l *loader) module(name string, m *module) error {
	if g := perExpertRe.FindStringSubmatch(name); g != nil {
		a, err := l.toArray(name, m)
		if err != nil {
			return err
		}
		layer, _ := strconv.Atoi(g[1])
		e, _ := strconv.Atoi(g[2])
		l.addExpert(layer, e, g[3], a)
		return nil
	}
	if g := fusedRe.FindStringSubmatch(name); g != nil {
		return l.splitStacked(name, m, g[1], g[2])
	}
	if g := switchRe.FindStringSubmatch(name); g != nil {
		return l.splitStacked(name, m, g[1], g[2])
	}
	a, err := l.toArray(name, m)
	if err != nil {
		return err
	}
	switch {
	case strings.HasSuffix(name, ".in_proj_qkvz"):
		return l.splitQKVZ(name, a)
	case strings.HasSuffix(name, ".in_proj_ba"):
		return l.splitBA(name, a)
	case strings.HasSuffix(name, ".conv1d"):
		if len(a.shape) == 3 {
			a.shape = []int64{a.shape[0], a.shape[1] * a.shape[2]}
			a.dataShape = a.shape
		}
	case isNorm(name):
		return l.addNorm(name, a)
	}
	l.addDense(a)
	return nil
}

func isNorm(name string) bool {
	return name == "norm" || strings.HasSuffix(name, "layernorm") || strings.HasSuffix(name, ".q_norm") ||
		strings.HasSuffix(name, ".k_norm") || strings.HasSuffix(name, ".linear_attn.norm")
}

// addNorm stores a norm weight as the plain F32 multiplier: float32(1 + w) for
// the zero-centred norms of an HF hybrid checkpoint (MLX already stores 1+w).
func (l *loader) addNorm(name string, a *array) error {
	f, err := decode(a)
	if err != nil {
		return err
	}
	zeroCentred := !l.mlx && l.cfg.Arch != layout.ArchQwen3MoE && !strings.HasSuffix(name, ".linear_attn.norm")
	if zeroCentred {
		for i := range f {
			f[i] = 1 + f[i]
		}
	}
	a.dtype = "F32"
	a.data = append([]byte(nil), cpu.F32Bytes(f)...)
	a.dataShape = a.shape
	l.addDense(a)
	return nil
}

func decode(a *array) ([]float32, error) {
	var f cpu.Format
	switch a.dtype {
	case "F32":
		f = cpu.F32
	case "BF16":
		f = cpu.BF16
	case "F16":
		f = cpu.F16
	default:
		return nil, fmt.Errorf("tensor %q: dtype %s is not a float", a.name, a.dtype)
	}
	return cpu.DecodeFloats(a.data, f)
}

func (l *loader) part(dtype string, shape []int64, data []byte) layout.Part {
	for len(l.out.blob)%64 != 0 {
		l.out.blob = append(l.out.blob, 0)
	}
	p := layout.Part{DType: dtype, Shape: shape, Offset: int64(len(l.out.blob)), Size: int64(len(data))}
	l.out.blob = append(l.out.blob, data...)
	return p
}

func (l *loader) addDense(a *array) {
	t := &layout.Tensor{Name: a.name, Shape: a.shape, Data: l.part(a.dtype, a.dataShape, a.data)}
	if a.q != nil {
		t.Quant = &layout.Quant{Bits: a.q.bits, GroupSize: a.q.gs,
			Scales: l.part(a.sdtype, a.scaleShape, a.scales),
			Biases: l.part(a.sdtype, a.scaleShape, a.biases)}
	}
	l.out.tensors[a.name] = t
}

// rowsOf returns a copy of the listed rows of a 2-D array (any packing).
func rowsOf(a *array, rows []int, name string) *array {
	n := int(a.shape[0])
	pick := func(b []byte) []byte {
		rb := len(b) / n
		out := make([]byte, 0, len(rows)*rb)
		for _, r := range rows {
			out = append(out, b[r*rb:(r+1)*rb]...)
		}
		return out
	}
	o := &array{name: name, dtype: a.dtype, q: a.q, sdtype: a.sdtype}
	o.shape = []int64{int64(len(rows)), a.shape[1]}
	o.dataShape = []int64{int64(len(rows)), a.dataShape[1]}
	o.data = pick(a.data)
	if a.q != nil {
		o.scaleShape = []int64{int64(len(rows)), a.scaleShape[1]}
		o.scales, o.biases = pick(a.scales), pick(a.biases)
	}
	return o
}

// splitQKVZ de-interleaves Qwen3-Next's in_proj_qkvz (reference-math.md §3.3).
func (l *loader) splitQKVZ(name string, a *array) error {
	c := l.cfg
	nk, dk, dv := c.LinearNumKeyHeads, c.LinearKeyHeadDim, c.LinearValueHeadDim
	r := c.LinearNumValueHeads / nk
	kd := nk * dk
	G := 2*dk + 2*r*dv
	if int(a.shape[0]) != nk*G {
		return fmt.Errorf("tensor %q: %d rows, want %d", name, a.shape[0], nk*G)
	}
	qkv := make([]int, 2*kd+r*nk*dv)
	z := make([]int, r*nk*dv)
	for i := 0; i < nk; i++ {
		for t := 0; t < dk; t++ {
			qkv[i*dk+t] = i*G + t
			qkv[kd+i*dk+t] = i*G + dk + t
		}
		for t := 0; t < r*dv; t++ {
			qkv[2*kd+i*r*dv+t] = i*G + 2*dk + t
			z[i*r*dv+t] = i*G + 2*dk + r*dv + t
		}
	}
	base := strings.TrimSuffix(name, "in_proj_qkvz")
	l.addDense(rowsOf(a, qkv, base+"in_proj_qkv"))
	l.addDense(rowsOf(a, z, base+"in_proj_z"))
	return nil
}

func (l *loader) splitBA(name string, a *array) error {
	c := l.cfg
	nk := c.LinearNumKeyHeads
	r := c.LinearNumValueHeads / nk
	if int(a.shape[0]) != 2*nk*r {
		return fmt.Errorf("tensor %q: %d rows, want %d", name, a.shape[0], 2*nk*r)
	}
	b := make([]int, nk*r)
	av := make([]int, nk*r)
	for i := 0; i < nk; i++ {
		for t := 0; t < r; t++ {
			b[i*r+t] = i*2*r + t
			av[i*r+t] = i*2*r + r + t
		}
	}
	base := strings.TrimSuffix(name, "in_proj_ba")
	l.addDense(rowsOf(a, b, base+"in_proj_b"))
	l.addDense(rowsOf(a, av, base+"in_proj_a"))
	return nil
}

// splitStacked splits a 3-D expert tensor ([E, rows, cols], HF fused or MLX
// switch_mlp) into per-expert arrays.
func (l *loader) splitStacked(name string, m *module, layerStr, comp string) error {
	a, err := l.toArray(name, m)
	if err != nil {
		return err
	}
	if len(a.shape) != 3 {
		return fmt.Errorf("tensor %q: shape %v, want 3-D [experts, rows, cols]", name, a.shape)
	}
	layer, _ := strconv.Atoi(layerStr)
	E := int(a.shape[0])
	slice := func(b []byte, e int) []byte {
		if b == nil {
			return nil
		}
		n := len(b) / E
		return b[e*n : (e+1)*n]
	}
	for e := 0; e < E; e++ {
		ea := &array{dtype: a.dtype, q: a.q, sdtype: a.sdtype,
			shape: a.shape[1:], dataShape: a.dataShape[1:], data: slice(a.data, e),
			scales: slice(a.scales, e), biases: slice(a.biases, e)}
		if a.q != nil {
			ea.scaleShape = a.scaleShape[1:]
		}
		if comp == "gate_up_proj" {
			// Gate rows first, then up rows (reference-math.md §2.1).
			I := int(ea.shape[0]) / 2
			gate := rowsOf(ea, seq(0, I), "")
			up := rowsOf(ea, seq(I, 2*I), "")
			l.addExpert(layer, e, "gate_proj", gate)
			l.addExpert(layer, e, "up_proj", up)
			continue
		}
		l.addExpert(layer, e, comp, ea)
	}
	return nil
}

func seq(lo, hi int) []int {
	s := make([]int, 0, hi-lo)
	for i := lo; i < hi; i++ {
		s = append(s, i)
	}
	return s
}

func (l *loader) addExpert(layer, e int, comp string, a *array) {
	k := [2]int{layer, e}
	if l.expert[k] == nil {
		l.expert[k] = map[string]*array{}
	}
	l.expert[k][comp] = a
}

var componentNames = []string{"gate_proj", "up_proj", "down_proj"}

// buildExperts lays every expert out as one file: for each component its data,
// then its scales and biases, each at a 64-byte aligned offset.
func (l *loader) buildExperts() error {
	c := l.cfg
	l.out.experts = make([][][]byte, c.NumLayers)
	var set *layout.ExpertSet
	for layer := 0; layer < c.NumLayers; layer++ {
		if !c.SparseLayers[layer] {
			continue
		}
		files := make([][]byte, c.NumExperts)
		for e := 0; e < c.NumExperts; e++ {
			comps := l.expert[[2]int{layer, e}]
			var file []byte
			put := func(dtype string, shape []int64, data []byte) layout.Part {
				for len(file)%64 != 0 {
					file = append(file, 0)
				}
				p := layout.Part{DType: dtype, Shape: shape, Offset: int64(len(file)), Size: int64(len(data))}
				file = append(file, data...)
				return p
			}
			var table []layout.Tensor
			for _, name := range componentNames {
				a := comps[name]
				if a == nil {
					return fmt.Errorf("layer %d expert %d: component %s missing", layer, e, name)
				}
				t := layout.Tensor{Name: name, Shape: a.shape, Data: put(a.dtype, a.dataShape, a.data)}
				if a.q != nil {
					t.Quant = &layout.Quant{Bits: a.q.bits, GroupSize: a.q.gs,
						Scales: put(a.sdtype, a.scaleShape, a.scales), Biases: put(a.sdtype, a.scaleShape, a.biases)}
				}
				table = append(table, t)
			}
			// Whole files are read with O_DIRECT, so their size is page aligned.
			for len(file)%layout.ExpertAlignment != 0 {
				file = append(file, 0)
			}
			if set == nil {
				set = &layout.ExpertSet{Dir: layout.ExpertsDir, Bits: 16, NameFormat: "layer_%02d_expert_%04d.bin",
					FileSize: int64(len(file)), Components: table}
				if q := table[0].Quant; q != nil {
					set.Bits, set.GroupSize = q.Bits, q.GroupSize
				}
			} else if int64(len(file)) != set.FileSize {
				return fmt.Errorf("layer %d expert %d: file of %d bytes, others have %d", layer, e, len(file), set.FileSize)
			}
			files[e] = file
		}
		l.out.experts[layer] = files
	}
	l.out.set = set
	return nil
}
