package tokenizer

import (
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/text/unicode/norm"
)

// TestNFCWithoutStreamSafe pins NFC on runs of more than 30 combining marks,
// where x/text would insert U+034F (Stream-Safe Text Format) and Python's
// unicodedata / HF's Rust normalizer do not. Expectations from Python's
// unicodedata.normalize("NFC", ...).
func TestNFCWithoutStreamSafe(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"e" + strings.Repeat("\u0301", 40), "\u00e9" + strings.Repeat("\u0301", 39)},
		{"a" + strings.Repeat("\u0323\u0301", 20), "\u1ea1" + strings.Repeat("\u0323", 19) + strings.Repeat("\u0301", 20)},
		{"\u1100\u1161" + strings.Repeat("\u0301", 35) + "\u11a8", "\uac00" + strings.Repeat("\u0301", 35) + "\u11a8"},
		{"x\u034f" + strings.Repeat("\u0300", 3), "x\u034f\u0300\u0300\u0300"},
	} {
		if got := nfc(tc.in); got != tc.want {
			t.Errorf("nfc(%+q) = %+q, want %+q", tc.in, got, tc.want)
		}
	}
	// Everywhere x/text does not overflow, the exact path agrees with it.
	for _, dir := range []string{qwen3Dir, qwen35Dir} {
		for _, c := range readRefCases(t, filepath.Join(dir, "reference-dev.json")) {
			if got, want := nfcExact(c.Text), norm.NFC.String(c.Text); got != want {
				t.Errorf("nfcExact(%+q) = %+q, want %+q", c.Text, got, want)
			}
		}
	}
	for _, s := range []string{"\uac00\u11a8", "\u1100\u1161\u11a8", "\u0b47\u0b3e", "e\u0323\u0302", "\u1e69", "s\u0307\u0323", "Å", "\u212b"} {
		if got, want := nfcExact(s), norm.NFC.String(s); got != want {
			t.Errorf("nfcExact(%+q) = %+q, want %+q", s, got, want)
		}
	}
}

// FuzzNFC compares the exact NFC with x/text on inputs that do not overflow.
func FuzzNFC(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, s string) {
		s = sanitizeUTF8(s)
		want := norm.NFC.String(s)
		if strings.Count(want, cgj) != strings.Count(s, cgj) {
			return // x/text applied the Stream-Safe format
		}
		if got := nfcExact(s); got != want {
			t.Fatalf("nfcExact(%+q) = %+q, want %+q", s, got, want)
		}
	})
}
