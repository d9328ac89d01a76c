package layout

import (
	"cmp"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strings"

	"github.com/fm-moe/fm/pkg/safetensors"
)

// mulBounded returns a·b, or false when the product exceeds limit (or
// overflows int64). Manifest numbers come from a file, so every size
// computation on them must not wrap around.
func mulBounded(a, b, limit int64) (int64, bool) {
	if a < 0 || b < 0 {
		return 0, false
	}
	if a != 0 && b > limit/a {
		return 0, false
	}
	return a * b, true
}

func (p *Part) check(what string, limit int64) error {
	dt := safetensors.DType(p.DType)
	es, err := dt.Size()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	n := int64(es)
	for _, d := range p.Shape {
		if d < 0 {
			return fmt.Errorf("%s: negative dimension in shape %v", what, p.Shape)
		}
		var ok bool
		if n, ok = mulBounded(n, d, math.MaxInt64); !ok {
			return fmt.Errorf("%s: shape %v of %s overflows", what, p.Shape, p.DType)
		}
	}
	if n != p.Size {
		return fmt.Errorf("%s: shape %v of %s needs %d bytes, manifest says %d", what, p.Shape, p.DType, n, p.Size)
	}
	// Written as two comparisons so that a huge offset cannot wrap the sum.
	if p.Offset < 0 || p.Offset > limit || p.Size > limit-p.Offset {
		return fmt.Errorf("%s: bytes [%d, +%d) outside the %d-byte file", what, p.Offset, p.Size, limit)
	}
	return nil
}

// Check validates a tensor's parts against the size of the file holding them.
func (t *Tensor) Check(limit int64) error {
	if len(t.Shape) == 0 {
		return fmt.Errorf("tensor %q: empty shape", t.Name)
	}
	if err := t.Data.check(fmt.Sprintf("tensor %q data", t.Name), limit); err != nil {
		return err
	}
	if t.Quant == nil {
		if !safetensors.DType(t.Data.DType).IsFloat() {
			return fmt.Errorf("tensor %q: unquantized tensor has non-float dtype %s", t.Name, t.Data.DType)
		}
		return nil
	}
	q := t.Quant
	switch q.Bits {
	case 2, 3, 4, 5, 6, 8:
	default:
		return fmt.Errorf("tensor %q: unsupported quantization bits %d", t.Name, q.Bits)
	}
	if q.GroupSize <= 0 || len(t.Shape) != 2 || t.Shape[0] < 0 || t.Shape[1] <= 0 || t.Shape[1]%int64(q.GroupSize) != 0 {
		return fmt.Errorf("tensor %q: shape %v is not a matrix divisible by group size %d", t.Name, t.Shape, q.GroupSize)
	}
	rows, cols := t.Shape[0], t.Shape[1]
	bitsTotal, ok := mulBounded(rows, cols, math.MaxInt64/8)
	if !ok {
		return fmt.Errorf("tensor %q: shape %v overflows", t.Name, t.Shape)
	}
	want := bitsTotal * int64(q.Bits) / 8
	if t.Data.DType != "U32" || t.Data.Size != want {
		return fmt.Errorf("tensor %q: %d-bit [%d, %d] needs %d bytes of U32, manifest says %d of %s", t.Name, q.Bits, rows, cols, want, t.Data.Size, t.Data.DType)
	}
	for _, p := range []struct {
		n string
		p *Part
	}{{"scales", &q.Scales}, {"biases", &q.Biases}} {
		if err := p.p.check(fmt.Sprintf("tensor %q %s", t.Name, p.n), limit); err != nil {
			return err
		}
		if !safetensors.DType(p.p.DType).IsFloat() || int64(len(p.p.Shape)) != 2 || p.p.Shape[0] != rows || p.p.Shape[1] != cols/int64(q.GroupSize) {
			return fmt.Errorf("tensor %q: %s shape %v %s, want [%d, %d] float", t.Name, p.n, p.p.Shape, p.p.DType, rows, cols/int64(q.GroupSize))
		}
	}
	return nil
}

