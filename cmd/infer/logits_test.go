package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

func runLogitsCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newLogitsCmd()
	var out bytes.Buffer
	cmd.SetErr(&out)
	cmd.SetOut(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

// TestLogitsCommandErrors: bad arguments are refused with a message naming them.
func TestLogitsCommandErrors(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "l.safetensors")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tokens", "1", "--out", out}, "--model (-m) is required"},
		{[]string{"--model", dir, "--tokens", "1,x", "--out", out}, `"x" is not a token id`},
		{[]string{"--model", dir, "--tokens", "", "--out", out}, "no token ids"},
		{[]string{"--model", dir, "--tokens", "1"}, "--out is required"},
		{[]string{"--model", dir, "--tokens", "1", "--out", out, "--backend", "cuda"}, "not available in this build"},
		{[]string{"--model", dir, "--tokens", "1", "--out", out}, "not a prepared model directory"},
		// Defect 7 of issue 9: --out must not replace the model's own files.
		{[]string{"--model", dir, "--tokens", "1", "--out", filepath.Join(dir, "model_weights.json")}, "would overwrite model_weights.json"},
		{[]string{"--model", dir, "--tokens", "1", "--out", filepath.Join(dir, "packed_experts", "x.bin")}, "would overwrite packed_experts"},
		{[]string{"--model", dir, "--tokens", "1", "--out", dir}, "is a directory"},
	} {
		if _, err := runLogitsCmd(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want it to mention %q", tc.args, err, tc.want)
		}
	}
}

func TestParseIDs(t *testing.T) {
	for _, tc := range []struct{ in, want string }{{"1,2,3", "[1 2 3]"}, {"[4, 5]", "[4 5]"}, {" 7 ", "[7]"}} {
		ids, err := parseIDs(tc.in)
		if err != nil || fmt.Sprint(ids) != tc.want {
			t.Errorf("parseIDs(%q) = %v, %v; want %s", tc.in, ids, err, tc.want)
		}
	}
	for _, bad := range []string{"", "1,,2", "-1", "1.5"} {
		if _, err := parseIDs(bad); err == nil {
			t.Errorf("parseIDs(%q) accepted", bad)
		}
	}
}
