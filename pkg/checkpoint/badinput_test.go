package checkpoint

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fm-moe/fm/pkg/layout"
	"github.com/fm-moe/fm/pkg/safetensors"
)

const smallHF = testdata + "golden/qwen3moe-tiny/hf"

func editConfig(t *testing.T, dir string, edit func(m map[string]any)) {
	t.Helper()
	p := filepath.Join(dir, "config.json")
	b, _ := os.ReadFile(p)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	b, _ = json.Marshal(m)
	os.WriteFile(p, b, 0o644)
}

func writeShard(t *testing.T, dir, name string, img []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), img, 0o644); err != nil {
		t.Fatal(err)
	}
}

const shard2 = "model-00002-of-00004.safetensors"

// Each bad input fails with one line naming the file and the tensor (or key),
// and leaves nothing in OUT that verifies.
func TestBadInput(t *testing.T) {
	cases := []struct {
		name string
		make func(t *testing.T) string
		want []string
	}{
		{"truncated shard", func(t *testing.T) string {
			d := copyDir(t, smallHF)
			p := filepath.Join(d, shard2)
			st, _ := os.Stat(p)
			os.Truncate(p, st.Size()-100)
			return d
		}, []string{shard2, "tensor", "outside"}},
		{"header length past end", func(t *testing.T) string {
			d := copyDir(t, smallHF)
			b, _ := os.ReadFile(filepath.Join(d, shard2))
			binary.LittleEndian.PutUint64(b, uint64(len(b)))
			writeShard(t, d, shard2, b)
			return d
		}, []string{shard2, "past the end"}},
		{"malformed header JSON", func(t *testing.T) string {
			d := copyDir(t, smallHF)
			b, _ := os.ReadFile(filepath.Join(d, shard2))
			b[8] = '['
			writeShard(t, d, shard2, b)
			return d
		}, []string{shard2, "malformed header JSON"}},
		{"offsets outside data", func(t *testing.T) string {
			d := copyDir(t, smallHF)
			h := `{"model.norm.weight":{"dtype":"BF16","shape":[128],"data_offsets":[0,256]}}`
			img := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
			img = append(append(img, h...), make([]byte, 100)...)
			writeShard(t, d, shard2, img)
			return d
		}, []string{shard2, `"model.norm.weight"`, "outside"}},
		{"index names a missing shard", func(t *testing.T) string {
			d := copyDir(t, smallHF)
			os.Remove(filepath.Join(d, shard2))
			return d
		}, []string{safetensors.IndexName, shard2, "missing"}},
		{"tensor missing", func(t *testing.T) string {
			return rewrite(t, smallHF, func(w *safetensors.WriteTensor) bool { return w.Name != "model.layers.1.self_attn.k_norm.weight" })
		}, []string{"model.safetensors", `"model.layers.1.self_attn.k_norm.weight"`, "missing"}},
		{"tensor missing from the index", func(t *testing.T) string {
			d := copyDir(t, testdata+"golden/qwen35moe-tiny/hf")
			p := filepath.Join(d, safetensors.IndexName)
			var idx map[string]map[string]any
			b, _ := os.ReadFile(p)
			json.Unmarshal(b, &idx)
			delete(idx["weight_map"], "model.language_model.layers.3.self_attn.o_proj.weight")
			b, _ = json.Marshal(idx)
			os.WriteFile(p, b, 0o644)
			return d
		}, []string{safetensors.IndexName, `"model.language_model.layers.3.self_attn.o_proj.weight"`, "missing"}},
		{"expert missing", func(t *testing.T) string {
			return rewrite(t, smallHF, func(w *safetensors.WriteTensor) bool { return w.Name != "model.layers.2.mlp.experts.7.up_proj.weight" })
		}, []string{"model.safetensors", `"model.layers.2.mlp.experts.7.up_proj.weight"`, "missing"}},
		{"shape not from config", func(t *testing.T) string {
			return rewrite(t, smallHF, func(w *safetensors.WriteTensor) bool {
				if w.Name == "model.layers.0.self_attn.q_proj.weight" {
					w.Shape = []int64{w.Shape[0] / 2, w.Shape[1] * 2}
				}
				return true
			})
		}, []string{"model.safetensors", `"model.layers.0.self_attn.q_proj.weight"`, "shape"}},
		{"config implies other shapes", func(t *testing.T) string {
			d := copyDir(t, smallHF)
			editConfig(t, d, func(m map[string]any) { m["hidden_size"] = 256 })
			return d
		}, []string{"tensor", "shape", "want [4032 256]"}},
		{"dtype F8", func(t *testing.T) string {
			return rewrite(t, smallHF, func(w *safetensors.WriteTensor) bool {
				if w.Name == "model.layers.0.self_attn.o_proj.weight" {
					w.DType, w.Shape = safetensors.F8E4M3, []int64{w.Shape[0], w.Shape[1] * 2}
				}
				return true
			})
		}, []string{`"model.layers.0.self_attn.o_proj.weight"`, "F8_E4M3 is not supported"}},
		{"dtype integer", func(t *testing.T) string {
			return rewrite(t, smallHF, func(w *safetensors.WriteTensor) bool {
				if w.Name == "model.norm.weight" {
					w.DType = safetensors.I16
				}
				return true
			})
		}, []string{`"model.norm.weight"`, "dtype I16"}},
		{"unknown model type", func(t *testing.T) string {
			d := copyDir(t, smallHF)
			editConfig(t, d, func(m map[string]any) { m["model_type"] = "llama" })
			return d
		}, []string{"config.json", "model_type \"llama\""}},
		{"rope yarn", func(t *testing.T) string {
			d := copyDir(t, smallHF)
			editConfig(t, d, func(m map[string]any) { m["rope_parameters"].(map[string]any)["rope_type"] = "yarn" })
			return d
		}, []string{"config.json", "rope_parameters.rope_type", "yarn"}},
		{"experts inconsistent dtype", func(t *testing.T) string {
			return rewrite(t, smallHF, func(w *safetensors.WriteTensor) bool {
				if w.Name == "model.layers.1.mlp.experts.3.gate_proj.weight" {
					w.DType, w.Data = safetensors.F32, append(w.Data, w.Data...)
				}
				return true
			})
		}, []string{"model.safetensors", "inconsistent", "layers.1.mlp.experts.3.gate_proj"}},
		{"experts inconsistent shape", func(t *testing.T) string {
			return rewrite(t, smallHF, func(w *safetensors.WriteTensor) bool {
				if w.Name == "model.layers.1.mlp.experts.5.down_proj.weight" {
					w.Shape = []int64{w.Shape[1], w.Shape[0]}
				}
				return true
			})
		}, []string{"model.safetensors", "inconsistent", `"model.layers.1.mlp.experts.5.down_proj.weight"`, "want [128 64]"}},
		{"unknown tensor", func(t *testing.T) string {
			return rewrite(t, smallHF, nil, safetensors.WriteTensor{Name: "model.layers.0.mlp.bogus.weight", DType: safetensors.BF16, Shape: []int64{1}, Data: make([]byte, 2)})
		}, []string{"model.safetensors", `"model.layers.0.mlp.bogus.weight"`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := c.make(t)
			out := filepath.Join(t.TempDir(), "out")
			_, err := Extract(context.Background(), src, out, Options{})
			if err == nil {
				// Errors only the expert plan sees come from fm-repack.
				_, err = Repack(context.Background(), src, out, Options{})
			}
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Fatalf("error is not one line: %q", msg)
			}
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Fatalf("error %q does not mention %q", msg, w)
				}
			}
			assertNothingVerifies(t, out)
		})
	}
}

