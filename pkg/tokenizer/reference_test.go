package tokenizer

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"golang.org/x/text/unicode/norm"

	"github.com/fm-moe/fm/pkg/safetensors"
)

const (
	qwen3Dir  = "../../testdata/tokenizers/qwen3"
	qwen35Dir = "../../testdata/tokenizers/qwen35-regex"
	tinyDir   = "../../testdata/golden/tokenizer-tiny"
)

// loaded caches tokenizers across tests: the 151k vocabulary takes tens of
// milliseconds to load and the tests only read it.
var loaded sync.Map // path → *Tokenizer

func mustLoad(t testing.TB, path string) *Tokenizer {
	t.Helper()
	if tk, ok := loaded.Load(path); ok {
		return tk.(*Tokenizer)
	}
	tk, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	loaded.Store(path, tk)
	return tk
}

// viaBinary round-trips a tokenizer through tokenizer.bin.
func viaBinary(t testing.TB, tk *Tokenizer) *Tokenizer {
	t.Helper()
	var buf bytes.Buffer
	if err := tk.WriteBinary(&buf); err != nil {
		t.Fatal(err)
	}
	out, err := LoadBinary(&buf)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type refCase struct {
	Text    string `json:"text"`
	IDs     []int  `json:"ids"`
	Decoded string `json:"decoded"`
}

func readJSONFile(t testing.TB, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func readRefCases(t testing.TB, path string) []refCase {
	var cases []refCase
	readJSONFile(t, path, &cases)
	return cases
}

func readJSONL(t testing.TB, path string) []refCase {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []refCase
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var c refCase
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		c.Decoded = norm.NFC.String(c.Text) // the file records round-trip success only
		cases = append(cases, c)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return cases
}

// checkCases encodes and decodes every case with both the JSON-loaded and the
// binary-loaded tokenizer.
func checkCases(t *testing.T, tk *Tokenizer, cases []refCase) {
	t.Helper()
	if len(cases) == 0 {
		t.Fatal("no reference cases")
	}
	for name, tok := range map[string]*Tokenizer{"json": tk, "bin": viaBinary(t, tk)} {
		failures := 0
		for i, c := range cases {
			got := tok.Encode(c.Text)
			if !slices.Equal(got, c.IDs) {
				failures++
				if failures <= 5 {
					t.Errorf("%s: case %d %q:\n got  %v\n want %v", name, i, c.Text, got, c.IDs)
				}
				continue
			}
			if dec := tok.Decode(c.IDs); dec != c.Decoded || dec != norm.NFC.String(c.Text) {
				t.Errorf("%s: case %d: Decode = %q, want %q (= NFC of the text)", name, i, dec, c.Decoded)
			}
		}
		if failures > 0 {
			t.Errorf("%s: %d of %d cases differ", name, failures, len(cases))
		}
	}
}

func TestQwen3Reference(t *testing.T) {
	tk := mustLoad(t, filepath.Join(qwen3Dir, "tokenizer.json"))
	checkCases(t, tk, readRefCases(t, filepath.Join(qwen3Dir, "reference-dev.json")))
}

func TestQwen3GoldenHF(t *testing.T) {
	tk := mustLoad(t, filepath.Join(qwen3Dir, "tokenizer.json"))
	checkCases(t, tk, readJSONL(t, filepath.Join(qwen3Dir, "golden-hf-tokenizers.jsonl")))
}

func TestQwen35Reference(t *testing.T) {
	tk := mustLoad(t, filepath.Join(qwen35Dir, "tokenizer.json"))
	if !tk.split.marksAreLetters {
		t.Fatal("qwen35-regex tokenizer.json was not recognised as the Qwen3.5 pattern")
	}
	checkCases(t, tk, readRefCases(t, filepath.Join(qwen35Dir, "reference-dev.json")))
}

type tinyReference struct {
	Encode []refCase `json:"encode"`
	Chat   []struct {
		Messages []struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"messages"`
		Text string `json:"text"`
		IDs  []int  `json:"ids"`
	} `json:"chat"`
}

func TestTinyReference(t *testing.T) {
	var ref tinyReference
	readJSONFile(t, filepath.Join(tinyDir, "reference.json"), &ref)
	checkCases(t, mustLoad(t, tinyDir), ref.Encode)
}

func TestTinyChatReference(t *testing.T) {
	var ref tinyReference
	readJSONFile(t, filepath.Join(tinyDir, "reference.json"), &ref)
	tk := mustLoad(t, tinyDir)
	if f, err := tk.ChatFormat(); err != nil || f != ChatML {
		t.Fatalf("ChatFormat = %q, %v; want %q", f, err, ChatML)
	}
	if len(ref.Chat) == 0 {
		t.Fatal("no chat cases")
	}
	for i, c := range ref.Chat {
		var msgs []Message
		for _, m := range c.Messages {
			msgs = append(msgs, Message{Role: m.Role, Content: m.Content})
		}
		text, err := tk.FormatChat(msgs, ChatOptions{AddGenerationPrompt: true})
		if err != nil {
			t.Fatal(err)
		}
		if text != c.Text {
			t.Errorf("chat %d: FormatChat = %q, want %q", i, text, c.Text)
		}
		if ids := tk.Encode(text); !slices.Equal(ids, c.IDs) {
			t.Errorf("chat %d: ids %v, want %v", i, ids, c.IDs)
		}
	}
}

func TestStopTokens(t *testing.T) {
	for _, tc := range []struct {
		path string
		want []int
	}{
		{filepath.Join(qwen3Dir, "tokenizer.json"), []int{151645, 151643}},
		{tinyDir, []int{4002, 4000}},
	} {
		if got := mustLoad(t, tc.path).StopTokens(); !slices.Equal(got, tc.want) {
			t.Errorf("%s: StopTokens = %v, want %v", tc.path, got, tc.want)
		}
	}
}

func TestTokenID(t *testing.T) {
	tk := mustLoad(t, filepath.Join(qwen3Dir, "tokenizer.json"))
	bin := viaBinary(t, tk)
	for _, tc := range []struct {
		s  string
		id int
	}{
		{"<|endoftext|>", 151643}, {"<|im_start|>", 151644}, {"<|im_end|>", 151645},
		{"<think>", 151667}, {"</think>", 151668}, {"Ġ", 220}, {"Hello", 9707}, {"!", 0},
	} {
		for name, tok := range map[string]*Tokenizer{"json": tk, "bin": bin} {
			if id, ok := tok.TokenID(tc.s); !ok || id != tc.id {
				t.Errorf("%s: TokenID(%q) = %d, %v; want %d", name, tc.s, id, ok, tc.id)
			}
		}
	}
	if _, ok := tk.TokenID("not a token at all"); ok {
		t.Error("TokenID found a token that does not exist")
	}
	if got := tk.VocabSize(); got != 151669 {
		t.Errorf("VocabSize = %d, want 151669", got)
	}
	if !tk.IsSpecial(151645) || tk.IsSpecial(151667) || tk.IsSpecial(9707) {
		t.Error("IsSpecial: want <|im_end|> special, <think> and Hello not")
	}
}

// TestModelPrompts checks the prompts of the golden model references: the
// first prompt_len ids HF produced for each prompt text (with the tokenizer
// shipped next to each checkpoint) must be ours.
func TestModelPrompts(t *testing.T) {
	for _, m := range []struct{ tokenizer, dir string }{
		{"../../testdata/golden/qwen35moe-tiny/hf", "../../testdata/golden/qwen35moe-tiny"},
		{"../../testdata/golden/qwen3next-tiny/hf", "../../testdata/golden/qwen3next-tiny"},
		{"../../testdata/golden/qwen3moe-tiny/hf", "../../testdata/golden/qwen3moe-tiny"},
		{"../../testdata/models/tiny-code", "../../testdata/models/tiny-code"},
	} {
		tk := mustLoad(t, m.tokenizer)
		var ref struct {
			Prompts []struct {
				Text      string `json:"text"`
				PromptLen int    `json:"prompt_len"`
			} `json:"prompts"`
		}
		readJSONFile(t, filepath.Join(m.dir, "reference.json"), &ref)
		f, err := safetensors.Open(filepath.Join(m.dir, "reference.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range ref.Prompts {
			name := fmt.Sprintf("p%d.ids", i)
			tensor := f.Tensor(name)
			if tensor == nil || tensor.DType != "I64" {
				t.Fatalf("%s: no I64 tensor %q", m.dir, name)
			}
			raw, err := tensor.ReadAll()
			if err != nil {
				t.Fatal(err)
			}
			want := make([]int, p.PromptLen)
			for j := range want {
				want[j] = int(int64(binary.LittleEndian.Uint64(raw[8*j:])))
			}
			if got := tk.Encode(p.Text); !slices.Equal(got, want) {
				t.Errorf("%s prompt %d: ids %v, want %v", m.dir, i, got, want)
			}
		}
		f.Close()
	}
}
