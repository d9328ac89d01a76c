package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fm-moe/fm/pkg/cli/clitest"
	"github.com/fm-moe/fm/pkg/layout"
	"github.com/fm-moe/fm/pkg/tokenizer"
)

// The command writes the binary tokenizer next to the dense weights, lists it
// in the manifest, and it loads back with the same vocabulary.
func TestExtractCommand(t *testing.T) {
	out := t.TempDir()
	cmd := newRootCmd()
	cmd.SetArgs([]string{"../../testdata/golden/qwen35moe-tiny/hf", out, "--bits", "16", "--quiet"})
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	m, err := layout.ReadManifest(out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(m.Tokenizer, " "), "tokenizer.bin vocab.bin") {
		t.Fatalf("tokenizer files %v", m.Tokenizer)
	}
	b, err := os.ReadFile(filepath.Join(out, "tokenizer.bin"))
	if err != nil {
		t.Fatal(err)
	}
	fromBin, err := tokenizer.LoadBinary(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	fromJSON, err := tokenizer.Load(filepath.Join(out, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	var a, c bytes.Buffer
	fromBin.WriteVocab(&a)
	fromJSON.WriteVocab(&c)
	if a.Len() == 0 || !bytes.Equal(a.Bytes(), c.Bytes()) {
		t.Fatal("tokenizer.bin does not round-trip the vocabulary")
	}
	if v, _ := os.ReadFile(filepath.Join(out, "vocab.bin")); !bytes.Equal(v, c.Bytes()) {
		t.Fatal("vocab.bin differs")
	}
}

func TestExtractCommandBadBits(t *testing.T) {
	cmd := newRootCmd()
	cmd.SetArgs([]string{"../../testdata/golden/qwen3moe-tiny/mlx4", t.TempDir(), "--bits", "8", "--quiet"})
	err := cmd.ExecuteContext(context.Background())
	if err == nil || !strings.Contains(err.Error(), "--bits must be 4") {
		t.Fatalf("err = %v", err)
	}
}

func TestExtractCommandArgs(t *testing.T) {
	for _, args := range [][]string{nil, {"only-src"}} {
		cmd := newRootCmd()
		cmd.SetArgs(args)
		err := cmd.ExecuteContext(context.Background())
		if err == nil || !strings.Contains(err.Error(), "want two arguments, SRC") || !strings.Contains(err.Error(), "fm-extract --help") {
			t.Errorf("%v: err = %v", args, err)
		}
	}
	cmd := newRootCmd()
	cmd.SetArgs([]string{"/no/such/checkpoint", t.TempDir()})
	if err := cmd.ExecuteContext(context.Background()); err == nil || err.Error() != "/no/such/checkpoint: no such checkpoint directory" {
		t.Errorf("missing source: %v", err)
	}
}

// TestVersion: --version names the build, the format and the architectures.
func TestVersion(t *testing.T) { clitest.Version(t, newRootCmd()) }

// TestNumericFlagRanges: out-of-range numbers are refused when the command
// line is parsed, naming the flag (issue 9, defect 5).
func TestNumericFlagRanges(t *testing.T) {
	clitest.RefusedFlags(t, newRootCmd, [][2]string{{"--bits", "2"}, {"--bits", "x"}, {"--group-size", "48"}})
}
