package checkpoint

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/fm-moe/fm/pkg/layout"
	"github.com/fm-moe/fm/pkg/safetensors"
)

// A fused-experts checkpoint (mlp.experts.gate_up_proj [E, 2I, H] with gate rows
// first, mlp.experts.down_proj [E, H, I], as official Qwen3.5 releases store
// them), made here from the per-expert golden, must give byte-identical expert
// files, quantized or not.
func TestFusedExpertsIdentical(t *testing.T) {
	const src = testdata + "golden/qwen35moe-tiny/hf"
	st, err := safetensors.OpenDir(src)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	raw, _ := os.ReadFile(src + "/config.json")
	cfg, err := ParseConfig(raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	var fused []safetensors.WriteTensor
	E, I, H := int64(cfg.NumExperts), int64(cfg.MoEIntermediateSize), int64(cfg.HiddenSize)
	read := func(name string) []byte {
		b, err := st.Tensor(name).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for l := range cfg.NumLayers {
		p := fmt.Sprintf("model.language_model.layers.%d.mlp.experts.", l)
		var gu, down []byte
		for e := range cfg.NumExperts {
			gu = append(gu, read(fmt.Sprintf("%s%d.gate_proj.weight", p, e))...)
			gu = append(gu, read(fmt.Sprintf("%s%d.up_proj.weight", p, e))...)
			down = append(down, read(fmt.Sprintf("%s%d.down_proj.weight", p, e))...)
		}
		fused = append(fused,
			safetensors.WriteTensor{Name: p + "gate_up_proj", DType: safetensors.BF16, Shape: []int64{E, 2 * I, H}, Data: gu},
			safetensors.WriteTensor{Name: p + "down_proj", DType: safetensors.BF16, Shape: []int64{E, H, I}, Data: down})
	}
	fusedDir := rewrite(t, src, func(wt *safetensors.WriteTensor) bool { return !strings.Contains(wt.Name, ".mlp.experts.") }, fused...)
	// Also with an mtp head, which must be skipped and counted.
	fusedDir2 := rewrite(t, fusedDir, nil, safetensors.WriteTensor{Name: "mtp.fc.weight", DType: safetensors.BF16, Shape: []int64{2}, Data: make([]byte, 4)})
	for _, bits := range []int{16, 4} {
		a := convert(t, src, bits)
		b := convert(t, fusedDir2, bits)
		ma, _ := layout.ReadManifest(a)
		mb, _ := layout.ReadManifest(b)
		sa, sb := ma.ExpertSet(layout.ExpertsDir), mb.ExpertSet(layout.ExpertsDir)
		for l := range cfg.NumLayers {
			for e := range cfg.NumExperts {
				fa, _ := os.ReadFile(sa.Path(a, l, e))
				fb, _ := os.ReadFile(sb.Path(b, l, e))
				if len(fa) == 0 || !bytes.Equal(fa, fb) {
					t.Fatalf("bits %d layer %d expert %d: fused and per-expert files differ", bits, l, e)
				}
			}
		}
		if fmt.Sprint(sa.Checksums) != fmt.Sprint(sb.Checksums) {
			t.Fatal("checksums differ")
		}
	}
	c, err := Open(fusedDir2)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Skipped[SkipMTP] != 1 || c.Skipped[SkipVision] == 0 {
		t.Fatalf("skipped %v", c.Skipped)
	}
}