// plainName reports whether name is a file name without a directory part, so
// that a manifest cannot point readers (fm-infer verify) outside its directory.
func plainName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, `/\`+"\x00")
}

// expertNameFormat is the shape of ExpertSet.NameFormat (ExpertNameFormat
// writes it): fixed text around two zero-padded integers.
var expertNameFormat = regexp.MustCompile(`^layer_%0[1-9]d_expert_%0[1-9]d\.bin$`)

// checksumPattern is a manifest checksum: 32 lower-case hex digits.
var checksumPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

func (m *Manifest) validate() error {
	if m.ChecksumAlgorithm != ChecksumXXH3 {
		return fmt.Errorf("checksum_algorithm %q, want %q", m.ChecksumAlgorithm, ChecksumXXH3)
	}
	if !plainName(m.Dense.File) {
		return fmt.Errorf("dense.file %q is not a plain file name", m.Dense.File)
	}
	if m.Dense.Size < 0 {
		return fmt.Errorf("dense.size %d is negative", m.Dense.Size)
	}
	if m.Dense.Checksum != "" && !checksumPattern.MatchString(m.Dense.Checksum) {
		return fmt.Errorf("dense.checksum %q is not 32 lower-case hex digits", m.Dense.Checksum)
	}
	for _, name := range m.Tokenizer {
		if !plainName(name) {
			return fmt.Errorf("tokenizer_files: %q is not a plain file name", name)
		}
	}
	seen := map[string]bool{}
	for i := range m.Tensors {
		t := &m.Tensors[i]
		if seen[t.Name] {
			return fmt.Errorf("tensor %q listed twice", t.Name)
		}
		seen[t.Name] = true
		if err := t.Check(m.Dense.Size); err != nil {
			return fmt.Errorf("%s: %w", m.Dense.File, err)
		}
	}
	if err := checkOverlap(m.Tensors); err != nil {
		return fmt.Errorf("%s: %w", m.Dense.File, err)
	}
	dirs := map[string]bool{}
	for i := range m.Experts {
		s := &m.Experts[i]
		if !plainName(s.Dir) {
			return fmt.Errorf("expert set dir %q is not a plain directory name", s.Dir)
		}
		if dirs[s.Dir] {
			return fmt.Errorf("expert set %s listed twice", s.Dir)
		}
		dirs[s.Dir] = true
		if !expertNameFormat.MatchString(s.NameFormat) {
			return fmt.Errorf("%s: name_format %q, want layer_%%0Nd_expert_%%0Md.bin", s.Dir, s.NameFormat)
		}
		if s.FileSize <= 0 || s.FileSize%ExpertAlignment != 0 {
			return fmt.Errorf("%s: file_size %d is not a positive multiple of %d", s.Dir, s.FileSize, ExpertAlignment)
		}
		if len(s.Checksums) != m.Config.NumLayers {
			return fmt.Errorf("%s: checksums for %d layers, model has %d", s.Dir, len(s.Checksums), m.Config.NumLayers)
		}
		for l, cs := range s.Checksums {
			switch {
			case m.Config.SparseLayers[l] && len(cs) != m.Config.NumExperts:
				return fmt.Errorf("%s: layer %d has %d expert checksums, want %d", s.Dir, l, len(cs), m.Config.NumExperts)
			case !m.Config.SparseLayers[l] && len(cs) != 0:
				return fmt.Errorf("%s: layer %d has no routed experts but %d expert checksums", s.Dir, l, len(cs))
			}
			for e, sum := range cs {
				if sum != "" && !checksumPattern.MatchString(sum) {
					return fmt.Errorf("%s: layer %d expert %d: checksum %q is not 32 lower-case hex digits", s.Dir, l, e, sum)
				}
			}
		}
		if len(s.Components) != 3 {
			return fmt.Errorf("%s: %d components, want gate_proj, up_proj and down_proj", s.Dir, len(s.Components))
		}
		for _, name := range []string{"gate_proj", "up_proj", "down_proj"} {
			c := s.Component(name)
			if c == nil {
				return fmt.Errorf("%s: component %q missing", s.Dir, name)
			}
			if err := c.Check(s.FileSize); err != nil {
				return fmt.Errorf("%s: %w", s.Dir, err)
			}
		}
		if err := checkOverlap(s.Components); err != nil {
			return fmt.Errorf("%s: expert file: %w", s.Dir, err)
		}
	}
	return nil
}

// checkOverlap refuses parts that share bytes: the writers never place two
// arrays on the same bytes, so an overlap is a damaged or edited offset, and
// reading it would feed one array's bytes to another.
func checkOverlap(ts []Tensor) error {
	type span struct {
		lo, hi int64
		what   string
	}
	var spans []span
	for i := range ts {
		for j, p := range ts[i].Parts() {
			if p.Size > 0 {
				spans = append(spans, span{p.Offset, p.Offset + p.Size, fmt.Sprintf("%q %s", ts[i].Name, [...]string{"data", "scales", "biases"}[j])})
			}
		}
	}
	slices.SortFunc(spans, func(a, b span) int { return cmp.Compare(a.lo, b.lo) })
	for i := 1; i < len(spans); i++ {
		if a, b := spans[i-1], spans[i]; b.lo < a.hi {
			return fmt.Errorf("tensor %s at [%d, %d) overlaps tensor %s at [%d, %d)", b.what, b.lo, b.hi, a.what, a.lo, a.hi)
		}
	}
	return nil
}
