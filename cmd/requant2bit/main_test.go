package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fm-moe/fm/pkg/checkpoint"
	"github.com/fm-moe/fm/pkg/layout"
)

func run(args ...string) error {
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	return cmd.ExecuteContext(context.Background())
}

// TestCommand: fm-requant2bit OUT writes the 2-bit set, --bits 3 the 3-bit
// one, and wrong arguments are refused with a message naming them.
func TestCommand(t *testing.T) {
	src := "../../testdata/golden/qwen3moe-tiny/hf"
	dir := t.TempDir()
	opts := checkpoint.Options{Bits: 4}
	if _, err := checkpoint.Extract(context.Background(), src, dir, opts); err != nil {
		t.Fatal(err)
	}
	if _, err := checkpoint.Repack(context.Background(), src, dir, opts); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "accepts 1 arg"},
		{[]string{dir, "--bits", "4"}, `"4" for "--bits" flag: want one of [2 3]`},
		{[]string{filepath.Join(dir, "nope")}, "run fm-extract and fm-repack first"},
	} {
		if err := run(c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want %q", c.args, err, c.want)
		}
	}
	if err := run(dir, "--quiet", "--jobs", "2"); err != nil {
		t.Fatal(err)
	}
	if err := run(dir, "--quiet", "--bits", "3"); err != nil {
		t.Fatal(err)
	}
	m, err := layout.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	for dirName, bits := range map[string]int{layout.Experts2BitDir: 2, layout.Experts3BitDir: 3} {
		if s := m.ExpertSet(dirName); s == nil || s.Bits != bits {
			t.Errorf("manifest set %s: %+v", dirName, s)
		}
	}
}

// TestVersion: --version names the build, the format and the architectures.
func TestVersion(t *testing.T) {
	cmd := newRootCmd()
	var out strings.Builder
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--version"})
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{cmd.Name(), "revision", "go1", "format fm/1", "qwen3_5_moe"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--version printed %q, want it to contain %q", out.String(), want)
		}
	}
}

// TestNumericFlagRanges: out-of-range numbers are refused when the command
// line is parsed, naming the flag (issue 9, defect 5).
func TestNumericFlagRanges(t *testing.T) {
	for _, args := range [][]string{{"--bits", "4"}, {"--jobs", "0"}} {
		err := newRootCmd().ParseFlags(args)
		if err == nil || !strings.Contains(err.Error(), strings.TrimLeft(args[0], "-")+"\" flag") {
			t.Errorf("%v: error %v, want one naming the flag", args, err)
		}
	}
}
