package checkpoint

import (
	"context"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fm-moe/fm/pkg/layout"
	"github.com/fm-moe/fm/pkg/safetensors"
)

const testdata = "../../testdata/"

// goldenSources are the checkpoints every conversion test runs on.
var goldenSources = []struct{ name, dir string }{
	{"qwen35moe-hf", testdata + "golden/qwen35moe-tiny/hf"},
	{"qwen35moe-mlx4", testdata + "golden/qwen35moe-tiny/mlx4"},
	{"qwen3next-hf", testdata + "golden/qwen3next-tiny/hf"},
	{"qwen3next-mlx4", testdata + "golden/qwen3next-tiny/mlx4"},
	{"qwen3moe-hf", testdata + "golden/qwen3moe-tiny/hf"},
	{"qwen3moe-mlx4", testdata + "golden/qwen3moe-tiny/mlx4"},
	{"tiny-code", testdata + "models/tiny-code"},
}

// source gives tests independent access to a checkpoint's tensors by name.
type source struct {
	t  *testing.T
	st *safetensors.Checkpoint
}

func openSource(t *testing.T, dir string) *source {
	t.Helper()
	st, err := safetensors.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &source{t: t, st: st}
}

// find returns the source tensor of a canonical module name and suffix (""
// for A_log / dt_bias), trying every prefix the schemes use.
func (s *source) find(module, suffix string) *safetensors.Tensor {
	for _, pre := range []string{"model.", "model.language_model.", "language_model.model.", "", "language_model."} {
		n := pre + module
		if suffix != "" {
			n += "." + suffix
		}
		if t := s.st.Tensor(n); t != nil {
			return t
		}
	}
	return nil
}

func (s *source) bytes(t *safetensors.Tensor) []byte {
	s.t.Helper()
	b, err := t.ReadAll()
	if err != nil {
		s.t.Fatal(err)
	}
	return b
}

// rowsOf returns rows [first, first+n) of a tensor viewed as total rows.
func rowsOf(b []byte, total, first, n int64) []byte {
	rb := int64(len(b)) / total
	return b[first*rb : (first+n)*rb]
}

// nextSplitRows de-interleaves Qwen3-Next's in_proj_qkvz / in_proj_ba bytes the
// way HF's fix_query_key_value_ordering views them: per key head i a group
// [q_i | k_i | v_i | z_i] (resp. [b_i | a_i]); qkv = all q, all k, all v.
func nextSplitRows(qkvz, ba []byte, c *layout.Config) (qkv, z, b, a []byte) {
	nk, dk, dv := int64(c.LinearNumKeyHeads), int64(c.LinearKeyHeadDim), int64(c.LinearValueHeadDim)
	r := int64(c.LinearNumValueHeads) / nk
	G := 2*dk + 2*r*dv
	rows := nk * G
	var qs, ks, vs []byte
	for i := range nk {
		g := rowsOf(qkvz, rows, i*G, G)
		qs = append(qs, rowsOf(g, G, 0, dk)...)
		ks = append(ks, rowsOf(g, G, dk, dk)...)
		vs = append(vs, rowsOf(g, G, 2*dk, r*dv)...)
		z = append(z, rowsOf(g, G, 2*dk+r*dv, r*dv)...)
		h := rowsOf(ba, nk*2*r, i*2*r, 2*r)
		b = append(b, rowsOf(h, 2*r, 0, r)...)
		a = append(a, rowsOf(h, 2*r, r, r)...)
	}
	return append(append(qs, ks...), vs...), z, b, a
}

func f32s(b []byte) []float32 {
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

// convert runs Extract and Repack with the given bits into a fresh directory.
func convert(t *testing.T, src string, bits int) string {
	t.Helper()
	out := t.TempDir()
	ctx := context.Background()
	if _, err := Extract(ctx, src, out, Options{Bits: bits}); err != nil {
		t.Fatalf("extract: %v", err)
	}
	if _, err := Repack(ctx, src, out, Options{Bits: bits, Jobs: 3}); err != nil {
		t.Fatalf("repack: %v", err)
	}
	return out
}

// copyDir copies a checkpoint directory's files (for tests that damage it).
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.IsDir() || strings.HasPrefix(e.Name(), "reference") || e.Name() == "heldout.txt" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}
