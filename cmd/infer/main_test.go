package main

import (
	"context"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

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

func TestListFlags(t *testing.T) {
	for _, c := range newRootCmd().Commands() {
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if f.Value.Type() != "bool" && f.Value.Type() != "string" {
				t.Logf("%s --%s -%s %s %q", c.Name(), f.Name, f.Shorthand, f.Value.Type(), f.DefValue)
			}
		})
	}
}
