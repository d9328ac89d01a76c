package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fm-moe/fm/pkg/checkpoint"
	"github.com/fm-moe/fm/pkg/cli/clitest"
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
func TestVersion(t *testing.T) { clitest.Version(t, newRootCmd()) }

// TestNumericFlagRanges: out-of-range numbers are refused when the command
// line is parsed, naming the flag (issue 9, defect 5).
func TestNumericFlagRanges(t *testing.T) {
	clitest.RefusedFlags(t, newRootCmd, [][2]string{{"--bits", "4"}, {"--jobs", "0"}})
}
