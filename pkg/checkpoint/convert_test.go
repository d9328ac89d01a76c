package checkpoint

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/fm-moe/fm/pkg/layout"
)

// Every golden checkpoint, converted in its own format (--bits 16 from HF,
// native from MLX), must read back bit-exactly: each dense tensor equals the
// source bytes (de-interleaved for Qwen3-Next, norms as f32 1+w or w), each
// expert file holds the source slices at the manifest's offsets, and every file
// verifies.
func TestConvertReadBack(t *testing.T) {
	for _, g := range goldenSources {
		t.Run(g.name, func(t *testing.T) {
			out := convert(t, g.dir, 0)
			problems, err := layout.Verify(context.Background(), out, 0, nil)
			if err != nil || len(problems) > 0 {
				t.Fatalf("verify: %v %v", problems, err)
			}
			d, err := layout.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			m := d.Manifest
			src := openSource(t, g.dir)
			mlx := m.Source.Format == FormatMLX
			if want := g.name[len(g.name)-4:] == "mlx4"; mlx != want {
				t.Fatalf("format %s", m.Source.Format)
			}
			checkDense(t, src, d, mlx)
			checkExperts(t, src, out, m, mlx)
			for _, f := range []string{"tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"} {
				a, _ := os.ReadFile(filepath.Join(g.dir, f))
				b, err := os.ReadFile(filepath.Join(out, f))
				if err != nil || !bytes.Equal(a, b) {
					t.Fatalf("%s not copied verbatim: %v", f, err)
				}
			}
		})
	}
}

func checkDense(t *testing.T, src *source, d *layout.Dir, mlx bool) {
	t.Helper()
	m := d.Manifest
	cfg := &m.Config
	var prev int64 = -1
	for _, tt := range m.Tensors {
		for _, p := range tt.Parts() {
			if p.Offset%layout.DenseAlignment != 0 || p.Offset <= prev {
				t.Fatalf("%s: part at %d not aligned or out of order", tt.Name, p.Offset)
			}
			prev = p.Offset
		}
		parts := [][]byte{d.Bytes(tt.Data)}
		suffixes := []string{"weight"}
		if tt.Quant != nil {
			parts = append(parts, d.Bytes(tt.Quant.Scales), d.Bytes(tt.Quant.Biases))
			suffixes = append(suffixes, "scales", "biases")
		}
		leaf := tt.Name[bytes.LastIndexByte([]byte(tt.Name), '.')+1:]
		for i, suffix := range suffixes {
			var want []byte
			switch {
			case leaf == "A_log" || leaf == "dt_bias":
				want = src.bytes(src.find(tt.Name, ""))
			case cfg.Arch == layout.ArchQwen3Next && (leaf == "in_proj_qkv" || leaf == "in_proj_z" || leaf == "in_proj_b" || leaf == "in_proj_a"):
				base := tt.Name[:len(tt.Name)-len(leaf)]
				qkv, z, b, a := nextSplitRows(src.bytes(src.find(base+"in_proj_qkvz", suffix)), src.bytes(src.find(base+"in_proj_ba", suffix)), cfg)
				want = map[string][]byte{"in_proj_qkv": qkv, "in_proj_z": z, "in_proj_b": b, "in_proj_a": a}[leaf]
			default:
				st := src.find(tt.Name, suffix)
				if st == nil {
					t.Fatalf("%s: no source tensor", tt.Name)
				}
				want = src.bytes(st)
				if leaf == "norm" || leaf == "input_layernorm" || leaf == "post_attention_layernorm" || leaf == "q_norm" || leaf == "k_norm" {
					checkNorm(t, tt.Name, f32s(parts[0]), st.DType, want, cfg.Arch != layout.ArchQwen3MoE && !mlx && tt.Name != "" && !isGatedNorm(tt.Name))
					continue
				}
			}
			if !bytes.Equal(parts[i], want) {
				t.Fatalf("%s %s: %d bytes differ from the source's %d", tt.Name, suffix, len(parts[i]), len(want))
			}
		}
	}
}

