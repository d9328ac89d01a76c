// Package prepare is a test helper: it converts a checkpoint into a prepared
// directory with the converter's Go API, as fm-extract and fm-repack do, so
// that tests run the real file path (manifest, mapped dense weights, expert
// files read by the expert store).
package prepare

import (
	"context"
	"testing"

	"github.com/fm-moe/fm/pkg/checkpoint"
	"github.com/fm-moe/fm/pkg/tokenizer"
)

// Convert writes src (a HuggingFace or MLX checkpoint directory) into a new
// temporary directory at the given expert bits (0: the source's own format)
// and returns it.
func Convert(tb testing.TB, src string, bits int) string {
	tb.Helper()
	dir := tb.TempDir()
	if err := Into(src, dir, bits); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// Into converts src into dir (which may be shared by several tests, e.g.
// from TestMain).
func Into(src, dir string, bits int) error {
	opts := checkpoint.Options{Bits: bits, LoadTokenizer: func(path string) (checkpoint.TokenizerWriter, error) {
		return tokenizer.Load(path)
	}}
	if _, err := checkpoint.Extract(context.Background(), src, dir, opts); err != nil {
		return err
	}
	_, err := checkpoint.Repack(context.Background(), src, dir, opts)
	return err
}
