package tokenizer

import (
	"slices"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// cgj is U+034F COMBINING GRAPHEME JOINER.
const cgj = "\u034f"

// nfc normalizes s to NFC exactly as Unicode (and HF tokenizers, via Rust's
// unicode-normalization) defines it.
//
// golang.org/x/text/unicode/norm implements the Stream-Safe Text Format: after
// 30 consecutive non-starters it inserts a U+034F, which plain NFC does not.
// Text with such runs (zalgo text) is rare, so the fast x/text result is used
// unless it gained a U+034F, and the exact slow path runs only then.
func nfc(s string) string {
	out := norm.NFC.String(s)
	if strings.Contains(out, cgj) && strings.Count(out, cgj) != strings.Count(s, cgj) {
		return nfcExact(s)
	}
	return out
}

// Hangul syllable arithmetic (Unicode §3.12).
const (
	hangulSBase, hangulLBase, hangulVBase, hangulTBase = 0xAC00, 0x1100, 0x1161, 0x11A7
	hangulLCount, hangulVCount, hangulTCount           = 19, 21, 28
	hangulNCount                                       = hangulVCount * hangulTCount
	hangulSCount                                       = hangulLCount * hangulNCount
)

// nfcExact is the textbook NFC: full canonical decomposition, canonical
// ordering of non-starters, canonical composition. Character data (canonical
// decompositions, combining classes, composition pairs) comes from x/text,
// queried on short strings that cannot overflow.
func nfcExact(s string) string {
	// 1. Canonical decomposition.
	var runes []rune
	for _, r := range s {
		runes = appendDecomposed(runes, r)
	}
	// 2. Canonical ordering: stable sort of each run of non-starters.
	ccc := make([]uint8, len(runes))
	for i, r := range runes {
		ccc[i] = combiningClass(r)
	}
	for i := 0; i < len(runes); {
		if ccc[i] == 0 {
			i++
			continue
		}
		j := i
		for j < len(runes) && ccc[j] != 0 {
			j++
		}
		type mark struct {
			r   rune
			ccc uint8
		}
		run := make([]mark, j-i)
		for k := range run {
			run[k] = mark{runes[i+k], ccc[i+k]}
		}
		slices.SortStableFunc(run, func(a, b mark) int { return int(a.ccc) - int(b.ccc) })
		for k, m := range run {
			runes[i+k], ccc[i+k] = m.r, m.ccc
		}
		i = j
	}
	// 3. Canonical composition.
	out := make([]rune, 0, len(runes))
	starter := -1   // index in out of the last starter
	lastClass := -1 // class of the last character appended after it
	for i, r := range runes {
		c := int(ccc[i])
		// r is blocked from the starter by anything in between whose class
		// is zero or not below r's; lastClass is 0 only right after it.
		if starter >= 0 && (lastClass == 0 || lastClass < c) {
			if composite, ok := compose(out[starter], r); ok {
				out[starter] = composite
				continue
			}
		}
		if c == 0 {
			starter = len(out)
			lastClass = 0
		} else {
			lastClass = c
		}
		out = append(out, r)
	}
	return string(out)
}

func appendDecomposed(dst []rune, r rune) []rune {
	if r >= hangulSBase && r < hangulSBase+hangulSCount {
		si := r - hangulSBase
		dst = append(dst, hangulLBase+si/hangulNCount, hangulVBase+(si%hangulNCount)/hangulTCount)
		if t := si % hangulTCount; t != 0 {
			dst = append(dst, hangulTBase+t)
		}
		return dst
	}
	var buf [utf8.UTFMax]byte
	d := norm.NFD.Properties(buf[:utf8.EncodeRune(buf[:], r)]).Decomposition()
	if d == nil {
		return append(dst, r)
	}
	for _, x := range string(d) { // already the full canonical decomposition
		dst = append(dst, x)
	}
	return dst
}

func combiningClass(r rune) uint8 {
	var buf [utf8.UTFMax]byte
	return norm.NFD.Properties(buf[:utf8.EncodeRune(buf[:], r)]).CCC()
}

// compose returns the primary composite of a followed by b, if any.
func compose(a, b rune) (rune, bool) {
	if a >= hangulLBase && a < hangulLBase+hangulLCount && b >= hangulVBase && b < hangulVBase+hangulVCount {
		return hangulSBase + ((a-hangulLBase)*hangulVCount+(b-hangulVBase))*hangulTCount, true
	}
	if si := a - hangulSBase; si >= 0 && si < hangulSCount && si%hangulTCount == 0 && b > hangulTBase && b < hangulTBase+hangulTCount {
		return a + (b - hangulTBase), true
	}
	pair := string([]rune{a, b})
	c := norm.NFC.String(pair)
	r, size := utf8.DecodeRuneInString(c)
	if size != len(c) || size == 0 {
		return 0, false
	}
	// NFC of the pair may also reorder; accept only a composite whose
	// decomposition is exactly a's followed by b.
	if norm.NFD.String(c) != norm.NFD.String(string(a))+string(b) {
		return 0, false
	}
	return r, true
}
