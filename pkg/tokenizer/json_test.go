package tokenizer

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/text/unicode/norm"
)

// tinyJSON returns the tiny tokenizer.json as a generic document to modify.
func tinyJSON(t *testing.T) map[string]any {
	t.Helper()
	var doc map[string]any
	readJSONFile(t, filepath.Join(tinyDir, JSONFile), &doc)
	return doc
}

func loadDoc(t *testing.T, doc map[string]any) (*Tokenizer, error) {
	t.Helper()
	data, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return LoadJSON(bytes.NewReader(data))
}

func TestMergesStringForm(t *testing.T) {
	doc := tinyJSON(t)
	model := doc["model"].(map[string]any)
	var lines []any
	for _, m := range model["merges"].([]any) {
		pair := m.([]any)
		lines = append(lines, pair[0].(string)+" "+pair[1].(string))
	}
	model["merges"] = lines
	tk, err := loadDoc(t, doc)
	if err != nil {
		t.Fatal(err)
	}
	ref := mustLoad(t, tinyDir)
	if !slices.Equal(tk.mergeList, ref.mergeList) {
		t.Fatal(`"a b" merges differ from [a, b] merges`)
	}
	var cases tinyReference
	readJSONFile(t, filepath.Join(tinyDir, "reference.json"), &cases)
	for _, c := range cases.Encode {
		if got := tk.Encode(c.Text); !slices.Equal(got, c.IDs) {
			t.Errorf("%q: %v, want %v", c.Text, got, c.IDs)
		}
	}
}

// TestJSONEscapes checks the dedicated scanner on escaped keys and merges
// (tokenizer.json writers may escape non-ASCII and quotes).
func TestJSONEscapes(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(tinyDir, JSONFile))
	if err != nil {
		t.Fatal(err)
	}
	// Re-encode with every non-ASCII character escaped as \uXXXX.
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	ascii, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, r := range string(ascii) {
		switch {
		case r < 0x80:
			b.WriteRune(r)
		case r > 0xFFFF:
			r -= 0x10000
			b.WriteString(`\u` + hex4(0xD800+(r>>10)) + `\u` + hex4(0xDC00+(r&0x3FF)))
		default:
			b.WriteString(`\u` + hex4(r))
		}
	}
	tk, err := LoadJSON(strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	ref := mustLoad(t, tinyDir)
	if tk.strs != ref.strs || !slices.Equal(tk.mergeList, ref.mergeList) {
		t.Fatal("escaped tokenizer.json loads differently")
	}
	for _, bad := range []string{`{"model": {"vocab": {"\ud800": 0}}}`, `{"model": {"vocab": {"a": 0}`, `{"model": {"vocab": {"a": -1}}}`} {
		if _, err := LoadJSON(strings.NewReader(bad)); err == nil {
			t.Errorf("LoadJSON(%s) succeeded", bad)
		}
	}
}

func hex4(r rune) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[r>>12&15], digits[r>>8&15], digits[r>>4&15], digits[r&15]})
}

