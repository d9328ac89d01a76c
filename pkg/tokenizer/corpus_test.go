package tokenizer

import (
	"flag"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

const corpusPath = "../../testdata/tokenizer/corpus.txt"

// corpusSize is the benchmark corpus size in bytes (3 MB, decimal).
const corpusSize = 3_000_000

var buildCorpus = flag.Bool("build-corpus", false, "rewrite "+corpusPath+" from the files in testdata")

// TestBuildCorpus (re)writes the encoding benchmark corpus when run with
// -build-corpus. The corpus mixes, in order:
//   - testdata/models/tiny-code/heldout.txt: 400 KB of Python source;
//   - every reference text of the tokenizer tests: multilingual snippets,
//     emoji, whitespace runs, special tokens;
//   - the Apache-2.0 license text that ships with the Qwen vocabulary;
//   - "vocabulary prose" up to 3 MB: multi-byte Qwen3 vocabulary entries
//     drawn with a Zipf law over their ids (BPE ids follow merge order, a
//     proxy for frequency), decoded to text, with some punctuation, ~80
//     bytes a line — frequent English and code pieces with a long
//     multilingual tail.
//
// Without the flag it checks that the committed corpus exists, is valid
// UTF-8 and fits the size budget.
func TestBuildCorpus(t *testing.T) {
	if !*buildCorpus {
		data, err := os.ReadFile(corpusPath)
		if err != nil {
			t.Fatalf("%v (run go test -run TestBuildCorpus -build-corpus to create it)", err)
		}
		if len(data) > corpusSize || len(data) < corpusSize*9/10 || !utf8.Valid(data) {
			t.Fatalf("%s: %d bytes, valid UTF-8 %v: want ~%d bytes of UTF-8", corpusPath, len(data), utf8.Valid(data), corpusSize)
		}
		return
	}
	var b strings.Builder
	heldout, err := os.ReadFile("../../testdata/models/tiny-code/heldout.txt")
	if err != nil {
		t.Fatal(err)
	}
	b.Write(heldout)
	var texts []string
	for _, dir := range []string{qwen3Dir, qwen35Dir} {
		for _, c := range readRefCases(t, filepath.Join(dir, "reference-dev.json")) {
			texts = append(texts, c.Text)
		}
	}
	for _, c := range readJSONL(t, filepath.Join(qwen3Dir, "golden-hf-tokenizers.jsonl")) {
		texts = append(texts, c.Text)
	}
	var tiny tinyReference
	readJSONFile(t, filepath.Join(tinyDir, "reference.json"), &tiny)
	for _, c := range tiny.Encode {
		texts = append(texts, c.Text)
	}
	for _, s := range texts {
		b.WriteString(s)
		b.WriteString("\n")
	}
	license, err := os.ReadFile(filepath.Join(qwen3Dir, "LICENSE-Apache-2.0.txt"))
	if err != nil {
		t.Fatal(err)
	}
	b.Write(license)

	tk := mustLoad(t, filepath.Join(qwen3Dir, "tokenizer.json"))
	rng := rand.New(rand.NewPCG(1, 2))
	// Ids below 256 are single bytes; start above them so that the prose
	// is made of multi-byte pieces, with punctuation sprinkled in.
	zipf := rand.NewZipf(rng, 1.05, 8, 150_000)
	line := 0
	for {
		id := 256 + int(zipf.Uint64())
		raw, ok := tk.TokenBytes(id)
		if !ok || tk.kinds[id] != kindVocab || !utf8.Valid(raw) {
			continue
		}
		if b.Len()+len(raw)+2 > corpusSize {
			break
		}
		b.Write(raw)
		line += len(raw)
		if rng.IntN(12) == 0 {
			b.WriteByte(".,;:!?"[rng.IntN(6)])
			line++
		}
		if line > 80 {
			b.WriteByte('\n')
			line = 0
		}
	}
	if err := os.MkdirAll(filepath.Dir(corpusPath), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(corpusPath, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s: %d bytes", corpusPath, b.Len())
}
