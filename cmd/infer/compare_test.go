package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fm-moe/fm/pkg/backend"
	"github.com/fm-moe/fm/pkg/backend/cpu"
	"github.com/fm-moe/fm/pkg/policy"
)

// skewed is a CPU device that doubles the output of its n-th mixer call
// (attention or linear attention), 1-based: a backend bug planted in one
// block, for compare to find.
type skewed struct {
	backend.Device
	n, calls int
}

func (s *skewed) mixed(out backend.Tensor) {
	if s.calls++; s.calls == s.n {
		s.Device.Add(out, out)
	}
}

func (s *skewed) Attention(out, q, k, v backend.Tensor, st backend.State, layer, pos int, p *backend.AttentionParams) {
	s.Device.Attention(out, q, k, v, st, layer, pos, p)
	s.mixed(out)
}

func (s *skewed) DeltaNet(out, qkv, z, b, a backend.Tensor, st backend.State, layer int, p *backend.DeltaNetParams) {
	s.Device.DeltaNet(out, qkv, z, b, a, st, layer, p)
	s.mixed(out)
}

// TestCompareFindsThePlantedBlock: two equal backends agree to the bit, and a
// backend wrong in one block is reported with that block as the first to part
// and a non-zero exit.
func TestCompareFindsThePlantedBlock(t *testing.T) {
	dir := convertGolden(t, filepath.Join(golden35, "hf"), 16)
	ids := []int{1, 5, 9, 200, 31, 7}
	ref := policy.EngineFlags{Model: dir, Backend: "cpu", Threads: 1}

	for _, decode := range []bool{false, true} {
		a, b := ref, ref
		var out bytes.Buffer
		if err := compareBackends(context.Background(), &out, &out, &a, &b, ids, decode, 2e-3); err != nil {
			t.Fatalf("decode=%v: cpu vs cpu: %v\n%s", decode, err, out.String())
		}
		if !strings.Contains(out.String(), "logits: worst rel err 0.00e+00 over 6 rows, argmax equal in 6 of 6") ||
			strings.Contains(out.String(), "<- first") {
			t.Errorf("decode=%v: cpu vs cpu report:\n%s", decode, out.String())
		}

		// The third mixer call of a prefill is layer 2's; of a decode, token
		// 0's layer 2 too.
		a.Device = &skewed{Device: cpu.NewDevice(1), n: 3}
		out.Reset()
		err := compareBackends(context.Background(), &out, &out, &a, &b, ids, decode, 2e-3)
		if testing.Verbose() {
			t.Logf("decode=%v:\n%s", decode, out.String())
		}
		if err == nil || !strings.Contains(err.Error(), "the first block above it is layer 2 ") {
			t.Errorf("decode=%v: skewed vs cpu: error %v, want it to name layer 2\n%s", decode, err, out.String())
		}
		for _, line := range strings.Split(out.String(), "\n") {
			f := strings.Fields(line)
			if len(f) >= 3 && (f[0] == "0" || f[0] == "1") && f[len(f)-1] != "0.00e+00" {
				t.Errorf("decode=%v: a block before the planted one differs: %q", decode, line)
			}
		}
	}
}

func TestCompareCommandErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--model", t.TempDir()}, "exactly one of --prompt and --tokens"},
		{[]string{"--prompt", "x", "--tokens", "1", "--model", "m"}, "exactly one of --prompt and --tokens"},
		{[]string{"--tokens", "1"}, "--model (-m) is required"},
		{[]string{"--model", t.TempDir(), "--tokens", "1,x"}, `"x" is not a token id`},
	} {
		if _, _, err := execute(t, newCompareCmd(), "", tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want it to mention %q", tc.args, err, tc.want)
		}
	}
}
