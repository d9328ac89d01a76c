package tokenizer

import (
	"unicode/utf8"
)

// byteToRune is GPT-2's bytes_to_unicode table: every byte gets a printable
// code point so that BPE vocabularies can be stored as text. Bytes 0x21–0x7E,
// 0xA1–0xAC and 0xAE–0xFF stand for themselves; the other 68 bytes, in
// increasing order, take U+0100, U+0101, … (space → 'Ġ' U+0120, LF → 'Ċ' U+010A).
var byteToRune = func() (t [256]rune) {
	next := rune(0x100)
	for b := range 256 {
		switch {
		case b >= 0x21 && b <= 0x7E, b >= 0xA1 && b <= 0xAC, b >= 0xAE && b <= 0xFF:
			t[b] = rune(b)
		default:
			t[b] = next
			next++
		}
	}
	return t
}()

// runeToByte inverts byteToRune. Every image lies below U+0144, so a small
// array answers; -1 marks code points that are not part of the alphabet.
var runeToByte = func() (t [0x144]int16) {
	for i := range t {
		t[i] = -1
	}
	for b, r := range byteToRune {
		t[r] = int16(b)
	}
	return t
}()

// appendTokenBytes appends the bytes a token string decodes to, following HF's
// ByteLevel decoder: when every character belongs to the byte-level alphabet
// the token is the corresponding bytes; otherwise (an added token such as
// "\n", or a foreign vocabulary entry) it is its own UTF-8 text.
func appendTokenBytes(dst []byte, s string) []byte {
	start := len(dst)
	for i := 0; i < len(s); {
		r, size := rune(s[i]), 1
		if r >= utf8.RuneSelf {
			r, size = utf8.DecodeRuneInString(s[i:])
		}
		if r >= rune(len(runeToByte)) || runeToByte[r] < 0 {
			return append(dst[:start], s...)
		}
		dst = append(dst, byte(runeToByte[r]))
		i += size
	}
	return dst
}

// utf8SeqLen returns the length of the UTF-8 sequence introduced by lead byte
// b and the valid range of its second byte; length 0 means b cannot start a
// sequence. The ranges exclude overlong forms, surrogates and values above
// U+10FFFF, exactly as the Unicode standard's table 3-7 does.
func utf8SeqLen(b byte) (n int, lo, hi byte) {
	switch {
	case b < 0x80:
		return 1, 0, 0
	case b >= 0xC2 && b <= 0xDF:
		return 2, 0x80, 0xBF
	case b == 0xE0:
		return 3, 0xA0, 0xBF
	case b == 0xED:
		return 3, 0x80, 0x9F
	case b >= 0xE1 && b <= 0xEF:
		return 3, 0x80, 0xBF
	case b == 0xF0:
		return 4, 0x90, 0xBF
	case b >= 0xF1 && b <= 0xF3:
		return 4, 0x80, 0xBF
	case b == 0xF4:
		return 4, 0x80, 0x8F
	}
	return 0, 0, 0
}

// validPrefixLen reports how many bytes of b, starting at a lead byte, form a
// valid (possibly incomplete) UTF-8 sequence, and the length the complete
// sequence needs. It returns (0, 0) when b[0] is not a lead byte.
func validPrefixLen(b []byte) (have, need int) {
	need, lo, hi := utf8SeqLen(b[0])
	if need <= 1 {
		return need, need
	}
	have = 1
	for have < need && have < len(b) {
		c := b[have]
		if have == 1 {
			if c < lo || c > hi {
				break
			}
		} else if c < 0x80 || c > 0xBF {
			break
		}
		have++
	}
	return have, need
}

// appendLossy appends b to dst as UTF-8 text, replacing each maximal ill-formed
// subpart with U+FFFD. This is the "substitution of maximal subparts" practice
// that Rust's String::from_utf8_lossy (used by HF tokenizers' decoders) and
// Python's errors="replace" follow; Go's own conversions would instead emit
// one U+FFFD per bad byte.
func appendLossy(dst []byte, b []byte) []byte {
	for i := 0; i < len(b); {
		c := b[i]
		if c < utf8.RuneSelf {
			dst = append(dst, c)
			i++
			continue
		}
		have, need := validPrefixLen(b[i:])
		if have == need && need > 0 {
			dst = append(dst, b[i:i+need]...)
			i += need
			continue
		}
		dst = append(dst, "\uFFFD"...)
		i += max(have, 1)
	}
	return dst
}

// incompleteTail returns how many trailing bytes of b are the valid beginning
// of a UTF-8 sequence that later bytes may still complete; a streaming decoder
// holds exactly those back.
func incompleteTail(b []byte) int {
	for back := 1; back <= 3 && back <= len(b); back++ {
		c := b[len(b)-back]
		if c < 0x80 {
			return 0
		}
		if c < 0xC0 { // continuation byte: keep looking for the lead
			continue
		}
		have, need := validPrefixLen(b[len(b)-back:])
		if have == back && have < need {
			return back
		}
		return 0
	}
	return 0
}

// sanitizeUTF8 replaces ill-formed UTF-8 in s with U+FFFD (maximal subparts),
// returning s itself when it is already valid.
func sanitizeUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return string(appendLossy(make([]byte, 0, len(s)+8), []byte(s)))
}