// assertNothingVerifies: a failed run leaves no directory that fm-infer verify
// accepts (the model is not complete) and no temporary files.
func assertNothingVerifies(t *testing.T, out string) {
	t.Helper()
	if probs, err := layout.Verify(context.Background(), out, 0, nil); err == nil && len(probs) == 0 {
		t.Fatalf("a failed run left a directory that verifies")
	}
	filepath.Walk(out, func(p string, info os.FileInfo, err error) error {
		if err == nil && strings.Contains(filepath.Base(p), ".tmp-") {
			t.Errorf("temporary file left: %s", p)
		}
		return nil
	})
}

func TestOutputNotWritable(t *testing.T) {
	blocker := filepath.Join(t.TempDir(), "file")
	os.WriteFile(blocker, []byte("x"), 0o644)
	_, err := Extract(context.Background(), smallHF, filepath.Join(blocker, "out"), Options{})
	if err == nil || !strings.Contains(err.Error(), "cannot create the output directory") || !strings.Contains(err.Error(), blocker) {
		t.Fatalf("err = %v", err)
	}
	_, err = Repack(context.Background(), smallHF, t.TempDir(), Options{})
	if err == nil || !strings.Contains(err.Error(), "run fm-extract first") {
		t.Fatalf("repack without manifest: %v", err)
	}
}