func TestUnsupportedComponents(t *testing.T) {
	for _, tc := range []struct {
		name   string
		modify func(doc map[string]any)
		want   string
	}{
		{"NFKC normalizer", func(d map[string]any) { d["normalizer"] = map[string]any{"type": "NFKC"} }, `normalizer type "NFKC"`},
		{"unknown regex", func(d map[string]any) {
			split := d["pre_tokenizer"].(map[string]any)["pretokenizers"].([]any)[0].(map[string]any)
			split["pattern"] = map[string]any{"Regex": `\w+|\s+`}
		}, "unsupported Split regex"},
		{"string pattern", func(d map[string]any) {
			split := d["pre_tokenizer"].(map[string]any)["pretokenizers"].([]any)[0].(map[string]any)
			split["pattern"] = map[string]any{"String": " "}
		}, "not a Regex"},
		{"GPT-2 byte level", func(d map[string]any) {
			d["pre_tokenizer"] = map[string]any{"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}
		}, "want Sequence"},
		{"prefix space", func(d map[string]any) {
			bl := d["pre_tokenizer"].(map[string]any)["pretokenizers"].([]any)[1].(map[string]any)
			bl["add_prefix_space"] = true
		}, "add_prefix_space"},
		{"wordpiece decoder", func(d map[string]any) { d["decoder"] = map[string]any{"type": "WordPiece"} }, `decoder type "WordPiece"`},
		{"unigram", func(d map[string]any) { d["model"].(map[string]any)["type"] = "Unigram" }, `model.type "Unigram"`},
		{"byte fallback", func(d map[string]any) { d["model"].(map[string]any)["byte_fallback"] = true }, "byte_fallback"},
		{"dropout", func(d map[string]any) { d["model"].(map[string]any)["dropout"] = 0.1 }, "dropout"},
		{"bad merge", func(d map[string]any) {
			m := d["model"].(map[string]any)
			m["merges"] = append(m["merges"].([]any), []any{"zzzq", "qqqz"})
		}, "not in the vocabulary"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := tinyJSON(t)
			tc.modify(doc)
			_, err := loadDoc(t, doc)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestAddedTokenFlags exercises lstrip, rstrip, single_word and normalized on
// the tiny vocabulary, with the behaviour of HF's AddedVocabulary.
func TestAddedTokenFlags(t *testing.T) {
	doc := tinyJSON(t)
	added := doc["added_tokens"].([]any)
	extra := []map[string]any{
		{"id": 4100, "content": "<L>", "lstrip": true},
		{"id": 4101, "content": "<R>", "rstrip": true},
		{"id": 4102, "content": "word", "single_word": true},
		{"id": 4103, "content": "é!", "normalized": true},    // NFC form
		{"id": 4104, "content": "<|im", "normalized": false}, // a prefix of <|im_start|>: longest wins
	}
	for _, e := range extra {
		for _, k := range []string{"lstrip", "rstrip", "single_word", "normalized"} {
			if _, ok := e[k]; !ok {
				e[k] = false
			}
		}
		e["special"] = false
		added = append(added, e)
	}
	doc["added_tokens"] = added
	tk, err := loadDoc(t, doc)
	if err != nil {
		t.Fatal(err)
	}
	if ids := tk.Encode("e\u0301!x"); len(ids) == 0 || ids[0] != 4103 {
		t.Errorf("Encode = %v, want the normalized added token 4103 first", ids)
	}
	segs := func(s string) []string {
		var out []string
		for _, seg := range tk.rawAdded.split(s, nil) {
			if seg.id >= 0 {
				out = append(out, "["+seg.text+"]")
				continue
			}
			for _, sub := range tk.normAdded.split(norm.NFC.String(seg.text), nil) {
				if sub.id >= 0 {
					out = append(out, "["+sub.text+"]")
				} else {
					out = append(out, sub.text)
				}
			}
		}
		return out
	}
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"a  <L> b", []string{"a", "[  <L>]", " b"}},
		{"a <R>  \n b", []string{"a ", "[<R>  \n ]", "b"}},
		{"a word b", []string{"a ", "[word]", " b"}},
		{"swordfish word_", []string{"swordfish word_"}},
		{"(word)", []string{"(", "[word]", ")"}},
		{"e\u0301!x", []string{"[\u00e9!]", "x"}}, // matched after NFC composes e + U+0301
		{"<|im_start|>x<|imy", []string{"[<|im_start|>]", "x", "[<|im]", "y"}},
	} {
		if got := segs(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("split(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestIgnoreMerges covers model.ignore_merges (Llama-3-style tokenizers): a
// pre-token that is itself a vocabulary entry becomes that id without BPE.
func TestIgnoreMerges(t *testing.T) {
	doc := tinyJSON(t)
	model := doc["model"].(map[string]any)
	model["ignore_merges"] = true
	// A vocabulary entry no merge sequence can build: BPE would split it.
	model["vocab"].(map[string]any)["Ġzzqx"] = float64(4090)
	tk, err := loadDoc(t, doc)
	if err != nil {
		t.Fatal(err)
	}
	if got := tk.Encode(" zzqx"); !slices.Equal(got, []int{4090}) {
		t.Errorf("ignore_merges: Encode(\" zzqx\") = %v, want [4090]", got)
	}
	delete(model, "ignore_merges")
	plain, err := loadDoc(t, doc)
	if err != nil {
		t.Fatal(err)
	}
	if got := plain.Encode(" zzqx"); slices.Equal(got, []int{4090}) {
		t.Errorf("without ignore_merges, Encode(\" zzqx\") = %v should go through BPE", got)
	}
	if back := viaBinary(t, tk); !slices.Equal(back.Encode(" zzqx"), []int{4090}) {
		t.Error("tokenizer.bin lost ignore_merges")
	}
}
