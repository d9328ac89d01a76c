package checkpoint

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/fm-moe/fm/pkg/safetensors"
)

// rewrite copies the checkpoint in src to a new directory as one
// model.safetensors, passing each tensor through edit (return false to drop
// it) and appending extra tensors. Non-safetensors files are copied.
func rewrite(t *testing.T, src string, edit func(wt *safetensors.WriteTensor) bool, extra ...safetensors.WriteTensor) string {
	t.Helper()
	dst := copyDir(t, src)
	ents, _ := os.ReadDir(dst)
	for _, e := range ents {
		if filepath.Ext(e.Name()) == ".safetensors" || e.Name() == safetensors.IndexName {
			os.Remove(filepath.Join(dst, e.Name()))
		}
	}
	st, err := safetensors.OpenDir(src)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var ws []safetensors.WriteTensor
	for _, name := range st.Names() {
		tt := st.Tensor(name)
		b, err := tt.ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		wt := safetensors.WriteTensor{Name: name, DType: tt.DType, Shape: tt.Shape, Data: b}
		if edit == nil || edit(&wt) {
			ws = append(ws, wt)
		}
	}
	ws = append(ws, extra...)
	var buf bytes.Buffer
	if err := safetensors.Write(&buf, ws, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dst, "model.safetensors"), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}