// diskFull fails every write after limit bytes with ENOSPC, like a full disk.
type diskFull struct {
	w     io.Writer
	limit *int64
}

func (d diskFull) Write(p []byte) (int, error) {
	if int64(len(p)) > *d.limit {
		n, _ := d.w.Write(p[:*d.limit])
		*d.limit = 0
		return n, syscall.ENOSPC
	}
	*d.limit -= int64(len(p))
	return d.w.Write(p)
}

func TestDiskFull(t *testing.T) {
	for _, limit := range []int64{0, 10000, 300000} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			out := t.TempDir()
			n := limit
			opts := Options{Write: layout.WriteOptions{WrapWriter: func(path string, w io.Writer) io.Writer { return diskFull{w, &n} }}}
			_, err := Extract(context.Background(), smallHF, out, opts)
			if err == nil || !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), layout.DenseName) {
				t.Fatalf("extract: %v", err)
			}
			assertNothingVerifies(t, out)
			if _, err := os.Stat(filepath.Join(out, layout.DenseName)); err == nil {
				t.Fatal("partial model_weights.bin under its final name")
			}
			// Repack into a good extraction with a disk that fills up.
			if _, err := Extract(context.Background(), smallHF, out, Options{}); err != nil {
				t.Fatal(err)
			}
			n = limit
			opts.Jobs = 2
			_, err = Repack(context.Background(), smallHF, out, opts)
			if err == nil || !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "layer_") {
				t.Fatalf("repack: %v", err)
			}
			assertNothingVerifies(t, out)
			// The rerun on a disk with room resumes and completes.
			sum, err := Repack(context.Background(), smallHF, out, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if p, err := layout.Verify(context.Background(), out, 0, nil); err != nil || len(p) > 0 {
				t.Fatalf("verify after rerun: %v %v", p, err)
			}
			t.Logf("rerun: %s", sum)
		})
	}
}

// cancelAfter cancels the context once n bytes of expert files were reported.
type cancelAfter struct {
	n      int64
	cancel context.CancelFunc
}

func (c *cancelAfter) Start(string, int64) {}
func (c *cancelAfter) Done()               {}
func (c *cancelAfter) Add(n int64) {
	c.n -= n
	if c.n <= 0 {
		c.cancel()
	}
}

