package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// numericFlags lists, for every numeric flag of every fm-infer subcommand,
// values it must refuse (the error naming the flag) and values it must take.
// TestNumericFlagRanges fails when a subcommand has a numeric flag missing
// here, so a new flag gets its range checked too (issue 9, defect 5).
var numericFlags = map[string]struct{ bad, good []string }{
	"ctx-size":          {[]string{"-1", "x"}, []string{"0", "4096"}},
	"expert-cache-mb":   {[]string{"-1"}, []string{"0", "512"}},
	"experts-per-token": {[]string{"-1"}, []string{"0", "2"}},
	"io-threads":        {[]string{"-1", "100000"}, []string{"0", "16"}},
	"threads":           {[]string{"-1", "100000"}, []string{"0", "2"}},
	"n-predict":         {[]string{"0", "-2", "-100"}, []string{"-1", "1", "300"}},
	"tokens":            {[]string{"0", "-2", "-100"}, []string{"-1", "1", "300"}},
	"temperature":       {[]string{"-1", "NaN", "Inf"}, []string{"0", "0.7", "2"}},
	"temp":              {[]string{"-0.5", "NaN"}, []string{"0", "1.5"}},
	"top-k":             {[]string{"-1"}, []string{"0", "40"}},
	"top-p":             {[]string{"2", "-0.1", "NaN"}, []string{"0", "0.9", "1"}},
	"min-p":             {[]string{"2", "-0.1"}, []string{"0", "0.05", "1"}},
	"repeat-penalty":    {[]string{"0", "-1", "NaN"}, []string{"1", "1.3"}},
	"repeat-last-n":     {[]string{"-1"}, []string{"0", "64"}},
	"seed":              {[]string{"-5", "-2", "x"}, []string{"-1", "0", "42"}},
	"ctx":               {[]string{"1", "0", "-3"}, []string{"2", "512"}},
	"max-chunks":        {[]string{"-1"}, []string{"0", "8"}},
	"jobs":              {[]string{"-1"}, []string{"0", "4"}},
	"parallel":          {[]string{"0", "-1"}, []string{"1", "4"}},
	"queue":             {[]string{"0", "-1"}, []string{"1", "64"}},
	"max-body-kb":       {[]string{"0", "-1"}, []string{"1", "4096"}},
	"prompt-cache-mb":   {[]string{"-1"}, []string{"0", "1024"}},
	"timeout":           {[]string{"0s", "-1s", "x"}, []string{"30s", "10m"}},
	"shutdown-grace":    {[]string{"-1s", "25h", "x", "5"}, []string{"0s", "30s", "2m"}},
	"prefill-chunk":     {[]string{"-1"}, []string{"0", "512"}},
	"vram-cache-gb":     {[]string{"-1", "NaN"}, []string{"0", "6"}},
	// bench's own flags are checked when it runs (before opening a model).
	"prompt-tokens": {[]string{"0", "-1"}, []string{"1", "512"}},
	"runs":          {[]string{"0", "-1"}, []string{"1", "3"}},
	"layers":        {[]string{"-1", "x"}, []string{"0", "12"}},
	"bits":          {[]string{"5", "0", "-4"}, []string{"2", "4", "16"}},
	"io-mb":         {[]string{"-1"}, []string{"0", "256"}},
	"ram-gb":        {[]string{"-1", "NaN", "Inf"}, []string{"0", "23.5"}},
	"tolerance":     {[]string{"0", "-1", "NaN", "Inf"}, []string{"2e-3", "0.1"}},
}

// benchTokens: bench's --tokens counts decode steps and has no -1.
var benchTokens = struct{ bad, good []string }{[]string{"0", "-1"}, []string{"1", "32"}}

func TestNumericFlagRanges(t *testing.T) {
	for _, sub := range newRootCmd().Commands() {
		sub.Flags().VisitAll(func(f *pflag.Flag) {
			typ := f.Value.Type()
			if typ == "bool" || typ == "string" {
				return
			}
			name := sub.Name() + " --" + f.Name
			tc, ok := numericFlags[f.Name]
			if !ok {
				t.Errorf("%s (%s) has no range test: add it to numericFlags", name, typ)
				return
			}
			bad, good := tc.bad, tc.good
			if sub.Name() == "bench" && f.Name == "tokens" {
				bad, good = benchTokens.bad, benchTokens.good
			}
			for _, v := range bad {
				cmd := findSub(t, sub.Name())
				_, _, err := execute(t, cmd, "", "--"+f.Name+"="+v)
				if err == nil || !strings.Contains(err.Error(), "--"+f.Name) {
					t.Errorf("%s %s: error %v, want one naming the flag", name, v, err)
				}
			}
			for _, v := range good {
				cmd := findSub(t, sub.Name())
				if err := cmd.ParseFlags([]string{"--" + f.Name + "=" + v}); err != nil {
					t.Errorf("%s %s refused: %v", name, v, err)
				}
			}
		})
	}
}

// subcommands makes each subcommand afresh (flag values stick to a command,
// and one attached to the root would execute the root).
var subcommands = map[string]func() *cobra.Command{
	"run": newRunCmd, "chat": newChatCmd, "logits": newLogitsCmd, "tokenize": newTokenizeCmd,
	"verify": newVerifyCmd, "eval": newEvalCmd, "bench": newBenchCmd, "serve": newServeCmd,
	"compare": newCompareCmd,
}

func findSub(t *testing.T, name string) *cobra.Command {
	t.Helper()
	mk, ok := subcommands[name]
	if !ok {
		t.Fatal(fmt.Sprintf("no constructor for subcommand %s: add it to subcommands", name))
	}
	return mk()
}
