package tokenizer

import (
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// AddedToken is an entry of tokenizer.json's added_tokens list. Added tokens
// are matched in the text before pre-tokenization and always become one id.
type AddedToken struct {
	ID      int
	Content string
	// Special tokens are control tokens (<|im_start|>, <|endoftext|>);
	// non-special ones (<think>, <tool_call>) are ordinary text to the model.
	// Both are matched the same way; the flag only matters to callers that
	// want to hide control tokens.
	Special bool
	// Normalized tokens are matched in the normalized (NFC) text, the others
	// in the raw text before normalization.
	Normalized bool
	// LStrip and RStrip make the match swallow whitespace on that side.
	LStrip, RStrip bool
	// SingleWord tokens only match when not adjacent to word characters.
	SingleWord bool
}

// addedMatcher finds added tokens in text the way HF tokenizers'
// AddedVocabulary does (an Aho-Corasick automaton in LeftmostLongest mode):
// at the leftmost position where any token matches, the longest one wins.
// Qwen has a few dozen added tokens, so candidates are indexed by first byte
// and tried longest first.
type addedMatcher struct {
	byFirst [256][]int // indexes into tokens, longest content first
	tokens  []matchToken
	// soleFirst is the first byte shared by every token, or -1. Qwen's added
	// tokens all start with '<', which lets find skip ahead with IndexByte.
	soleFirst int
}

type matchToken struct {
	text string // the content, NFC-normalized for Normalized tokens
	tok  *AddedToken
}

// segment is a piece of text: either an added token (id >= 0) or text still
// to be pre-tokenized (id < 0).
type segment struct {
	text string
	id   int
}

func newAddedMatcher(tokens []matchToken) *addedMatcher {
	if len(tokens) == 0 {
		return nil
	}
	m := &addedMatcher{tokens: tokens, soleFirst: -1}
	firsts := 0
	for i, t := range tokens {
		if t.text == "" {
			continue
		}
		if len(m.byFirst[t.text[0]]) == 0 {
			firsts++
			m.soleFirst = int(t.text[0])
		}
		m.byFirst[t.text[0]] = append(m.byFirst[t.text[0]], i)
	}
	if firsts != 1 {
		m.soleFirst = -1
	}
	for b := range m.byFirst {
		list := m.byFirst[b]
		// Longest first; ties (duplicate contents) keep list order, as the
		// automaton reports the first pattern added.
		sort.SliceStable(list, func(x, y int) bool {
			return len(tokens[list[x]].text) > len(tokens[list[y]].text)
		})
	}
	return m
}

// find returns the leftmost-longest match at or after from: its start, end
// and token index, or start = -1.
func (m *addedMatcher) find(s string, from int) (start, end, idx int) {
	for i := from; i < len(s); i++ {
		if m.soleFirst >= 0 {
			k := strings.IndexByte(s[i:], byte(m.soleFirst))
			if k < 0 {
				break
			}
			i += k
		}
		cands := m.byFirst[s[i]]
		for _, k := range cands {
			if strings.HasPrefix(s[i:], m.tokens[k].text) {
				return i, i + len(m.tokens[k].text), k
			}
		}
	}
	return -1, -1, -1
}

// split cuts s into added tokens and the text between them, appending the
// pieces to out. The single_word, lstrip and rstrip rules follow HF's
// AddedVocabulary::find_matches.
func (m *addedMatcher) split(s string, out []segment) []segment {
	if m == nil {
		return append(out, segment{text: s, id: -1})
	}
	prev := 0 // end of the last emitted piece
	for pos := 0; pos < len(s); {
		start, end, k := m.find(s, pos)
		if start < 0 {
			break
		}
		tok := m.tokens[k].tok
		pos = end
		if tok.SingleWord && (endsWithWordChar(s[:start]) || startsWithWordChar(s[end:])) {
			// Not a whole word here; the automaton moves on after the match.
			continue
		}
		if tok.LStrip {
			start = max(len(strings.TrimRightFunc(s[:start], unicode.IsSpace)), prev)
		}
		if tok.RStrip {
			end = len(s) - len(strings.TrimLeftFunc(s[end:], unicode.IsSpace))
			pos = end
		}
		if prev < start {
			out = append(out, segment{text: s[prev:start], id: -1})
		}
		out = append(out, segment{text: s[start:end], id: tok.ID})
		prev = end
	}
	if prev < len(s) {
		out = append(out, segment{text: s[prev:], id: -1})
	}
	return out
}

// isWordChar is regex \w in Unicode mode: letters, marks, decimal digits,
// connector punctuation (such as '_') and the joiners.
func isWordChar(r rune) bool {
	return unicode.IsLetter(r) || unicode.IsMark(r) || unicode.Is(unicode.Nd, r) ||
		unicode.Is(unicode.Pc, r) || r == 0x200C || r == 0x200D
}

func endsWithWordChar(s string) bool {
	r, size := utf8.DecodeLastRuneInString(s)
	return size > 0 && isWordChar(r)
}

func startsWithWordChar(s string) bool {
	r, size := utf8.DecodeRuneInString(s)
	return size > 0 && isWordChar(r)
}