// Ctrl-C mid-run: the interrupted run fails with the context's error, leaves no
// partial file under a final name, and the rerun skips what was finished.
func TestInterruptAndResume(t *testing.T) {
	out := t.TempDir()
	if _, err := Extract(context.Background(), smallHF, out, Options{}); err != nil {
		t.Fatal(err)
	}
	m, _ := layout.ReadManifest(out)
	ctx, cancel := context.WithCancel(context.Background())
	probe, err := Open(smallHF)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := probe.planExperts(matrixTarget{Bits: 16})
	probe.Close()
	if err != nil {
		t.Fatal(err)
	}
	stop := &cancelAfter{n: 10 * plan.set.FileSize, cancel: cancel}
	_, err = Repack(ctx, smallHF, out, Options{Progress: stop, Jobs: 2})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted run: %v", err)
	}
	assertNothingVerifies(t, out)
	var log bytes.Buffer
	sum, err := Repack(context.Background(), smallHF, out, Options{Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	total := m.Config.NumLayers * m.Config.NumExperts
	if sum.Resumed < 10 || sum.Resumed+sum.Experts != total || !strings.Contains(log.String(), "already valid") {
		t.Fatalf("resume: %s; log %q", sum, log.String())
	}
	// Damage one finished file: a third run rewrites exactly that one.
	m, _ = layout.ReadManifest(out)
	set := m.ExpertSet(layout.ExpertsDir)
	bad := set.Path(out, 1, 2)
	b, _ := os.ReadFile(bad)
	b[100] ^= 1
	os.WriteFile(bad, b, 0o644)
	probs, err := layout.Verify(context.Background(), out, 0, nil)
	if err != nil || len(probs) != 1 || probs[0].Path != bad || !errors.Is(probs[0].Err, layout.ErrChecksum) {
		t.Fatalf("verify names the damaged file: %v %v", probs, err)
	}
	sum, err = Repack(context.Background(), smallHF, out, Options{})
	if err != nil || sum.Experts != 1 || sum.Resumed != total-1 {
		t.Fatalf("third run: %v %v", sum, err)
	}
	if probs, err := layout.Verify(context.Background(), out, 0, nil); err != nil || len(probs) > 0 {
		t.Fatalf("verify: %v %v", probs, err)
	}
	if _, err := os.Stat(filepath.Join(out, layout.ExpertsDir, layout.JournalName)); err == nil {
		t.Fatal("journal left after a complete run")
	}
}

// shortReaderAt serves a safetensors image but fails reads past cut, like a
// file that shrank or a failing disk.
type shortReaderAt struct {
	b   []byte
	cut int64
	err error
}

func (r shortReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) <= r.cut {
		return copy(p, r.b[off:]), nil
	}
	n := 0
	if off < r.cut {
		n = copy(p, r.b[off:r.cut])
	}
	return n, r.err
}

func TestShortReads(t *testing.T) {
	var img bytes.Buffer
	data := make([]byte, 64*128*2)
	safetensors.Write(&img, []safetensors.WriteTensor{{Name: "w", DType: safetensors.BF16, Shape: []int64{64, 128}, Data: data}}, nil)
	for _, cause := range []error{io.EOF, syscall.EIO} {
		r := shortReaderAt{b: img.Bytes(), cut: int64(img.Len()) - 1000, err: cause}
		f, err := safetensors.Parse(r, int64(img.Len()))
		if err != nil {
			t.Fatal(err)
		}
		ms := matrixSource{name: "w", rows: 64, cols: 128, dtype: "BF16", w: newRowSource(f.Tensor("w"), "shard.safetensors", 64, nil)}
		for _, target := range []matrixTarget{{Bits: 16}, {Bits: 4, GroupSize: 64}} {
			err := ms.encode(context.Background(), target, func(int, []byte) error { return nil })
			if err == nil || !strings.Contains(err.Error(), `shard.safetensors: tensor "w"`) {
				t.Fatalf("%v, bits %d: err = %v", cause, target.Bits, err)
			}
			if cause == io.EOF && !errors.Is(err, io.ErrUnexpectedEOF) || cause == syscall.EIO && !errors.Is(err, syscall.EIO) {
				t.Fatalf("cause lost: %v", err)
			}
		}
	}
}

