package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fm-moe/fm/pkg/layout"
)

// TestRunFlagsLikeLlamaCpp: the prompt as an argument, from -f or stdin,
// -n, -s and --temp; the model summary and the seed on stderr (issue 9,
// defect 5 and the aliases).
func TestRunFlagsLikeLlamaCpp(t *testing.T) {
	dir := convertGolden(t, filepath.Join(golden35, "hf"), 16)
	prompt := filepath.Join(t.TempDir(), "prompt.txt")
	os.WriteFile(prompt, []byte("Mixture-of-experts models"), 0o644)
	var outs []string
	for _, args := range [][]string{
		{"-m", dir, "--no-chat", "-n", "4", "-s", "42", "--temp", "0", "Mixture-of-experts models"},
		{"-m", dir, "--no-chat", "-n", "4", "-s", "42", "--temp", "0", "-p", "Mixture-of-experts models"},
		{"-m", dir, "--no-chat", "-n", "4", "-s", "42", "--temp", "0", "-f", prompt},
		{"-m", dir, "--no-chat", "-n", "4", "-s", "42", "--temperature", "0", "-f", "-"},
	} {
		stdout, stderr, err := execute(t, newRunCmd(), "Mixture-of-experts models", args...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, stderr)
		}
		for _, want := range []string{"model: qwen3_5_moe", "layers", "experts", "context", "backend cpu", "seed 42", "temperature 0"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("%v: stderr lacks %q:\n%s", args, want, stderr)
			}
		}
		outs = append(outs, stdout)
	}
	for i, o := range outs {
		if o != outs[0] || o == "\n" {
			t.Errorf("prompt form %d printed %q, form 0 %q", i, o, outs[0])
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-m", dir}, "no prompt"},
		{[]string{"-m", dir, "-p", "a", "b"}, "give the prompt once"},
		{[]string{"-m", dir, "-p", "   "}, "the prompt is empty"},
		{[]string{"-m", dir, "-f", filepath.Join(dir, "nope.txt")}, "nope.txt"},
		{[]string{"-m", dir, "-p", "x", "-n", "0"}, `--n-predict" flag`},
		{[]string{"-m", dir, "-p", "x", "--tokens", "-100"}, `"--tokens" flag`},
		{[]string{"-m", dir, "-p", "x", "--seed", "-5"}, `--seed" flag`},
		{[]string{"-m", filepath.Join(dir, layout.ExpertsDir), "-p", "x"}, "not a prepared model directory"},
		// Defect 4: a prompt longer than the context.
		{[]string{"-m", dir, "--no-chat", "-p", "Mixture-of-experts models route each token", "-c", "4"}, "does not fit the context of 4 tokens"},
		{[]string{"-m", dir, "-p", "x", "-c", "100000000"}, "max_position_embeddings"},
	} {
		if _, _, err := execute(t, newRunCmd(), "", tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.want)
		}
	}
	// -n -1 runs to a stop token or the end of the context.
	_, stderr, err := execute(t, newRunCmd(), "", "-m", dir, "--no-chat", "-p", "Mixture-of-experts models", "-n", "-1", "-c", "12", "--temp", "0")
	if err != nil {
		t.Errorf("-n -1: %v\n%s", err, stderr)
	}
}

// TestNaNLogitsFail is defect 1 of issue 9 at the command line: scale bytes
// of a layer's tensors overwritten with 0xff made run print "!!!!" and logits
// write all-NaN rows, both with exit 0. Both now fail, and logits writes no
// file.
func TestNaNLogitsFail(t *testing.T) {
	dir := convertGolden(t, filepath.Join(golden35, "mlx4"), 0)
	m, err := layout.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, layout.DenseName), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	damaged := 0
	for _, tt := range m.Tensors {
		if tt.Quant != nil && strings.HasPrefix(tt.Name, "layers.0.") {
			f.WriteAt([]byte(strings.Repeat("\xff", int(tt.Quant.Scales.Size))), tt.Quant.Scales.Offset)
			damaged++
		}
	}
	f.Close()
	if damaged == 0 {
		t.Fatal("no quantized layer-0 tensor to damage")
	}
	out := filepath.Join(t.TempDir(), "l.safetensors")
	if _, _, err := execute(t, newLogitsCmd(), "", "-m", dir, "--tokens", "1,2,3", "--out", out, "--no-verify"); err == nil || !strings.Contains(err.Error(), "NaN") {
		t.Errorf("logits on NaN weights: %v", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("logits wrote %s despite the error", out)
	}
	stdout, _, err := execute(t, newRunCmd(), "", "-m", dir, "-p", "hello", "--temp", "0", "-n", "8", "--no-verify")
	if err == nil || strings.Contains(stdout, "!!!!") {
		t.Errorf("run on NaN weights: %v, printed %q", err, stdout)
	}
}

// TestChatCommands: ollama's /help, /clear and /bye; unknown commands are
// not sent to the model.
func TestChatCommands(t *testing.T) {
	dir := convertGolden(t, filepath.Join(golden35, "hf"), 16)
	stdout, stderr, err := execute(t, newChatCmd(), "/help\nHello\n/clear\n/nonsense\n/bye\nnot read\n",
		"-m", dir, "-n", "3", "--temp", "0", "--no-think", "-s", "7")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	if n := strings.Count(stdout, "\n"); n != 1 {
		t.Errorf("want one reply (Hello), stdout %q", stdout)
	}
	for _, want := range []string{"/clear", "/bye", "(new conversation)", "unknown command /nonsense", "seed 7"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
}

// TestChatContextFull: a conversation that outgrows -c is told so and can go
// on after /clear, instead of ending the chat.
func TestChatContextFull(t *testing.T) {
	dir := convertGolden(t, filepath.Join(golden35, "hf"), 16)
	stdout, stderr, err := execute(t, newChatCmd(), strings.Repeat("word ", 40)+"\n/clear\nHi\n",
		"-m", dir, "-n", "2", "--temp", "0", "--no-think", "-c", "32")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	if !strings.Contains(stderr, "does not fit the context of 32 tokens") || strings.Count(stdout, "\n") != 1 {
		t.Errorf("stdout %q\nstderr %s", stdout, stderr)
	}
}
