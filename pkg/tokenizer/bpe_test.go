package tokenizer

import (
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestBPEHeapMatchesScan checks that the two BPE implementations (the
// quadratic scan for short words, the heap for long ones) agree, on
// pre-tokens of the reference texts and on random byte strings.
func TestBPEHeapMatchesScan(t *testing.T) {
	tk := mustLoad(t, filepath.Join(qwen3Dir, "tokenizer.json"))
	var words []string
	for _, c := range readRefCases(t, filepath.Join(qwen3Dir, "reference-dev.json")) {
		tk.split.split(c.Text, func(p string) { words = append(words, p) })
	}
	rng := rand.New(rand.NewPCG(3, 4))
	alphabet := []string{"a", "b", "ab", " ", "é", "你", "\xff", "ing", "the", "0"}
	for range 2000 {
		var b strings.Builder
		for b.Len() < 1+rng.IntN(heapThreshold) {
			b.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		words = append(words, b.String())
	}
	for _, w := range words {
		if len(w) > heapThreshold {
			continue
		}
		scan := tk.bpeWord(w, nil)
		heap := tk.bpeWordHeap(w, nil)
		if !slices.Equal(scan, heap) {
			t.Fatalf("word %q: scan %v, heap %v", w, scan, heap)
		}
		if got := string(tk.DecodeBytes(int32sToInts(scan))); got != w {
			t.Fatalf("word %q: ids %v decode to %q", w, scan, got)
		}
	}
}

// TestLongWords covers pre-tokens beyond the cache and the scan: long letter
// runs must still encode exactly (the tiny reference has 300 a's; here CJK
// and mixed runs round-trip).
func TestLongWords(t *testing.T) {
	tk := mustLoad(t, filepath.Join(qwen3Dir, "tokenizer.json"))
	for _, w := range []string{
		strings.Repeat("a", 1000),
		strings.Repeat("今天天气很好我们一起去公园散步吧", 40),
		strings.Repeat("Supercalifragilisticexpialidocious", 10),
	} {
		ids := tk.Encode(w)
		if got := tk.Decode(ids); got != w {
			t.Errorf("long word of %d bytes does not round-trip", len(w))
		}
		// Encoding twice (second time through the cache where it applies)
		// gives the same ids.
		if again := tk.Encode(w); !slices.Equal(again, ids) {
			t.Errorf("long word of %d bytes: second encoding differs", len(w))
		}
	}
}

func int32sToInts(v []int32) []int {
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x)
	}
	return out
}
