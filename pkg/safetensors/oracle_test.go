package safetensors

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	nlp "github.com/nlpodyssey/safetensors"
)

// TestAgreesWithNlpodyssey cross-checks this parser against an independent
// implementation on real checkpoints (whole-file buffers are fine for a test).
func TestAgreesWithNlpodyssey(t *testing.T) {
	files, _ := filepath.Glob("../../testdata/golden/*/hf/*.safetensors")
	mlx, _ := filepath.Glob("../../testdata/golden/*/mlx4/*.safetensors")
	files = append(files, mlx...)
	if len(files) == 0 {
		t.Fatal("no golden safetensors files found")
	}
	for _, path := range files {
		buf, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		want, err := nlp.Deserialize(buf)
		if err != nil {
			t.Fatalf("%s: nlpodyssey: %v", path, err)
		}
		got, err := Parse(bytes.NewReader(buf), int64(len(buf)))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(got.Tensors) != want.Len() {
			t.Fatalf("%s: %d tensors, nlpodyssey finds %d", path, len(got.Tensors), want.Len())
		}
		for _, name := range want.Names() {
			wv, _ := want.Tensor(name)
			gt := got.Tensor(name)
			if gt == nil {
				t.Fatalf("%s: tensor %q missing", path, name)
			}
			if string(gt.DType) != wv.DType().String() {
				t.Errorf("%s: tensor %q: dtype %s, nlpodyssey %s", path, name, gt.DType, wv.DType())
			}
			if len(gt.Shape) != len(wv.Shape()) {
				t.Errorf("%s: tensor %q: shape %v, nlpodyssey %v", path, name, gt.Shape, wv.Shape())
				continue
			}
			for i, d := range wv.Shape() {
				if uint64(gt.Shape[i]) != d {
					t.Errorf("%s: tensor %q: shape %v, nlpodyssey %v", path, name, gt.Shape, wv.Shape())
				}
			}
			data, err := gt.ReadAll()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(data, wv.Data()) {
				t.Errorf("%s: tensor %q: bytes differ from nlpodyssey's view", path, name)
			}
		}
	}
}
