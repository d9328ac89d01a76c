package tokenizer

import (
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestLossyUTF8 pins the replacement of ill-formed UTF-8 to Python's
// bytes.decode("utf-8", errors="replace") (and Rust's from_utf8_lossy).
func TestLossyUTF8(t *testing.T) {
	for _, tc := range []struct {
		in, want string
	}{
		{"abc", "abc"},
		{"\xe4\xb8a", "\ufffda"},               // truncated 3-byte sequence: one U+FFFD
		{"\xed\xa0\x80", "\ufffd\ufffd\ufffd"}, // surrogate: ED alone is the maximal subpart
		{"\xf0\x9f\x98", "\ufffd"},             // truncated 4-byte sequence
		{"\xf0\x9f\x98\x80", "😀"},
		{"\xc0\xaf", "\ufffd\ufffd"}, // overlong lead
		{"\xff\xfe", "\ufffd\ufffd"},
		{"\xe0\x80\x80", "\ufffd\ufffd\ufffd"}, // overlong 3-byte
		{"\xf4\x90\x80\x80", "\ufffd\ufffd\ufffd\ufffd"},
		{"\x80x", "\ufffdx"},
		{"\xef\xbf\xbd", "\ufffd"}, // U+FFFD itself is valid
	} {
		if got := string(appendLossy(nil, []byte(tc.in))); got != tc.want {
			t.Errorf("lossy(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if got := sanitizeUTF8(tc.in); got != tc.want {
			t.Errorf("sanitizeUTF8(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestIncompleteTail(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{"", 0}, {"a", 0}, {"\xe4", 1}, {"\xe4\xb8", 2}, {"\xe4\xb8\xad", 0},
		{"a\xf0\x9f\x98", 3}, {"\xf0\x9f", 2}, {"\xed\xa0", 0}, {"\xff", 0}, {"\x80", 0},
		{"\xc3", 1}, {"\xc3\xa9", 0}, {"\xe0\x80", 0},
	} {
		if got := incompleteTail([]byte(tc.in)); got != tc.want {
			t.Errorf("incompleteTail(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

// TestInvalidUTF8Input documents the choice for ill-formed input: it is
// encoded as the text with U+FFFD in place of each maximal ill-formed subpart,
// which is what HF sees when Python decodes the bytes with errors="replace".
func TestInvalidUTF8Input(t *testing.T) {
	tk := mustLoad(t, filepath.Join(qwen3Dir, "tokenizer.json"))
	for _, tc := range []struct{ in, same string }{
		{"a\xffb", "a\ufffdb"},
		{"\xe4\xb8 ok", "\ufffd ok"},
		{"<|im_end|>\xc0", "<|im_end|>\ufffd"},
	} {
		if got, want := tk.Encode(tc.in), tk.Encode(tc.same); !slices.Equal(got, want) {
			t.Errorf("Encode(%q) = %v, want Encode(%q) = %v", tc.in, got, tc.same, want)
		}
		if got := tk.Decode(tk.Encode(tc.in)); !utf8.ValidString(got) || got != tc.same {
			t.Errorf("Decode(Encode(%q)) = %q, want %q", tc.in, got, tc.same)
		}
	}
}

func streamAll(tk *Tokenizer, ids []int) (chunks []string) {
	d := tk.NewStreamDecoder()
	for _, id := range ids {
		chunks = append(chunks, d.Add(id))
	}
	return append(chunks, d.Flush())
}

// TestStreamDecoder checks that streaming emits only complete characters and
// adds up to Decode, on the reference texts and on random id sequences
// (which split characters arbitrarily and contain ill-formed byte runs).
func TestStreamDecoder(t *testing.T) {
	tk := mustLoad(t, filepath.Join(qwen3Dir, "tokenizer.json"))
	for _, c := range readRefCases(t, filepath.Join(qwen3Dir, "reference-dev.json")) {
		chunks := streamAll(tk, c.IDs)
		for _, ch := range chunks {
			if strings.ContainsRune(ch, utf8.RuneError) {
				t.Fatalf("%q: stream emitted a replacement character in %q", c.Text, chunks)
			}
		}
		if got := strings.Join(chunks, ""); got != c.Decoded {
			t.Fatalf("%q: stream gives %q, want %q", c.Text, got, c.Decoded)
		}
	}
	// A character split across tokens is held back until it completes.
	const rare = "\U00013000" // an Egyptian hieroglyph: no token holds all 4 bytes
	ids := tk.Encode(rare)
	if len(ids) < 2 {
		t.Fatalf("want %q to take several byte-level tokens, got %v", rare, ids)
	}
	chunks := streamAll(tk, ids)
	if !slices.Equal(chunks[:len(ids)-1], make([]string, len(ids)-1)) || chunks[len(ids)-1] != rare {
		t.Errorf("stream of %q = %q, want nothing until the last token", rare, chunks)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for range 300 {
		ids := make([]int, 1+rng.IntN(20))
		for i := range ids {
			ids[i] = rng.IntN(tk.VocabSize() + 10) // includes ids that name no token
		}
		if got, want := strings.Join(streamAll(tk, ids), ""), tk.Decode(ids); got != want {
			t.Fatalf("ids %v: stream %q, Decode %q", ids, got, want)
		}
	}
}
