package tokenizer

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// The split regexes this package recognises, exactly as tokenizer.json spells
// them. Go's regexp (RE2) cannot run them because of the look-ahead in
// `\s+(?!\S)`, so each is implemented by a hand-written scanner.
const (
	// PatternQwen2 is the Qwen2 / Qwen2.5 / Qwen3 / Qwen3-Next split regex.
	PatternQwen2 = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	// PatternQwen35 is Qwen3.5's split regex: combining marks (\p{M}) join
	// letter runs and are excluded from punctuation runs.
	PatternQwen35 = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// splitter is a pre-tokenizer scanner for one of the recognised patterns.
type splitter struct {
	pattern string
	// marksAreLetters selects the Qwen3.5 behaviour: \p{M} belongs to letter
	// runs (alternative 2) and not to punctuation runs (alternative 4).
	marksAreLetters bool
}

// newSplitter recognises a Split regex. There is no fallback: a pattern this
// package does not implement exactly is an error, because a near miss would
// silently produce ids the model was never trained on.
func newSplitter(pattern string) (*splitter, error) {
	switch pattern {
	case PatternQwen2:
		return &splitter{pattern: pattern}, nil
	case PatternQwen35:
		return &splitter{pattern: pattern, marksAreLetters: true}, nil
	}
	return nil, fmt.Errorf("unsupported Split regex %q: this tokenizer implements only the Qwen2/Qwen3 pattern %q and the Qwen3.5 pattern %q", pattern, PatternQwen2, PatternQwen35)
}

// Character classes of the patterns, as bits.
const (
	clsLetter  = 1 << iota // \p{L}
	clsNumber              // \p{N}
	clsMark                // \p{M}
	clsSpace               // \s (Unicode White_Space)
	clsNewline             // \r or \n
)

// asciiClass caches the classes of the ASCII range, where most text lives.
var asciiClass = func() (t [utf8.RuneSelf]uint8) {
	for c := range rune(utf8.RuneSelf) {
		t[c] = classifyRune(c)
	}
	return t
}()

func classifyRune(r rune) uint8 {
	var c uint8
	switch {
	case unicode.IsLetter(r):
		c |= clsLetter
	case unicode.IsNumber(r):
		c |= clsNumber
	case unicode.IsMark(r):
		c |= clsMark
	case unicode.IsSpace(r):
		c |= clsSpace
	}
	if r == '\r' || r == '\n' {
		c |= clsNewline
	}
	return c
}

// classAt decodes the rune at s[i] and returns its classes and size; i must be
// below len(s). Ill-formed bytes never reach here (Encode sanitizes first).
func classAt(s string, i int) (uint8, int) {
	if c := s[i]; c < utf8.RuneSelf {
		return asciiClass[c], 1
	}
	r, size := utf8.DecodeRuneInString(s[i:])
	return classifyRune(r), size
}

// letterMask is the class set of alternative 2's body.
func (p *splitter) letterMask() uint8 {
	if p.marksAreLetters {
		return clsLetter | clsMark
	}
	return clsLetter
}

// punctExcluded is the class set alternative 4's run excludes ([^\s\p{L}\p{N}]
// or, for Qwen3.5, [^\s\p{L}\p{M}\p{N}]).
func (p *splitter) punctExcluded() uint8 {
	if p.marksAreLetters {
		return clsSpace | clsLetter | clsNumber | clsMark
	}
	return clsSpace | clsLetter | clsNumber
}

// runOf returns the end of the run of characters whose class intersects mask,
// starting at i.
func runOf(s string, i int, mask uint8) int {
	for i < len(s) {
		c, size := classAt(s, i)
		if c&mask == 0 {
			break
		}
		i += size
	}
	return i
}

// runNotOf returns the end of the run of characters whose class does not
// intersect mask, starting at i.
func runNotOf(s string, i int, mask uint8) int {
	for i < len(s) {
		c, size := classAt(s, i)
		if c&mask != 0 {
			break
		}
		i += size
	}
	return i
}

// next returns the end of the pre-token that starts at i (i < len(s)). The
// alternatives are tried in the regex's order with leftmost-first semantics,
// which is what HF tokenizers' Oniguruma engine does:
//
//  1. (?i:'s|'t|'re|'ve|'m|'ll|'d)
//  2. [^\r\n\p{L}\p{N}]?\p{L}+              (Qwen3.5: [\p{L}\p{M}]+)
//  3. \p{N}
//  4. ' '?[^\s\p{L}\p{N}]+[\r\n]*          (Qwen3.5: also excludes \p{M})
//  5. \s*[\r\n]+
//  6. \s+(?!\S)
//  7. \s+
//
// Every character matches one of them, so the pre-tokens tile the text.
func (p *splitter) next(s string, i int) int {
	c, size := classAt(s, i)
	j := i + size

	// 1. Contractions. Case folding follows Unicode: 'ſ' (U+017F) folds to s.
	if s[i] == '\'' && j < len(s) {
		if n := contractionLen(s[j:]); n > 0 {
			return j + n
		}
	}

	// 2. Letter runs with an optional leading non-letter, non-number,
	// non-newline character (a space, tab, punctuation, symbol or mark).
	letters := p.letterMask()
	if c&letters != 0 {
		return runOf(s, j, letters)
	}
	if c&(clsLetter|clsNumber|clsNewline) == 0 && j < len(s) {
		if c2, size2 := classAt(s, j); c2&letters != 0 {
			return runOf(s, j+size2, letters)
		}
	}

	// 3. A single number character: digits are never grouped.
	if c&clsNumber != 0 {
		return j
	}

	// 4. Punctuation runs, optionally after one space, then any newlines.
	punct := p.punctExcluded()
	if c&punct == 0 {
		return runOf(s, runNotOf(s, j, punct), clsNewline)
	}
	if s[i] == ' ' && j < len(s) {
		if c2, size2 := classAt(s, j); c2&punct == 0 {
			return runOf(s, runNotOf(s, j+size2, punct), clsNewline)
		}
	}

	// Only whitespace is left (c has clsSpace).
	end := i
	lastNewlineEnd := -1
	lastCharStart := i
	for end < len(s) {
		c2, size2 := classAt(s, end)
		if c2&clsSpace == 0 {
			break
		}
		lastCharStart = end
		end += size2
		if c2&clsNewline != 0 {
			lastNewlineEnd = end
		}
	}
	// 5. The whitespace run up to and including its last CR or LF.
	if lastNewlineEnd > 0 {
		return lastNewlineEnd
	}
	// 6. \s+(?!\S): at the end of the text the whole run; otherwise all but
	// the last character, which stays with the following word.
	if end == len(s) {
		return end
	}
	if lastCharStart > i {
		return lastCharStart
	}
	// 7. A single whitespace character before a non-space.
	return end
}

// contractionLen matches s (the text after an apostrophe) against
// s|t|re|ve|m|ll|d case-insensitively and returns the matched length.
func contractionLen(s string) int {
	first, size := rune(s[0]), 1
	if first >= utf8.RuneSelf {
		first, size = utf8.DecodeRuneInString(s)
	}
	second := func(want byte) bool {
		return len(s) > size && (s[size]|0x20) == want
	}
	switch first {
	case 's', 'S', 'ſ', 't', 'T', 'm', 'M', 'd', 'D':
		return size
	case 'r', 'R':
		if second('e') {
			return 2
		}
	case 'v', 'V':
		if second('e') {
			return 2
		}
	case 'l', 'L':
		if second('l') {
			return 2
		}
	}
	return 0
}

// split calls emit for each pre-token of s, in order.
func (p *splitter) split(s string, emit func(piece string)) {
	for i := 0; i < len(s); {
		j := p.next(s, i)
		emit(s[i:j])
		i = j
	}
}