// A tokenizer.json the tokenizer package refuses fails fm-extract before it
// writes anything, not after the dense weights.
func TestBadTokenizerFailsFirst(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	refuse := func(path string) (TokenizerWriter, error) {
		return nil, fmt.Errorf("%s: normalizer type \"NFKC\" is not supported", path)
	}
	_, err := Extract(context.Background(), smallHF, out, Options{LoadTokenizer: refuse})
	if err == nil || !strings.Contains(err.Error(), "tokenizer.json: normalizer") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused tokenizer left %s behind (%v)", out, err)
	}
}

func TestSummaryString(t *testing.T) {
	for _, c := range []struct {
		s    Summary
		want string
	}{
		{Summary{Tensors: 64, Files: 8, Bytes: 2 << 20, SourceBytes: 3 << 20, Elapsed: time.Second, Skipped: map[string]int{SkipVision: 21, SkipMTP: 1}},
			"64 tensors, 2.0 MiB written in 8 files, 3.0 MiB read, 1.00s (0.003 GB/s read, 0.002 GB/s written); skipped source tensors: 1 mtp, 21 vision"},
		{Summary{Experts: 1, Resumed: 255, Files: 2, Bytes: 1 << 30, SourceBytes: 1 << 30, Elapsed: 2 * time.Second},
			"1 expert file written, 255 already valid (skipped), 1.0 GiB written in 2 files, 1.0 GiB read, 2.00s (0.537 GB/s read, 0.537 GB/s written)"},
		{Summary{Resumed: 256, Files: 1, Elapsed: time.Second},
			"0 expert files written, 256 already valid (skipped), 0 B written in 1 file, 0 B read, 1.00s (0.000 GB/s read, 0.000 GB/s written)"},
	} {
		if got := c.s.String(); got != c.want {
			t.Errorf("got  %q\nwant %q", got, c.want)
		}
	}
}

// phaseRecorder records each phase's total and the bytes reported for it.
type phaseRecorder struct {
	phases      []string
	total, done []int64
}

func (r *phaseRecorder) Start(phase string, total int64) {
	r.phases = append(r.phases, phase)
	r.total = append(r.total, total)
	r.done = append(r.done, 0)
}
func (r *phaseRecorder) Add(n int64) { r.done[len(r.done)-1] += n }
func (r *phaseRecorder) Done()       {}

// A completed phase reports exactly its total (the commands' bars end at 100%
// only then); an interrupted one reports less.
func TestProgressTotals(t *testing.T) {
	out := t.TempDir()
	check := func(what string, r *phaseRecorder, want int) {
		t.Helper()
		if len(r.phases) != want {
			t.Fatalf("%s: phases %v", what, r.phases)
		}
		for i := range r.phases {
			if r.done[i] != r.total[i] {
				t.Errorf("%s: phase %s reported %d of %d bytes", what, r.phases[i], r.done[i], r.total[i])
			}
		}
	}
	r := &phaseRecorder{}
	if _, err := Extract(context.Background(), smallHF, out, Options{Progress: r}); err != nil {
		t.Fatal(err)
	}
	check("extract", r, 1)
	r = &phaseRecorder{}
	if _, err := Repack(context.Background(), smallHF, out, Options{Progress: r}); err != nil {
		t.Fatal(err)
	}
	check("repack", r, 1)
	// A rerun re-hashes the files; a missing one still counts whole.
	m, _ := layout.ReadManifest(out)
	os.Remove(m.ExpertSet(layout.ExpertsDir).Path(out, 0, 3))
	r = &phaseRecorder{}
	if _, err := Repack(context.Background(), smallHF, out, Options{Progress: r}); err != nil {
		t.Fatal(err)
	}
	check("resumed repack", r, 2)
	ctx, cancel := context.WithCancel(context.Background())
	stop := &cancelAfter{n: 1 << 20, cancel: cancel}
	if _, err := Extract(ctx, smallHF, t.TempDir(), Options{Progress: stop}); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted extract: %v", err)
	}
	if stop.n > 0 {
		t.Fatal("the interrupted extract reported no progress")
	}
}
