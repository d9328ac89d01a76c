package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/fm-moe/fm/pkg/checkpoint"
	"github.com/fm-moe/fm/pkg/safetensors"
	"github.com/fm-moe/fm/pkg/tokenizer"
)

const golden35 = "../../testdata/golden/qwen35moe-tiny"

// convertGolden prepares a golden checkpoint with the converter, as fm-extract
// and fm-repack do.
func convertGolden(t *testing.T, src string, bits int) string {
	t.Helper()
	dir := t.TempDir()
	opts := checkpoint.Options{Bits: bits, LoadTokenizer: func(p string) (checkpoint.TokenizerWriter, error) { return tokenizer.Load(p) }}
	if _, err := checkpoint.Extract(context.Background(), src, dir, opts); err != nil {
		t.Fatal(err)
	}
	if _, err := checkpoint.Repack(context.Background(), src, dir, opts); err != nil {
		t.Fatal(err)
	}
	return dir
}

func execute(t *testing.T, cmd *cobra.Command, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var o, e bytes.Buffer
	cmd.SetOut(&o)
	cmd.SetErr(&e)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(args)
	err = cmd.ExecuteContext(context.Background())
	return o.String(), e.String(), err
}

// referenceIDs reads p{i}.ids of a reference file.
func referenceIDs(t *testing.T, path, name string) []int {
	t.Helper()
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := f.Tensor(name).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]int, len(b)/8)
	for i := range ids {
		ids[i] = int(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return ids
}

// TestRunGreedyMatchesReference: `fm-infer run --no-chat --temperature 0`
// prints exactly the text of transformers' greedy continuation.
func TestRunGreedyMatchesReference(t *testing.T) {
	dir := convertGolden(t, filepath.Join(golden35, "hf"), 16)
	tok, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	ids := referenceIDs(t, filepath.Join(golden35, "reference.safetensors"), "p1.ids")
	const promptLen = 12 // reference.json
	prompt := "Mixture-of-experts models route each token to a few experts."
	if got := tok.Encode(prompt); len(got) != promptLen {
		t.Fatalf("prompt encodes to %d tokens, reference has %d", len(got), promptLen)
	}
	stdout, stderr, err := execute(t, newRunCmd(), "", "--model", dir, "--prompt", prompt, "--no-chat",
		"--temperature", "0", "--repeat-penalty", "1", "--tokens", "12", "--timing")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	if want := tok.Decode(ids[promptLen:]) + "\n"; stdout != want {
		t.Errorf("run printed %q, want %q", stdout, want)
	}
	for _, s := range []string{"prefill:", "decode:", "tok/s", "expert I/O", "expert compute", "peak RSS", "MB read"} {
		if !strings.Contains(stderr, s) {
			t.Errorf("--timing output lacks %q:\n%s", s, stderr)
		}
	}
}

// TestRunChatAndK: the chat template is applied by default, --experts-per-token
// is announced, and sampling with a seed is reproducible.
func TestRunChatAndK(t *testing.T) {
	dir := convertGolden(t, filepath.Join(golden35, "mlx4"), 0)
	args := []string{"--model", dir, "--prompt", "Hello", "--tokens", "8", "--seed", "7", "--temperature", "1"}
	a, _, err := execute(t, newRunCmd(), "", args...)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := execute(t, newRunCmd(), "", args...)
	if err != nil {
		t.Fatal(err)
	}
	if a != b || a == "" {
		t.Errorf("same seed, different output: %q vs %q", a, b)
	}
	_, stderr, err := execute(t, newRunCmd(), "", append(args, "--experts-per-token", "2")...)
	if err != nil || !strings.Contains(stderr, "changes the model's output") {
		t.Errorf("--experts-per-token 2: err %v, stderr %q", err, stderr)
	}
	if _, _, err := execute(t, newRunCmd(), "", "--model", dir, "--prompt", "x", "--think", "--no-think"); err == nil {
		t.Error("--think with --no-think accepted")
	}
}

// TestChatKeepsConversation: the second turn reuses the state of the first.
func TestChatKeepsConversation(t *testing.T) {
	dir := convertGolden(t, filepath.Join(golden35, "hf"), 16)
	stdout, stderr, err := execute(t, newChatCmd(), "Hello there\nTell me more\n/reset\nHi\n",
		"--model", dir, "--tokens", "6", "--temperature", "0", "--timing", "--no-think")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	if n := strings.Count(stdout, "\n"); n != 3 {
		t.Errorf("want 3 replies, stdout %q", stdout)
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	var reuse []string
	for _, l := range lines {
		if i := strings.Index(l, "; "); strings.HasSuffix(l, "prompt tokens reused]") && i >= 0 {
			reuse = append(reuse, l[strings.LastIndex(l, "; ")+2:])
		}
	}
	if len(reuse) != 3 || reuse[0] != "0 prompt tokens reused]" || reuse[1] == "0 prompt tokens reused]" || reuse[2] != "0 prompt tokens reused]" {
		t.Errorf("reuse per turn %q (want 0, >0, 0 after /reset)\n%s", reuse, stderr)
	}
}
