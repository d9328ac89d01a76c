package requant

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/fm-moe/fm/pkg/checkpoint"
	"github.com/fm-moe/fm/pkg/layout"
	"github.com/fm-moe/fm/pkg/quant"
)

const goldenDir = "../../testdata/golden"

// convert prepares src at bits (dense and experts) in a temporary directory.
func convert(t testing.TB, src string, bits int) string {
	t.Helper()
	dir := t.TempDir()
	opts := checkpoint.Options{Bits: bits}
	if _, err := checkpoint.Extract(context.Background(), src, dir, opts); err != nil {
		t.Fatal(err)
	}
	if _, err := checkpoint.Repack(context.Background(), src, dir, opts); err != nil {
		t.Fatal(err)
	}
	return dir
}

func verifyClean(t *testing.T, dir string) {
	t.Helper()
	problems, err := layout.Verify(context.Background(), dir, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("verify: %v", p)
	}
}

// readComponent decodes component name of an expert file of set to float32.
func readComponent(t *testing.T, dir string, set *layout.ExpertSet, layer, expert int, name string) []float32 {
	t.Helper()
	b, err := os.ReadFile(set.Path(dir, layer, expert))
	if err != nil {
		t.Fatal(err)
	}
	c := set.Component(name)
	rows, cols := int(c.Shape[0]), int(c.Shape[1])
	out := make([]float32, rows*cols)
	if err := decode(out, b, c, rows, cols); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRequantizeGoldens: for each architecture and source precision the 2-bit
// set is written next to the source set with the same file names, the
// manifest lists both, every file verifies, the file layout follows the rules
// (4096-aligned components, padded size, zero padding), and each 2-bit
// expert decodes to the optimized quantization of its source values (bit for
// bit: the files hold exactly what quant.QuantizeMSE chose).
func TestRequantizeGoldens(t *testing.T) {
	for _, c := range []struct {
		name, src string
		bits      int
	}{
		{"qwen35moe-tiny", "hf", 4},
		{"qwen3next-tiny", "hf", 16},
		{"qwen3moe-tiny", "hf", 8},
		{"qwen3moe-tiny", "mlx4", 0},
	} {
		t.Run(fmt.Sprintf("%s-%s-%d", c.name, c.src, c.bits), func(t *testing.T) {
			dir := convert(t, filepath.Join(goldenDir, c.name, c.src), c.bits)
			before, err := layout.ReadManifest(dir)
			if err != nil {
				t.Fatal(err)
			}
			sum, err := Requantize(context.Background(), dir, Options{Jobs: 3})
			if err != nil {
				t.Fatal(err)
			}
			t.Log(sum)
			m, err := layout.ReadManifest(dir)
			if err != nil {
				t.Fatal(err)
			}
			src, set := m.ExpertSet(layout.ExpertsDir), m.ExpertSet(layout.Experts2BitDir)
			if len(m.Experts) != 2 || src == nil || set == nil {
				t.Fatalf("manifest lists %d expert sets, want packed_experts and packed_experts_2bit", len(m.Experts))
			}
			if !reflect.DeepEqual(src, before.ExpertSet(layout.ExpertsDir)) {
				t.Error("the source set's manifest entry changed")
			}
			if set.Bits != 2 || set.GroupSize != 64 || set.NameFormat != src.NameFormat || set.FileSize%layout.ExpertAlignment != 0 {
				t.Errorf("2-bit set: bits %d, group %d, names %q, size %d", set.Bits, set.GroupSize, set.NameFormat, set.FileSize)
			}
			if sum.Experts != countExperts(src) || sum.Resumed != 0 || sum.SourceBits != src.Bits {
				t.Errorf("summary %+v", sum)
			}
			verifyClean(t, dir)
			names := func(d string) []string {
				ents, err := os.ReadDir(filepath.Join(dir, d))
				if err != nil {
					t.Fatal(err)
				}
				var out []string
				for _, e := range ents {
					out = append(out, e.Name())
				}
				return out
			}
			if a, b := names(layout.ExpertsDir), names(layout.Experts2BitDir); !reflect.DeepEqual(a, b) {
				t.Errorf("file names differ:\n%v\n%v", a, b)
			}
			for _, comp := range set.Components {
				for _, p := range comp.Parts() {
					if p.Offset%layout.ExpertAlignment != 0 {
						t.Errorf("%s part at offset %d", comp.Name, p.Offset)
					}
				}
				if comp.Quant.Scales.DType != "BF16" {
					t.Errorf("%s scales %s", comp.Name, comp.Quant.Scales.DType)
				}
			}
			// Each component decodes to QuantizeMSE of the decoded source, and the
			// bytes outside the components are zero.
			for l, sums := range src.Checksums {
				for e := range sums {
					if e%5 != 0 {
						continue // a sample keeps the test fast
					}
					file, err := os.ReadFile(set.Path(dir, l, e))
					if err != nil {
						t.Fatal(err)
					}
					used := make([]bool, len(file))
					for _, comp := range set.Components {
						rows, cols := int(comp.Shape[0]), int(comp.Shape[1])
						want, err := quant.QuantizeMSE(readComponent(t, dir, src, l, e, comp.Name), rows, cols, 2, 64, "BF16", quant.GainCorrected)
						if err != nil {
							t.Fatal(err)
						}
						exp := make([]float32, rows*cols)
						if err := want.Dequantize(exp); err != nil {
							t.Fatal(err)
						}
						if got := readComponent(t, dir, set, l, e, comp.Name); !reflect.DeepEqual(got, exp) {
							t.Fatalf("layer %d expert %d %s: stored values differ from QuantizeMSE of the source", l, e, comp.Name)
						}
						for _, p := range comp.Parts() {
							for i := p.Offset; i < p.Offset+p.Size; i++ {
								used[i] = true
							}
						}
					}
					for i, b := range file {
						if !used[i] && b != 0 {
							t.Fatalf("layer %d expert %d: padding byte %d is %#x", l, e, i, b)
						}
					}
				}
			}
			// The error statistics are real: below the min/max baseline.
			for _, ce := range sum.Errors {
				if ce.Count == 0 || !(ce.SquaredError < ce.MinMaxSquaredError) {
					t.Errorf("%s: %d weights, squared error %g, min/max %g", ce.Name, ce.Count, ce.SquaredError, ce.MinMaxSquaredError)
				}
			}
		})
	}
}

func countExperts(s *layout.ExpertSet) int {
	n := 0
	for _, sums := range s.Checksums {
		n += len(sums)
	}
	return n
}

// TestRequantizeResume: a rerun keeps valid files, rewrites damaged and
// missing ones, removes temporary leftovers, and an interrupted run's journal
// lets the next run keep what was finished.
func TestRequantizeResume(t *testing.T) {
	dir := convert(t, filepath.Join(goldenDir, "qwen3moe-tiny", "hf"), 4)
	first, err := Requantize(context.Background(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	total := first.Experts
	m, _ := layout.ReadManifest(dir)
	set := m.ExpertSet(layout.Experts2BitDir)

	again, err := Requantize(context.Background(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if again.Experts != 0 || again.Resumed != total {
		t.Fatalf("rerun wrote %d, kept %d of %d", again.Experts, again.Resumed, total)
	}

	// Damage one file, delete another, leave a temporary file behind.
	damaged := set.Path(dir, 0, 3)
	b, _ := os.ReadFile(damaged)
	b[100] ^= 0xff
	os.WriteFile(damaged, b, 0o644)
	os.Remove(set.Path(dir, 1, 7))
	leftover := filepath.Join(dir, set.Dir, ".layer_00_expert_0001.bin.tmp-123")
	os.WriteFile(leftover, []byte("partial"), 0o644)
	var log strings.Builder
	fixed, err := Requantize(context.Background(), dir, Options{Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	if fixed.Experts != 2 || fixed.Resumed != total-2 {
		t.Errorf("repair wrote %d, kept %d; want 2 and %d", fixed.Experts, fixed.Resumed, total-2)
	}
	if _, err := os.Stat(leftover); !errors.Is(err, os.ErrNotExist) {
		t.Error("temporary leftover not removed")
	}
	if !strings.Contains(log.String(), "removed 1 temporary") || !strings.Contains(log.String(), "resuming") {
		t.Errorf("log: %q", log.String())
	}
	verifyClean(t, dir)

	// An interrupted run: cancel after a few files. The manifest keeps the
	// previous state; the journal records the finished files for the next run.
	if err := os.RemoveAll(filepath.Join(dir, set.Dir)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	written := 0
	// Count written files only: the verify phase (the manifest lists files
	// that are gone) reports each missing file whole as well.
	_, err = Requantize(ctx, dir, Options{Jobs: 1, Progress: &phaseProgress{phase: set.Dir, add: func(n int64) {
		if n == set.FileSize {
			if written++; written == 5 {
				cancel()
			}
		}
	}}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted run: %v", err)
	}
	resumed, err := Requantize(context.Background(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if resumed.Resumed < 5 || resumed.Resumed+resumed.Experts != total {
		t.Errorf("after the interruption: kept %d, wrote %d of %d", resumed.Resumed, resumed.Experts, total)
	}
	if _, err := os.Stat(filepath.Join(dir, set.Dir, JournalName)); !errors.Is(err, os.ErrNotExist) {
		t.Error("journal left behind after a finished run")
	}
	verifyClean(t, dir)
}

// phaseProgress passes the byte counts of one phase to add.
type phaseProgress struct {
	phase, current string
	add            func(n int64)
}

func (p *phaseProgress) Start(phase string, _ int64) { p.current = phase }
func (p *phaseProgress) Done()                       { p.current = "" }
func (p *phaseProgress) Add(n int64) {
	if p.current == p.phase {
		p.add(n)
	}
}

// TestRequantizeSourceChanged: a 2-bit set made from an earlier source is not
// trusted after fm-repack rewrote the source set: every file is rewritten.
func TestRequantizeSourceChanged(t *testing.T) {
	src := filepath.Join(goldenDir, "qwen3moe-tiny", "hf")
	dir := convert(t, src, 4)
	if _, err := Requantize(context.Background(), dir, Options{}); err != nil {
		t.Fatal(err)
	}
	// Repacking the same experts again keeps the derived set listed ...
	if _, err := checkpoint.Repack(context.Background(), src, dir, checkpoint.Options{Bits: 4}); err != nil {
		t.Fatal(err)
	}
	if m, err := layout.ReadManifest(dir); err != nil || m.ExpertSet(layout.Experts2BitDir) == nil {
		t.Fatalf("identical repack dropped the 2-bit set (err %v)", err)
	}
	// ... while new experts make it stale: it must leave the manifest, so that
	// --2bit cannot run experts derived from other weights.
	if _, err := checkpoint.Repack(context.Background(), src, dir, checkpoint.Options{Bits: 8}); err != nil {
		t.Fatal(err)
	}
	if m, err := layout.ReadManifest(dir); err != nil || m.ExpertSet(layout.Experts2BitDir) != nil {
		t.Fatalf("the 2-bit set derived from the old experts is still listed (err %v)", err)
	}
	sum, err := Requantize(context.Background(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Resumed != 0 || sum.SourceBits != 8 {
		t.Errorf("after the source changed: kept %d, source %d-bit", sum.Resumed, sum.SourceBits)
	}
	verifyClean(t, dir)
}

// TestRequantizeRefuses: wrong bits, a source that is not wider, a damaged
// source file, a missing manifest; and a failing write leaves no final file
// and an unchanged manifest.
func TestRequantizeRefuses(t *testing.T) {
	dir := convert(t, filepath.Join(goldenDir, "qwen3moe-tiny", "hf"), 4)
	manifest, _ := os.ReadFile(filepath.Join(dir, layout.ManifestName))
	if _, err := Requantize(context.Background(), dir, Options{Bits: 4}); err == nil || !strings.Contains(err.Error(), "2- or 3-bit") {
		t.Errorf("--bits 4: %v", err)
	}
	if _, err := Requantize(context.Background(), t.TempDir(), Options{}); err == nil || !strings.Contains(err.Error(), "run fm-extract and fm-repack first") {
		t.Errorf("empty directory: %v", err)
	}

	// A write error (a full disk) fails the run naming the file.
	_, err := Requantize(context.Background(), dir, Options{Write: layout.WriteOptions{WrapWriter: func(path string, w io.Writer) io.Writer {
		if strings.HasSuffix(path, "layer_02_expert_0005.bin") {
			return failWriter{}
		}
		return w
	}}})
	if err == nil || !strings.Contains(err.Error(), "layer_02_expert_0005.bin") || !strings.Contains(err.Error(), "no space") {
		t.Errorf("failing write: %v", err)
	}
	if _, serr := os.Stat(filepath.Join(dir, layout.Experts2BitDir, "layer_02_expert_0005.bin")); !errors.Is(serr, os.ErrNotExist) {
		t.Error("a failed write left a file under the final name")
	}
	if now, _ := os.ReadFile(filepath.Join(dir, layout.ManifestName)); string(now) != string(manifest) {
		t.Error("a failed run changed the manifest")
	}

	// A damaged source file is refused, not requantized (on a fresh run: the
	// failed run above finished that file from the intact source).
	os.RemoveAll(filepath.Join(dir, layout.Experts2BitDir))
	m, _ := layout.ReadManifest(dir)
	path := m.ExpertSet(layout.ExpertsDir).Path(dir, 1, 2)
	b, _ := os.ReadFile(path)
	b[10] ^= 1
	os.WriteFile(path, b, 0o644)
	if _, err := Requantize(context.Background(), dir, Options{}); err == nil || !strings.Contains(err.Error(), "layer_01_expert_0002.bin") || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("damaged source: %v", err)
	}

	// A 2-bit source cannot be requantized to 2 or 3 bits.
	two := convert(t, filepath.Join(goldenDir, "qwen3moe-tiny", "hf"), 4)
	if _, err := checkpoint.Repack(context.Background(), filepath.Join(goldenDir, "qwen3moe-tiny", "hf"), two, checkpoint.Options{Bits: 2}); err != nil {
		t.Fatal(err)
	}
	for _, bits := range []int{2, 3} {
		if _, err := Requantize(context.Background(), two, Options{Bits: bits}); err == nil || !strings.Contains(err.Error(), "2-bit") {
			t.Errorf("2-bit source to %d bits: %v", bits, err)
		}
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("no space left on device") }

// TestRequantizeThreeBit: --bits 3 writes packed_experts_3bit; it can sit next
// to the 2-bit set; the manifest then lists three sets.
func TestRequantizeThreeBit(t *testing.T) {
	dir := convert(t, filepath.Join(goldenDir, "qwen35moe-tiny", "hf"), 4)
	for _, bits := range []int{3, 2} {
		if _, err := Requantize(context.Background(), dir, Options{Bits: bits}); err != nil {
			t.Fatal(err)
		}
	}
	m, _ := layout.ReadManifest(dir)
	set := m.ExpertSet(layout.Experts3BitDir)
	if len(m.Experts) != 3 || set == nil || set.Bits != 3 || m.ExpertSet(layout.Experts2BitDir) == nil {
		t.Fatalf("manifest sets: %d", len(m.Experts))
	}
	// 3 bits halve the error of 2 bits or better.
	src := m.ExpertSet(layout.ExpertsDir)
	two := m.ExpertSet(layout.Experts2BitDir)
	var e2, e3 float64
	for _, name := range []string{"gate_proj", "down_proj"} {
		w := readComponent(t, dir, src, 1, 4, name)
		for i, v := range readComponent(t, dir, set, 1, 4, name) {
			e3 += math.Pow(float64(v-w[i]), 2)
		}
		for i, v := range readComponent(t, dir, two, 1, 4, name) {
			e2 += math.Pow(float64(v-w[i]), 2)
		}
	}
	t.Logf("layer 1 expert 4 squared error: 3-bit %.4g, 2-bit %.4g", e3, e2)
	if !(e3 < e2/2) {
		t.Errorf("3-bit squared error %.4g not below half of 2-bit's %.4g", e3, e2)
	}
	verifyClean(t, dir)
}
