package engine

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fm-moe/fm/pkg/backend/cpu"
	"github.com/fm-moe/fm/pkg/safetensors"
)

// WriteLogits writes logits ([T·V] row-major) as a safetensors file with one
// F32 tensor "logits" of shape [T, V], the fm-infer logits contract. It writes
// through a temporary name and a rename, so a failed run never leaves a
// truncated file behind.
func WriteLogits(path string, logits []float32, T, V int) error {
	if len(logits) != T*V {
		return fmt.Errorf("%s: %d logits are not [%d, %d]", path, len(logits), T, V)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriterSize(tmp, 1<<20)
	err = safetensors.Write(w, []safetensors.WriteTensor{{
		Name: "logits", DType: safetensors.F32, Shape: []int64{int64(T), int64(V)}, Data: cpu.F32Bytes(logits)}}, nil)
	if err == nil {
		err = w.Flush()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.Rename(tmp.Name(), path)
}
