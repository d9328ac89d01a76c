package main

import (
	"context"
	"strings"
	"testing"

	"github.com/fm-moe/fm/pkg/checkpoint"
	"github.com/fm-moe/fm/pkg/cli/clitest"
	"github.com/fm-moe/fm/pkg/layout"
)

const src = "../../testdata/golden/qwen3moe-tiny/mlx4"

func run(args ...string) error {
	cmd := newRootCmd()
	cmd.SetArgs(args)
	return cmd.ExecuteContext(context.Background())
}

// The command repacks an extracted MLX checkpoint at its own bits; a second
// run resumes; the wrong --bits and a missing OUT are one-line errors that say
// what to do.
func TestRepackCommand(t *testing.T) {
	out := t.TempDir()
	if err := run(src, out, "--quiet"); err == nil || !strings.Contains(err.Error(), "run fm-extract first") {
		t.Fatalf("repack before extract: %v", err)
	}
	if _, err := checkpoint.Extract(context.Background(), src, out, checkpoint.Options{}); err != nil {
		t.Fatal(err)
	}
	if err := run(src, out, "--bits", "8", "--quiet"); err == nil || !strings.Contains(err.Error(), "--bits must be 4") {
		t.Fatalf("wrong bits: %v", err)
	}
	for i := range 2 {
		if err := run(src, out, "--quiet", "-j", "2"); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
	if p, err := layout.Verify(context.Background(), out, 0, nil); err != nil || len(p) > 0 {
		t.Fatalf("verify: %v %v", p, err)
	}
	if err := run(src); err == nil || !strings.Contains(err.Error(), "want two arguments, SRC") {
		t.Fatalf("one argument: %v", err)
	}
}

// TestVersion: --version names the build, the format and the architectures.
func TestVersion(t *testing.T) { clitest.Version(t, newRootCmd()) }

// TestNumericFlagRanges: out-of-range numbers are refused when the command
// line is parsed, naming the flag (issue 9, defect 5).
func TestNumericFlagRanges(t *testing.T) {
	clitest.RefusedFlags(t, newRootCmd, [][2]string{{"--bits", "3"}, {"--group-size", "48"}, {"--jobs", "0"}, {"--jobs", "-1"}})
}
