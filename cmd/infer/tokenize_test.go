package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fm-moe/fm/pkg/tokenizer"
)

const qwen3TokenizerJSON = "../../testdata/tokenizers/qwen3/tokenizer.json"

func runTokenize(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	cmd := newTokenizeCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

// TestTokenizeCommand runs fm-infer tokenize on a raw tokenizer.json and on a
// prepared directory holding only tokenizer.bin.
func TestTokenizeCommand(t *testing.T) {
	tok, err := tokenizer.Load(qwen3TokenizerJSON)
	if err != nil {
		t.Fatal(err)
	}
	prepared := t.TempDir()
	f, err := os.Create(filepath.Join(prepared, tokenizer.BinaryFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.WriteBinary(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	for _, model := range []string{qwen3TokenizerJSON, prepared} {
		for _, tc := range []struct {
			name, stdin string
			args        []string
			want        string
		}{
			{"text flag", "", []string{"--text", "Hello, world!"}, "[9707,11,1879,0]\n"},
			{"stdin byte for byte", "Hello, world!\n", nil, "[9707,11,1879,4894]\n"}, // "!\n" is one token
			{"special tokens", "", []string{"--text", "<|im_start|>hello<|im_end|>"}, "[151644,14990,151645]\n"},
			{"empty", "", []string{"--text", ""}, "[]\n"},
			{"decode", "", []string{"--decode", "--text", "[9707, 11, 1879, 0]"}, "Hello, world!"},
			{"decode stdin", "[151644,14990,151645]", []string{"--decode"}, "<|im_start|>hello<|im_end|>"},
		} {
			got, err := runTokenize(t, tc.stdin, append([]string{"--model", model}, tc.args...)...)
			if err != nil || got != tc.want {
				t.Errorf("%s: %s: output %q, error %v; want %q", model, tc.name, got, err, tc.want)
			}
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--model", "/no/such/dir", "--text", "x"}, "/no/such/dir"},
		{[]string{"--model", qwen3TokenizerJSON, "--decode", "--text", "[1, 999999]"}, "999999"},
		{[]string{"--model", qwen3TokenizerJSON, "--decode", "--text", "hello"}, "JSON array"},
		{[]string{"--text", "x"}, "model"},
	} {
		if _, err := runTokenize(t, "", tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one mentioning %q", tc.args, err, tc.want)
		}
	}
}
