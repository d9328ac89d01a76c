package tokenizer

import (
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

func pieces(p *splitter, s string) []string {
	var out []string
	p.split(s, func(piece string) { out = append(out, piece) })
	return out
}

func TestSplitWorkedExamples(t *testing.T) {
	qwen3, _ := newSplitter(PatternQwen2)
	qwen35, _ := newSplitter(PatternQwen35)
	for _, tc := range []struct {
		name string
		p    *splitter
		in   string
		want []string
	}{
		// reference-math.md §5.1
		{"space run before word", qwen3, "a   b", []string{"a", "  ", " b"}},
		{"digits alone", qwen3, " 123", []string{" ", "1", "2", "3"}},
		{"punct with newlines", qwen3, "x!\n\ny", []string{"x", "!\n\n", "y"}},
		{"newline runs", qwen3, "  \n  \n  x", []string{"  \n  \n", " ", " x"}},
		{"contraction", qwen3, "don't", []string{"don", "'t"}},
		{"prefix punctuation", qwen3, "(word", []string{"(word"}},
		// more corners
		{"empty", qwen3, "", nil},
		{"trailing spaces", qwen3, "trailing   ", []string{"trailing", "   "}},
		{"single space before punct", qwen3, "a !", []string{"a", " !"}},
		{"tab before word", qwen3, "\tword", []string{"\tword"}},
		{"tab before punct", qwen3, "\t!", []string{"\t", "!"}},
		{"upper contraction", qwen3, "DON'T'S", []string{"DON", "'T", "'S"}},
		{"contraction eats only suffix", qwen3, "'sam", []string{"'s", "am"}},
		{"long s folds to s", qwen3, "'ſx", []string{"'ſ", "x"}},
		{"'ll and 'LL", qwen3, "we'll I'LL", []string{"we", "'ll", " I", "'LL"}},
		{"apostrophe alone", qwen3, "' x", []string{"'", " x"}},
		{"crlf", qwen3, "a\r\nb", []string{"a", "\r\n", "b"}},
		{"spaces then crlf", qwen3, "a  \r\n b", []string{"a", "  \r\n", " b"}},
		{"ideographic space run", qwen3, "a\u3000\u3000b", []string{"a", "\u3000", "\u3000b"}},
		{"nbsp before word", qwen3, "\u00a0word", []string{"\u00a0word"}},
		{"cjk is letters", qwen3, "你好，世界", []string{"你好", "，世界"}},
		{"newline never prefixes a word", qwen3, "\nword", []string{"\n", "word"}},
		{"punct run then newline", qwen3, "...\n\n  x", []string{"...\n\n", " ", " x"}},
		// combining marks: Qwen3 treats them as punctuation, Qwen3.5 as letters
		{"qwen3 mark splits word", qwen3, "e\u0301\u0301x", []string{"e", "\u0301\u0301", "x"}},
		{"qwen35 mark joins word", qwen35, "e\u0301\u0301x", []string{"e\u0301\u0301x"}},
		{"qwen3 mark after word", qwen3, "नमस्ते", []string{"नमस", "्त", "े"}},
		{"qwen35 mark after word", qwen35, "नमस्ते", []string{"नमस्ते"}},
		{"qwen35 mark excluded from punct", qwen35, "!\u0301", []string{"!\u0301"}},
		{"qwen35 mark not punct", qwen35, "!!\u0301a", []string{"!!", "\u0301a"}},
		{"qwen3 mark is punct", qwen3, "!!\u0301a", []string{"!!\u0301", "a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := pieces(tc.p, tc.in); !slices.Equal(got, tc.want) {
				t.Errorf("split(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestNewSplitterRejectsUnknownPatterns(t *testing.T) {
	for _, pat := range []string{
		`\s+`,
		strings.Replace(PatternQwen2, `\s+(?!\S)|`, "", 1),
		`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`, // GPT-2
	} {
		if _, err := newSplitter(pat); err == nil || !strings.Contains(err.Error(), "unsupported Split regex") {
			t.Errorf("newSplitter(%q) error = %v, want an unsupported-regex error", pat, err)
		}
	}
}

// regexOracle splits like the tokenizer.json regex using Go's regexp for each
// alternative (tried in order at every position, Perl leftmost-first like
// Oniguruma) and explicit code only for the look-ahead of alternative 6. It
// is an independent implementation to check the scanner against.
type regexOracle struct {
	alts []*regexp.Regexp // alternatives 1–5 anchored; 6 and 7 are whitespace
	ws   *regexp.Regexp
}

// wsClass is Unicode White_Space: Go's \s is ASCII-only.
const wsClass = `\t\n\v\f\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}`

func newRegexOracle(marks bool) *regexOracle {
	letters, punct := `\p{L}`, `[^`+wsClass+`\p{L}\p{N}]`
	if marks {
		letters, punct = `[\p{L}\p{M}]`, `[^`+wsClass+`\p{L}\p{M}\p{N}]`
	}
	o := &regexOracle{ws: regexp.MustCompile(`^[` + wsClass + `]+`)}
	for _, alt := range []string{
		`(?i:'s|'t|'re|'ve|'m|'ll|'d)`,
		`[^\r\n\p{L}\p{N}]?` + letters + `+`,
		`\p{N}`,
		` ?` + punct + `+[\r\n]*`,
		`[` + wsClass + `]*[\r\n]+`,
	} {
		o.alts = append(o.alts, regexp.MustCompile(`^(?:`+alt+`)`))
	}
	return o
}

func (o *regexOracle) next(s string, i int) int {
	for _, re := range o.alts {
		if m := re.FindStringIndex(s[i:]); m != nil && m[1] > 0 {
			return i + m[1]
		}
	}
	m := o.ws.FindStringIndex(s[i:])
	if m == nil {
		return -1 // nothing matches: cannot happen for the Qwen patterns
	}
	// \s+(?!\S): backtrack from the longest run until the look-ahead holds.
	for end := i + m[1]; end > i; {
		if end == len(s) {
			return end
		}
		if r, _ := utf8.DecodeRuneInString(s[end:]); strings.ContainsRune(" \t\n\v\f\r\u0085\u00a0\u1680\u2028\u2029\u202f\u205f\u3000", r) || (r >= 0x2000 && r <= 0x200a) {
			return end
		}
		_, size := utf8.DecodeLastRuneInString(s[i:end])
		end -= size
	}
	return i + m[1] // \s+
}

func (o *regexOracle) split(s string) []string {
	var out []string
	for i := 0; i < len(s); {
		j := o.next(s, i)
		if j <= i {
			return append(out, "<no match at "+s[i:]+">")
		}
		out = append(out, s[i:j])
		i = j
	}
	return out
}

func TestSplitMatchesRegexOracle(t *testing.T) {
	for _, dir := range []string{qwen3Dir, qwen35Dir} {
		tk := mustLoad(t, filepath.Join(dir, "tokenizer.json"))
		oracle := newRegexOracle(tk.split.marksAreLetters)
		for _, c := range readRefCases(t, filepath.Join(dir, "reference-dev.json")) {
			text := norm.NFC.String(c.Text)
			if got, want := pieces(tk.split, text), oracle.split(text); !slices.Equal(got, want) {
				t.Errorf("%s: split(%q)\n got  %q\n want %q", dir, text, got, want)
			}
		}
	}
}

// fuzzSeeds adds the reference texts and some hand-made corners as seeds.
func fuzzSeeds(f *testing.F) {
	for _, c := range readRefCases(f, filepath.Join(qwen35Dir, "reference-dev.json")) {
		f.Add(c.Text)
	}
	for _, s := range []string{"", " ", "  \n \t\r\n x", "'S'll", "e\u0301\u0338>", "\xff\xe4\xb8", "<|im_end|>\u0338", "<think><|im_start|>"} {
		f.Add(s)
	}
}

// FuzzSplit checks that the scanner never panics, tiles its input and agrees
// with the regexp-based oracle, for both patterns.
func FuzzSplit(f *testing.F) {
	fuzzSeeds(f)
	qwen3, _ := newSplitter(PatternQwen2)
	qwen35, _ := newSplitter(PatternQwen35)
	oracles := map[*splitter]*regexOracle{qwen3: newRegexOracle(false), qwen35: newRegexOracle(true)}
	f.Fuzz(func(t *testing.T, s string) {
		s = sanitizeUTF8(s)
		for p, oracle := range oracles {
			got := pieces(p, s)
			if strings.Join(got, "") != s || slices.Contains(got, "") {
				t.Fatalf("pieces %q do not tile %q", got, s)
			}
			if want := oracle.split(s); !slices.Equal(got, want) {
				t.Fatalf("marks=%v split(%q)\n got  %q\n want %q", p.marksAreLetters, s, got, want)
			}
		}
	})
}

// FuzzEncode checks that any input (ill-formed UTF-8 included) encodes
// without panicking and decodes back to its normalized form.
func FuzzEncode(f *testing.F) {
	fuzzSeeds(f)
	tk := mustLoad(f, filepath.Join(qwen35Dir, "tokenizer.json"))
	f.Fuzz(func(t *testing.T, s string) {
		ids := tk.Encode(s)
		got := tk.Decode(ids)
		clean := sanitizeUTF8(s)
		// HF normalizes the text between added tokens piece by piece, so
		// NFC of the whole text is the expectation only when no added
		// token sits next to a character NFC could combine across it.
		want := normalizeLikeHF(tk, clean)
		if got != want {
			t.Fatalf("Decode(Encode(%q)) = %q, want %q", s, got, want)
		}
		if !strings.Contains(clean, "<") && got != nfc(clean) {
			t.Fatalf("Decode(Encode(%q)) = %q, want NFC %q", s, got, nfc(clean))
		}
	})
}

// normalizeLikeHF applies NFC to the text between raw-matched added tokens.
func normalizeLikeHF(tk *Tokenizer, s string) string {
	var b strings.Builder
	for _, seg := range tk.rawAdded.split(s, nil) {
		if seg.id >= 0 {
			b.WriteString(seg.text)
		} else {
			b.WriteString(nfc(seg.text))
		}
	}
	return b.String()
}
