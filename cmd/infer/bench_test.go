package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

func runBench(args ...string) (stdout, stderr string, err error) {
	cmd := newBenchCmd()
	var o, e bytes.Buffer
	cmd.SetOut(&o)
	cmd.SetErr(&e)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	cmd.SetArgs(args)
	err = cmd.ExecuteContext(context.Background())
	return o.String(), e.String(), err
}

// End to end on the smallest real shape: one layer of Qwen3-30B-A3B (128
// experts of 2.5 MiB, a 151,936-token vocabulary), written, run and projected;
// the second run reuses the directory.
func TestBenchSyntheticJSON(t *testing.T) {
	dir := t.TempDir()
	args := []string{"--synthetic", "qwen3-30b-a3b", "--layers", "1", "--dir", dir, "--tokens", "2", "--runs", "1",
		"--prompt-tokens", "4", "--io-mb", "8", "--ram-gb", "4", "--json"}
	for round := 0; round < 2; round++ {
		out, stderr, err := runBench(args...)
		if err != nil {
			t.Fatalf("bench: %v\n%s", err, stderr)
		}
		if round == 1 && !strings.Contains(stderr, "reusing") {
			t.Errorf("second run did not reuse %s:\n%s", dir, stderr)
		}
		var r map[string]any
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("output is not one JSON object: %v\n%s", err, out)
		}
		for _, k := range []string{"decode_tok_s", "prefill_tok_s", "bytes_per_token", "memory_read_gbs", "roofline_ratio",
			"disk_read_gbs", "projected_tok_s"} {
			if v, ok := r[k].(float64); !ok || v <= 0 {
				t.Errorf("%s = %v, want a positive number", k, r[k])
			}
		}
		if _, ok := r["expert_hit_rate"].(float64); !ok {
			t.Errorf("expert_hit_rate missing")
		}
		// 4 GiB of RAM cannot hold 48 layers of 2.5 MiB experts (15 GiB).
		p := r["projection"].(map[string]any)
		if c := p["CachedFraction"].(float64); c >= 1 {
			t.Errorf("cached fraction %g at 4 GiB", c)
		}
	}
}

// bench --io --json prints the ceilings alone: every one measured (positive),
// the disk's directory named, and none of a model run's fields.
func TestBenchIOJSON(t *testing.T) {
	dir := t.TempDir()
	out, stderr, err := runBench("--io", "--dir", dir, "--io-mb", "8", "--json")
	if err != nil {
		t.Fatalf("bench --io: %v\n%s", err, stderr)
	}
	var r map[string]any
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, out)
	}
	for _, k := range []string{"memory_read_gbs", "compute_f32_gflops", "compute_f32_gflops_one_core", "compute_int8_gops",
		"disk_read_gbs", "disk_read_bytes", "disk_threads", "disk_block_bytes"} {
		if v, ok := r[k].(float64); !ok || v <= 0 {
			t.Errorf("%s = %v, want a positive number", k, r[k])
		}
	}
	if r["disk_dir"] != dir {
		t.Errorf("disk_dir = %v, want %s", r["disk_dir"], dir)
	}
	for _, k := range []string{"model", "decode_tok_s", "prefill_tok_s", "roofline_ratio"} {
		if _, ok := r[k]; ok {
			t.Errorf("%s in --io's report: it measures no model", k)
		}
	}
}

func TestBenchFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--synthetic"},
		{[]string{"--synthetic", "nope", "--layers", "1"}, "qwen3-30b-a3b"},
		{[]string{"--synthetic", "qwen3-30b-a3b"}, "--layers"},
		{[]string{"--synthetic", "qwen3-30b-a3b", "--layers", "99"}, "--layers 99"},
		{[]string{"--synthetic", "qwen3-30b-a3b", "--layers", "1", "--model", "x"}, "exclude"},
		{[]string{"--synthetic", "qwen3-30b-a3b", "--layers", "1", "--bits", "5", "--dir", t.TempDir()}, "--bits"},
	} {
		_, _, err := runBench(tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("bench %v: error %v, want one mentioning %q", tc.args, err, tc.want)
		}
	}
}