func isGatedNorm(name string) bool { return bytes.HasSuffix([]byte(name), []byte("linear_attn.norm")) }

// checkNorm: the layout holds float32(1 + w) computed in float32 for
// zero-centred HF norms, and float32(w) otherwise (MLX's stored 1+w included).
func checkNorm(t *testing.T, name string, got []float32, dtype any, srcBytes []byte, addOne bool) {
	t.Helper()
	w := make([]float32, len(got))
	if err := decode(w, srcBytes, fmt.Sprint(dtype)); err != nil {
		t.Fatal(err)
	}
	for i := range got {
		want := w[i]
		if addOne {
			want = 1 + w[i]
		}
		if got[i] != want {
			t.Fatalf("%s[%d] = %v, want %v (source %v, add one %v)", name, i, got[i], want, w[i], addOne)
		}
	}
}

func checkExperts(t *testing.T, src *source, out string, m *layout.Manifest, mlx bool) {
	t.Helper()
	set := m.ExpertSet(layout.ExpertsDir)
	if set == nil {
		t.Fatal("no expert set")
	}
	cfg := &m.Config
	E := int64(cfg.NumExperts)
	for l := range cfg.NumLayers {
		for e := range cfg.NumExperts {
			b, err := os.ReadFile(set.Path(out, l, e))
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(b)) != set.FileSize || set.FileSize%layout.ExpertAlignment != 0 {
				t.Fatalf("layer %d expert %d: size %d", l, e, len(b))
			}
			covered := make([]bool, len(b))
			for _, c := range set.Components {
				suffixes := []string{"weight"}
				if c.Quant != nil {
					suffixes = append(suffixes, "scales", "biases")
				}
				for i, p := range c.Parts() {
					if p.Offset%layout.ExpertAlignment != 0 {
						t.Fatalf("%s part %d at %d", c.Name, i, p.Offset)
					}
					var want []byte
					if mlx {
						st := src.find(fmt.Sprintf("layers.%d.mlp.switch_mlp.%s", l, c.Name), suffixes[i])
						all := src.bytes(st)
						want = rowsOf(all, E, int64(e), 1)
					} else {
						want = src.bytes(src.find(fmt.Sprintf("layers.%d.mlp.experts.%d.%s", l, e, c.Name), "weight"))
					}
					if !bytes.Equal(b[p.Offset:p.Offset+p.Size], want) {
						t.Fatalf("layer %d expert %d %s %s differs from the source", l, e, c.Name, suffixes[i])
					}
					for j := p.Offset; j < p.Offset+p.Size; j++ {
						covered[j] = true
					}
				}
			}
			for j, c := range covered {
				if !c && b[j] != 0 {
					t.Fatalf("layer %d expert %d: padding byte %d is %d", l, e, j, b[j])
				}
			}
		}
	}
}

// TestExtractRemovesStaleTokenizerFiles: re-extracting into an existing OUT from
// a source without a chat template removes the copy the earlier source left.
func TestExtractRemovesStaleTokenizerFiles(t *testing.T) {
	src := copyDir(t, testdata+"golden/qwen3moe-tiny/hf")
	out := t.TempDir()
	ctx := context.Background()
	if _, err := Extract(ctx, src, out, Options{Bits: 16}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(out, "chat_template.jinja")); err != nil {
		t.Fatalf("first extract: %v", err)
	}
	if err := os.Remove(filepath.Join(src, "chat_template.jinja")); err != nil {
		t.Fatal(err)
	}
	if _, err := Extract(ctx, src, out, Options{Bits: 16}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(out, "chat_template.jinja")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stale chat_template.jinja: stat err = %v, want not-exist", err)
	}
	m, err := layout.ReadManifest(out)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(m.Tokenizer, "chat_template.jinja") {
		t.Errorf("manifest still lists chat_template.jinja: %v", m.Tokenizer)
	}
}
