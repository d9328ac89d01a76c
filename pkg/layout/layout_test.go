package layout

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func tinyConfig() Config {
	return Config{Arch: ArchQwen3MoE, SourceModelType: "qwen3_moe", VocabSize: 8, HiddenSize: 64, NumLayers: 2,
		RMSNormEps: 1e-6, LayerTypes: []string{FullAttention, FullAttention}, SparseLayers: []bool{true, false},
		NumAttentionHeads: 2, NumKeyValueHeads: 1, HeadDim: 32, RopeTheta: 1e6, PartialRotaryFactor: 1, RotaryDim: 32,
		NumExperts: 2, NumExpertsPerTok: 1, MoEIntermediateSize: 64, IntermediateSize: 64, EOSTokenIDs: []int{1}}
}

// writeTiny makes a complete prepared directory with the writers.
func writeTiny(t testing.TB) (string, *Manifest) {
	t.Helper()
	dir := t.TempDir()
	tensors := []Tensor{
		{Name: "embed_tokens", Shape: []int64{8, 64}, Data: Part{DType: "BF16", Shape: []int64{8, 64}, Size: 1024}},
		{Name: "norm", Shape: []int64{64}, Data: Part{DType: "F32", Shape: []int64{64}, Size: 256}},
	}
	end := PlaceParts(tensors, 0, DenseAlignment)
	dw, err := CreateDense(dir, WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tensors {
		dw.PadTo(tt.Data.Offset)
		dw.Write(make([]byte, tt.Data.Size))
	}
	dense, err := dw.Finish()
	if err != nil || dense.Size != AlignUp(end, DenseAlignment) {
		t.Fatalf("dense %+v %v", dense, err)
	}
	comps := []Tensor{
		{Name: "gate_proj", Shape: []int64{64, 64}, Data: Part{DType: "U32", Shape: []int64{64, 8}, Size: 2048},
			Quant: &Quant{Bits: 4, GroupSize: 64, Scales: Part{DType: "BF16", Shape: []int64{64, 1}, Size: 128}, Biases: Part{DType: "BF16", Shape: []int64{64, 1}, Size: 128}}},
		{Name: "up_proj", Shape: []int64{64, 64}, Data: Part{DType: "BF16", Shape: []int64{64, 64}, Size: 8192}},
		{Name: "down_proj", Shape: []int64{64, 64}, Data: Part{DType: "BF16", Shape: []int64{64, 64}, Size: 8192}},
	}
	size := AlignUp(PlaceParts(comps, 0, ExpertAlignment), ExpertAlignment)
	set := ExpertSet{Dir: ExpertsDir, Bits: 4, GroupSize: 64, NameFormat: ExpertNameFormat(2, 2), FileSize: size, Components: comps,
		Checksums: [][]string{make([]string, 2), nil}}
	os.MkdirAll(filepath.Join(dir, ExpertsDir), 0o755)
	for e := range 2 {
		b := make([]byte, size)
		b[0] = byte(e + 1)
		if err := WriteFileAtomic(set.Path(dir, 0, e), b, WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		set.Checksums[0][e] = Checksum(b)
	}
	m := &Manifest{Format: FormatVersion, Config: tinyConfig(), ChecksumAlgorithm: ChecksumXXH3, Dense: dense, Tensors: tensors, Experts: []ExpertSet{set}}
	if err := WriteManifest(dir, m, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	return dir, m
}

func TestVerify(t *testing.T) {
	dir, m := writeTiny(t)
	var seen int64
	probs, err := Verify(context.Background(), dir, 2, func(n int64) { seen += n })
	if err != nil || len(probs) != 0 || seen != m.TotalSize() {
		t.Fatalf("clean dir: %v %v, progress %d of %d", probs, err, seen, m.TotalSize())
	}
	set := &m.Experts[0]
	os.Remove(set.Path(dir, 0, 1))
	f, _ := os.OpenFile(filepath.Join(dir, DenseName), os.O_WRONLY, 0)
	f.WriteAt([]byte{9}, 5)
	f.Close()
	os.Truncate(set.Path(dir, 0, 0), 100)
	probs, err = Verify(context.Background(), dir, 0, nil)
	if err != nil || len(probs) != 3 {
		t.Fatalf("%v %v", probs, err)
	}
	if !errors.Is(probs[0].Err, ErrChecksum) || !strings.Contains(probs[1].Error(), "size 100") || !errors.Is(probs[2].Err, os.ErrNotExist) {
		t.Fatalf("problems %v", probs)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Verify(ctx, dir, 0, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestAtomicFileAbort(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.bin")
	os.WriteFile(path, []byte("old"), 0o644)
	fail := WriteOptions{WrapWriter: func(string, io.Writer) io.Writer { return failWriter{} }}
	if err := WriteFileAtomic(path, []byte("new"), fail); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("err = %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Fatal("final file changed by a failed write")
	}
	a, _ := CreateAtomic(path, WriteOptions{})
	a.Write([]byte("partial"))
	if n, _ := RemoveTemps(dir); n != 1 {
		t.Fatalf("RemoveTemps removed %d", n)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("entries %v", ents)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
		t.Fatalf("mode %v", st.Mode())
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("injected") }

func TestJournal(t *testing.T) {
	path := filepath.Join(t.TempDir(), JournalName)
	j, done, err := OpenJournal(path, "key1")
	if err != nil || len(done) != 0 {
		t.Fatal(err)
	}
	sum := strings.Repeat("a", 32)
	j.Record(ExpertKey{1, 2}, sum)
	j.Record(ExpertKey{3, 4}, sum)
	j.Close()
	// A torn last line (killed mid-append) is ignored.
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString("5 6 abc")
	f.Close()
	j, done, err = OpenJournal(path, "key1")
	if err != nil || len(done) != 2 || done[ExpertKey{3, 4}] != sum {
		t.Fatalf("%v %v", done, err)
	}
	j.Close()
	j, done, _ = OpenJournal(path, "key2")
	if len(done) != 0 {
		t.Fatal("another key must discard the journal")
	}
	j.Remove()
}

func TestExpertNameFormat(t *testing.T) {
	for _, c := range []struct {
		l, e int
		want string
	}{{60, 512, "layer_%02d_expert_%04d.bin"}, {100, 512, "layer_%03d_expert_%04d.bin"}, {48, 10000, "layer_%02d_expert_%05d.bin"}} {
		if got := ExpertNameFormat(c.l, c.e); got != c.want {
			t.Errorf("%d/%d: %s", c.l, c.e, got)
		}
	}
}

func TestChecksumFormat(t *testing.T) {
	// XXH3-128 of the empty input (reference value from xxhsum -H2).
	if got := Checksum(nil); got != "99aa06d3014798d86001c324468d497f" {
		t.Fatalf("empty: %s", got)
	}
	h := NewHasher()
	h.Write([]byte("hello "))
	h.Write([]byte("world"))
	if h.Sum() != Checksum([]byte("hello world")) {
		t.Fatal("streaming differs")
	}
}

func FuzzParseManifest(f *testing.F) {
	good := func() []byte {
		t := &testing.T{}
		_ = t
		m := &Manifest{Format: FormatVersion, Config: tinyConfig(), ChecksumAlgorithm: ChecksumXXH3,
			Dense:   DenseFile{File: DenseName, Size: 8192},
			Tensors: []Tensor{{Name: "norm", Shape: []int64{64}, Data: Part{DType: "F32", Shape: []int64{64}, Offset: 4096, Size: 256}}}}
		b, _ := json.Marshal(m)
		return b
	}()
	f.Add(good)
	if dir, _ := writeTiny(f); dir != "" {
		if b, err := os.ReadFile(filepath.Join(dir, ManifestName)); err == nil {
			f.Add(b) // with experts and a manifest checksum
		}
	}
	f.Add([]byte(`{"format":"fm/1"}`))
	f.Add([]byte(`{"format":"fm/1","config":{"num_hidden_layers":1},"experts":[{"checksums":[]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseManifest(b)
		if err != nil {
			return
		}
		// Whatever parses must be safe to index: every part inside its file.
		for _, tt := range m.Tensors {
			for _, p := range tt.Parts() {
				if p.Offset < 0 || p.Offset+p.Size > m.Dense.Size {
					t.Fatalf("part outside the dense file: %+v", p)
				}
			}
		}
		for _, s := range m.Experts {
			for _, c := range s.Components {
				for _, p := range c.Parts() {
					if p.Offset < 0 || p.Offset+p.Size > s.FileSize {
						t.Fatalf("component part outside the expert file: %+v", p)
					}
				}
			}
		}
		// Whatever parses has runnable config values and no two arrays on
		// the same bytes.
		if !(m.Config.RMSNormEps > 0 && m.Config.RMSNormEps < 1) {
			t.Fatalf("accepted rms_norm_eps %v", m.Config.RMSNormEps)
		}
		if err := checkOverlap(m.Tensors); err != nil {
			t.Fatal(err)
		}
		for _, s := range m.Experts {
			if err := checkOverlap(s.Components); err != nil {
				t.Fatal(err)
			}
		}
		// Whatever parses names files inside the prepared directory only.
		for _, vt := range m.VerifyTargets("out") {
			if rel, err := filepath.Rel("out", vt.Path); err != nil || strings.HasPrefix(rel, "..") || filepath.IsAbs(rel) {
				t.Fatalf("verify target %q outside the directory", vt.Path)
			}
		}
	})
}

// A missing file is named as "missing"; listed tokenizer files must exist; and
// a directory whose manifest records no expert set (fm-repack not run, or
// interrupted) does not pass, although every file it lists is intact.
func TestVerifyIncompleteDirectory(t *testing.T) {
	dir, m := writeTiny(t)
	os.WriteFile(filepath.Join(dir, "tokenizer.json"), []byte("{}"), 0o644)
	m.Tokenizer = []string{"tokenizer.json", "tokenizer.bin"}
	if err := WriteManifest(dir, m, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	probs, err := Verify(context.Background(), dir, 0, nil)
	if err != nil || len(probs) != 1 || probs[0].Path != filepath.Join(dir, "tokenizer.bin") || probs[0].Error() != probs[0].Path+": missing" || !errors.Is(probs[0].Err, os.ErrNotExist) {
		t.Fatalf("missing tokenizer.bin: %v %v", probs, err)
	}
	m.Tokenizer = m.Tokenizer[:1]
	m.Experts = nil
	if err := WriteManifest(dir, m, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	probs, err = Verify(context.Background(), dir, 0, nil)
	if err != nil || len(probs) != 1 || !errors.Is(probs[0].Err, ErrNoExperts) || probs[0].Path != filepath.Join(dir, ExpertsDir) || !strings.Contains(probs[0].Error(), "run fm-repack") {
		t.Fatalf("no expert set: %v %v", probs, err)
	}
}

// Manifest numbers and names come from a file: validation must refuse the
// ones that would wrap size arithmetic or lead readers outside the directory.
func TestManifestValidation(t *testing.T) {
	_, good := writeTiny(t)
	for _, c := range []struct {
		name string
		edit func(m *Manifest)
		want string
	}{
		{"offset wraps", func(m *Manifest) { m.Tensors[1].Data.Offset = math.MaxInt64 - 100 }, "outside the"},
		{"shape wraps", func(m *Manifest) {
			m.Tensors[1].Shape = []int64{1 << 62, 4}
			m.Tensors[1].Data.Shape, m.Tensors[1].Data.Size = []int64{1 << 62, 4}, 0
		}, "overflows"},
		{"quantized shape wraps", func(m *Manifest) { m.Experts[0].Components[0].Shape = []int64{1 << 61, 64} }, "overflows"},
		{"dense file path", func(m *Manifest) { m.Dense.File = "../model_weights.bin" }, "dense.file"},
		{"dense checksum", func(m *Manifest) { m.Dense.Checksum = "XYZ" }, "dense.checksum"},
		{"expert dir path", func(m *Manifest) { m.Experts[0].Dir = "/etc" }, "plain directory name"},
		{"name format path", func(m *Manifest) { m.Experts[0].NameFormat = "../../x%d%d" }, "name_format"},
		{"file size alignment", func(m *Manifest) { m.Experts[0].FileSize += 1 }, "multiple of 4096"},
		{"dense layer checksums", func(m *Manifest) { m.Experts[0].Checksums[1] = []string{""} }, "no routed experts"},
		{"checksum hex", func(m *Manifest) { m.Experts[0].Checksums[0][1] = "../x" }, "hex digits"},
		{"tokenizer path", func(m *Manifest) { m.Tokenizer = []string{"../tokenizer.json"} }, "tokenizer_files"},
		{"set twice", func(m *Manifest) { m.Experts = append(m.Experts, m.Experts[0]) }, "listed twice"},
		// Issue 9, defects 1 and 2: values that parse but cannot run.
		{"rms_norm_eps", func(m *Manifest) { m.Config.RMSNormEps = -1 }, "rms_norm_eps -1"},
		{"rope_theta", func(m *Manifest) { m.Config.RopeTheta = 0 }, "rope_theta"},
		{"eos outside vocab", func(m *Manifest) { m.Config.EOSTokenIDs = []int{8} }, "outside the vocabulary"},
		{"component offset moved", func(m *Manifest) { m.Experts[0].Components[0].Data.Offset = 4096 }, "overlaps"},
		{"dense tensors overlap", func(m *Manifest) { m.Tensors[1].Data.Offset = 0 }, "overlaps"},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, _ := json.Marshal(good)
			var m Manifest
			json.Unmarshal(b, &m)
			c.edit(&m)
			b, _ = json.Marshal(&m)
			_, err := ParseManifest(b)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
		})
	}
}

// TestManifestChecksum is defect 2 of issue 9: the manifest carries its own
// checksum, so a hand edit or a damaged byte is refused by every reader, while
// a manifest from before the checksum existed still reads.
func TestManifestChecksum(t *testing.T) {
	dir, _ := writeTiny(t)
	path := filepath.Join(dir, ManifestName)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ReadManifest(dir)
	if err != nil || len(m.ManifestChecksum) != 32 {
		t.Fatalf("written manifest: checksum %q, %v", m.ManifestChecksum, err)
	}
	edited := strings.Replace(string(b), `"rms_norm_eps": 0.000001`, `"rms_norm_eps": 0.00001`, 1)
	if edited == string(b) {
		t.Fatal("test edit did not apply")
	}
	if _, err := ParseManifest([]byte(edited)); !errors.Is(err, ErrManifestChecksum) {
		t.Fatalf("edited manifest: %v", err)
	}
	// White space is not content.
	if _, err := ParseManifest([]byte(strings.ReplaceAll(string(b), "\n", "\n  "))); err != nil {
		t.Fatalf("re-indented manifest: %v", err)
	}
	var old Manifest
	json.Unmarshal(b, &old)
	old.ManifestChecksum = ""
	ob, _ := json.Marshal(&old)
	if _, err := ParseManifest(ob); err != nil {
		t.Fatalf("manifest without a checksum: %v", err)
	}
}
