package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fm-moe/fm/pkg/checkpoint"
	"github.com/fm-moe/fm/pkg/layout"
	"github.com/fm-moe/fm/pkg/tokenizer"
)

const verifySource = "../../testdata/golden/qwen3moe-tiny/hf"

// prepareForVerify runs fm-extract's and (when repack) fm-repack's conversion.
func prepareForVerify(t *testing.T, repack bool) string {
	t.Helper()
	dir := t.TempDir()
	opts := checkpoint.Options{LoadTokenizer: func(p string) (checkpoint.TokenizerWriter, error) { return tokenizer.Load(p) }}
	if _, err := checkpoint.Extract(context.Background(), verifySource, dir, opts); err != nil {
		t.Fatal(err)
	}
	if repack {
		if _, err := checkpoint.Repack(context.Background(), verifySource, dir, opts); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func runVerify(dir string) (stderr string, err error) {
	cmd := newVerifyCmd()
	var e bytes.Buffer
	cmd.SetOut(&e)
	cmd.SetErr(&e)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true // as under the fm-infer root
	cmd.SetArgs([]string{"--model", dir})
	err = cmd.ExecuteContext(context.Background())
	return e.String(), err
}

// flipByte changes one byte of a file in place.
func flipByte(t *testing.T, path string, at int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[at] ^= 0x55
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// fm-infer verify names every bad file on stderr (one line each) and fails;
// a clean directory passes with a summary.
func TestVerifyCommand(t *testing.T) {
	dir := prepareForVerify(t, true)
	stderr, err := runVerify(dir)
	if err != nil || !strings.Contains(stderr, "all match") {
		t.Fatalf("clean directory: %v\n%s", err, stderr)
	}
	m, err := layout.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	set := m.ExpertSet(layout.ExpertsDir)
	corrupt, missing := set.Path(dir, 1, 5), set.Path(dir, 2, 0)
	flipByte(t, corrupt, 4000)
	os.Remove(missing)
	dense := filepath.Join(dir, layout.DenseName)
	if err := os.Truncate(dense, m.Dense.Size-4096); err != nil {
		t.Fatal(err)
	}
	tokBin := filepath.Join(dir, tokenizer.BinaryFile)
	flipByte(t, tokBin, 100)
	vocab := filepath.Join(dir, tokenizer.VocabFile)
	os.Remove(vocab)

	stderr, err = runVerify(dir)
	if err == nil || !strings.Contains(err.Error(), "5 problems") {
		t.Fatalf("err = %v", err)
	}
	want := map[string]string{
		corrupt: "checksum mismatch",
		missing: "missing",
		dense:   "size",
		tokBin:  "checksum mismatch",
		vocab:   "missing",
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if len(lines) != len(want) {
		t.Fatalf("want one line per bad file, got:\n%s", stderr)
	}
	for path, cause := range want {
		found := false
		for _, l := range lines {
			found = found || strings.HasPrefix(l, "bad file: "+path+": ") && strings.Contains(l, cause)
		}
		if !found {
			t.Errorf("no line names %s (%s):\n%s", path, cause, stderr)
		}
	}
}

// A directory fm-repack has not completed does not pass, and one without a
// manifest is named as not prepared.
func TestVerifyIncomplete(t *testing.T) {
	dir := prepareForVerify(t, false)
	stderr, err := runVerify(dir)
	if err == nil || !strings.Contains(stderr, filepath.Join(dir, layout.ExpertsDir)) || !strings.Contains(stderr, "run fm-repack") {
		t.Fatalf("extract only: %v\n%s", err, stderr)
	}
	empty := t.TempDir()
	if _, err := runVerify(empty); err == nil || !strings.Contains(err.Error(), "not a prepared directory") {
		t.Fatalf("no manifest: %v", err)
	}
}
