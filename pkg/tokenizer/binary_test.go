package tokenizer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

func writeBinary(t testing.TB, tk *Tokenizer) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := tk.WriteBinary(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestBinaryRoundTrip checks that tokenizer.bin keeps everything: writing the
// loaded binary again gives the same bytes, and the tables match.
func TestBinaryRoundTrip(t *testing.T) {
	for _, path := range []string{filepath.Join(qwen3Dir, "tokenizer.json"), filepath.Join(qwen35Dir, "tokenizer.json"), tinyDir} {
		tk := mustLoad(t, path)
		data := writeBinary(t, tk)
		if string(data[:4]) != "FMTK" || binary.LittleEndian.Uint32(data[4:]) != 1 {
			t.Fatalf("%s: header %q", path, data[:8])
		}
		back, err := LoadBinary(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if again := writeBinary(t, back); !bytes.Equal(again, data) {
			t.Errorf("%s: rewriting the loaded tokenizer.bin changes it", path)
		}
		if back.VocabSize() != tk.VocabSize() || back.strs != tk.strs || !bytes.Equal(back.raw, tk.raw) ||
			!slices.Equal(back.mergeList, tk.mergeList) || !slices.Equal(back.added, tk.added) ||
			back.normalizeNFC != tk.normalizeNFC || back.split.pattern != tk.split.pattern || back.chat != tk.chat {
			t.Errorf("%s: tokenizer.bin does not preserve the tokenizer", path)
		}
	}
}

func TestBinaryRejectsDamage(t *testing.T) {
	data := writeBinary(t, mustLoad(t, tinyDir))
	flip := func(i int) []byte {
		d := bytes.Clone(data)
		d[i] ^= 0x40
		return d
	}
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "bad magic"},
		{"magic", flip(0), "bad magic"},
		{"version", flip(4), "version"},
		{"truncated", data[:len(data)/2], "checksum"},
		{"flipped byte", flip(len(data) / 3), "checksum"},
		{"flipped checksum", flip(len(data) - 1), "checksum"},
	} {
		_, err := LoadBinary(bytes.NewReader(tc.data))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one mentioning %q", tc.name, err, tc.want)
		}
	}
	// A reader that fails mid-way surfaces its error.
	injected := errors.New("injected EIO")
	r := iotest.DataErrReader(&errReaderAfter{data: data[:100], err: injected})
	if _, err := LoadBinary(r); !errors.Is(err, injected) {
		t.Errorf("failing reader: error %v, want %v", err, injected)
	}
	// One byte at a time still works.
	if _, err := LoadBinary(iotest.OneByteReader(bytes.NewReader(data))); err != nil {
		t.Errorf("one-byte reader: %v", err)
	}
}

type errReaderAfter struct {
	data []byte
	err  error
}

func (r *errReaderAfter) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestVocabBin(t *testing.T) {
	tk := mustLoad(t, filepath.Join(qwen3Dir, "tokenizer.json"))
	var buf bytes.Buffer
	if err := tk.WriteVocab(&buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(buf.Bytes(), []byte("FMVB\x01\x00\x00\x00")) {
		t.Fatalf("vocab.bin header %q", buf.Bytes()[:8])
	}
	table, err := ReadVocab(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if len(table) != tk.VocabSize() {
		t.Fatalf("vocab.bin has %d entries, want %d", len(table), tk.VocabSize())
	}
	for _, tc := range []struct {
		id   int
		want string
	}{{220, " "}, {198, "\n"}, {9707, "Hello"}, {151645, "<|im_end|>"}, {151667, "<think>"}} {
		if string(table[tc.id]) != tc.want {
			t.Errorf("vocab.bin id %d = %q, want %q", tc.id, table[tc.id], tc.want)
		}
	}
	for id := range table {
		if b, _ := tk.TokenBytes(id); !bytes.Equal(b, table[id]) {
			t.Fatalf("vocab.bin id %d = %q, TokenBytes %q", id, table[id], b)
		}
	}
	damaged := bytes.Clone(buf.Bytes())
	damaged[len(damaged)/2] ^= 1
	if _, err := ReadVocab(bytes.NewReader(damaged)); err == nil {
		t.Error("ReadVocab accepted a damaged file")
	}
}

// TestLoadPaths covers Load's inputs: a tokenizer.json file, a checkpoint
// directory, and a prepared directory holding only tokenizer.bin (which must
// be preferred over tokenizer.json and carry the chat template along).
func TestLoadPaths(t *testing.T) {
	src := mustLoad(t, tinyDir)
	prepared := t.TempDir()
	if err := os.WriteFile(filepath.Join(prepared, BinaryFile), writeBinary(t, src), 0o644); err != nil {
		t.Fatal(err)
	}
	// A decoy tokenizer.json that would fail to load: tokenizer.bin wins.
	if err := os.WriteFile(filepath.Join(prepared, JSONFile), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	// tokenizer_config.json without a template must not erase the one
	// tokenizer.bin recorded.
	if err := os.WriteFile(filepath.Join(prepared, ConfigFile), []byte(`{"eos_token": "<|im_end|>"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	text := "<|im_start|>user\nhello<|im_end|>\n"
	want := src.Encode(text)
	for _, path := range []string{tinyDir, filepath.Join(tinyDir, JSONFile), prepared, filepath.Join(prepared, BinaryFile)} {
		tk, err := Load(path)
		if err != nil {
			t.Fatalf("Load(%s): %v", path, err)
		}
		if got := tk.Encode(text); !slices.Equal(got, want) {
			t.Errorf("Load(%s): ids %v, want %v", path, got, want)
		}
		if tpl, _ := tk.ChatTemplate(); tpl == "" {
			t.Errorf("Load(%s): chat template lost", path)
		}
	}
	empty := t.TempDir()
	if _, err := Load(empty); err == nil || !strings.Contains(err.Error(), empty) {
		t.Errorf("Load(empty dir): error %v, want one naming the directory", err)
	}
	bad := filepath.Join(t.TempDir(), JSONFile)
	if err := os.WriteFile(bad, []byte(`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": null}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("Load(bad json): error %v, want one naming the file", err)
	}
}
