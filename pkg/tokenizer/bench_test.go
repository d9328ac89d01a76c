package tokenizer

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func readCorpus(b *testing.B) []byte {
	b.Helper()
	data, err := os.ReadFile(corpusPath)
	if err != nil {
		b.Fatal(err)
	}
	return data
}

// Ceilings measured in the same run, to express tokenizer speed as a ratio:
// a plain copy of the corpus (memory bandwidth for this size) and a rune
// decode loop (the least any Unicode-aware scanner has to do).

func BenchmarkCeilingCopy(b *testing.B) {
	corpus := readCorpus(b)
	dst := make([]byte, len(corpus))
	b.SetBytes(int64(len(corpus)))
	for b.Loop() {
		copy(dst, corpus)
	}
}

func BenchmarkCeilingRuneScan(b *testing.B) {
	corpus := string(readCorpus(b))
	b.SetBytes(int64(len(corpus)))
	n := 0
	for b.Loop() {
		for _, r := range corpus {
			if r == 'x' {
				n++
			}
		}
	}
	if n < 0 {
		b.Fatal(n)
	}
}

func benchEncode(b *testing.B, dir string, cold bool) {
	tk := mustLoad(b, filepath.Join(dir, "tokenizer.json"))
	if cold {
		tk = viaBinary(b, tk) // a private copy whose cache we may clear
	}
	corpus := string(readCorpus(b))
	tokens := len(tk.Encode(corpus))
	b.SetBytes(int64(len(corpus)))
	b.ResetTimer()
	for b.Loop() {
		if cold {
			tk.cache.reset()
		}
		tk.Encode(corpus)
	}
	b.ReportMetric(float64(tokens)*float64(b.N)/b.Elapsed().Seconds()/1e6, "Mtok/s")
}

// BenchmarkEncode encodes the 3 MB mixed corpus with the 151k Qwen3
// vocabulary; the word cache is warm after the first pass.
func BenchmarkEncode(b *testing.B) { benchEncode(b, qwen3Dir, false) }

// BenchmarkEncodeColdCache empties the word cache (long pre-tokens only)
// before every pass.
func BenchmarkEncodeColdCache(b *testing.B) { benchEncode(b, qwen3Dir, true) }

// BenchmarkEncodeQwen35 uses the Qwen3.5 split regex.
func BenchmarkEncodeQwen35(b *testing.B) { benchEncode(b, qwen35Dir, false) }

// BenchmarkEncodeCode encodes heldout.txt (400 KB of Python source) alone.
func BenchmarkEncodeCode(b *testing.B) {
	tk := mustLoad(b, filepath.Join(qwen3Dir, "tokenizer.json"))
	data, err := os.ReadFile("../../testdata/models/tiny-code/heldout.txt")
	if err != nil {
		b.Fatal(err)
	}
	text := string(data)
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		tk.Encode(text)
	}
}

func BenchmarkDecode(b *testing.B) {
	tk := mustLoad(b, filepath.Join(qwen3Dir, "tokenizer.json"))
	corpus := readCorpus(b)
	ids := tk.Encode(string(corpus))
	b.SetBytes(int64(len(corpus)))
	for b.Loop() {
		tk.Decode(ids)
	}
}

func BenchmarkStreamDecode(b *testing.B) {
	tk := mustLoad(b, filepath.Join(qwen3Dir, "tokenizer.json"))
	corpus := readCorpus(b)
	ids := tk.Encode(string(corpus))
	b.SetBytes(int64(len(corpus)))
	for b.Loop() {
		d := tk.NewStreamDecoder()
		n := 0
		for _, id := range ids {
			n += len(d.Add(id))
		}
		n += len(d.Flush())
		if n == 0 {
			b.Fatal("nothing decoded")
		}
	}
}

// BenchmarkLoadJSON parses the 151k-token tokenizer.json (5.4 MB) from memory.
func BenchmarkLoadJSON(b *testing.B) {
	data, err := os.ReadFile(filepath.Join(qwen3Dir, "tokenizer.json"))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := LoadJSON(bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoadBinary reads the same tokenizer from tokenizer.bin in memory.
func BenchmarkLoadBinary(b *testing.B) {
	var buf bytes.Buffer
	if err := mustLoad(b, filepath.Join(qwen3Dir, "tokenizer.json")).WriteBinary(&buf); err != nil {
		b.Fatal(err)
	}
	data := buf.Bytes()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := LoadBinary(bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoadDir is Load of a prepared directory with tokenizer.bin, from
// the page cache, as fm-infer starts.
func BenchmarkLoadDir(b *testing.B) {
	dir := b.TempDir()
	f, err := os.Create(filepath.Join(dir, BinaryFile))
	if err != nil {
		b.Fatal(err)
	}
	if err := mustLoad(b, filepath.Join(qwen3Dir, "tokenizer.json")).WriteBinary(f); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := Load(dir); err != nil {
			b.Fatal(err)
		}
	}
}
