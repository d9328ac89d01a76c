package clitest

import (
	"context"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// Version runs root with --version and checks that the line names the
// command, the revision, the Go version, the format and the architectures.
func Version(t *testing.T, root *cobra.Command) {
	t.Helper()
	var out strings.Builder
	root.SetOut(&out)
	root.SetArgs([]string{"--version"})
	if err := root.ExecuteContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{root.Name(), "revision", "go1", "format fm/1", "qwen3_5_moe"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--version printed %q, want it to contain %q", out.String(), want)
		}
	}
}

// RefusedFlags checks that each of bad ("--flag", "value") is refused when
// a fresh command from newCmd parses it, with an error naming the flag.
func RefusedFlags(t *testing.T, newCmd func() *cobra.Command, bad [][2]string) {
	t.Helper()
	for _, b := range bad {
		err := newCmd().ParseFlags([]string{b[0], b[1]})
		if name := strings.TrimLeft(b[0], "-") + `" flag`; err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s %s: error %v, want one naming the flag", b[0], b[1], err)
		}
	}
}
