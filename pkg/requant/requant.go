package requant

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/fm-moe/fm/pkg/internal/half"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/fm-moe/fm/pkg/internal/workpool"
	"github.com/fm-moe/fm/pkg/layout"
	"github.com/fm-moe/fm/pkg/progress"
	"github.com/fm-moe/fm/pkg/quant"
)

// Experts3BitDir is the directory of the 3-bit expert set.
const Experts3BitDir = layout.Experts3BitDir

// DirName returns the expert directory written for bits: packed_experts_2bit
// or packed_experts_3bit.
func DirName(bits int) string {
	if bits == 3 {
		return Experts3BitDir
	}
	return layout.Experts2BitDir
}

// JournalName is the resume journal's file name inside the target directory.
const JournalName = ".fm-requant-journal"

// algorithm names the quantizer in the source key (with the objective): a
// change of the algorithm must not let a rerun keep files the old one wrote.
const algorithm = "fm-requant/1 quant.GroupOptimizer BF16"

// scaleDType is the storage dtype of the written scales and biases.
const scaleDType = "BF16"

// components are the matrices of an expert file, in file order.
var components = [3]string{"gate_proj", "up_proj", "down_proj"}

// Options configure Requantize.
type Options struct {
	// Bits of the new set: 2 (default) or 3.
	Bits int
	// GroupSize of the new set (default 64).
	GroupSize int
	// LeastSquaresOnly keeps the plain least-squares fit per group instead of
	// the default gain-corrected one (quant.GainCorrected); for measurements.
	LeastSquaresOnly bool
	// Jobs is the number of experts requantized in parallel (default: one per
	// CPU; the work is compute-bound).
	Jobs int
	// Progress receives progress reports (nil: none).
	Progress progress.Reporter
	// Log receives one-line notes (resume counts, removed leftovers); nil: none.
	Log io.Writer
	// Write adjusts output file writing (fault injection in tests).
	Write layout.WriteOptions
}

func (o *Options) logf(format string, args ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, format+"\n", args...)
	}
}

// ComponentError is the quantization error of one component (gate_proj,
// up_proj, down_proj) over the expert files written in a run, against the
// source values, with the plain min/max requantization of flash-moe (bf16
// scale and bias) as the baseline.
type ComponentError struct {
	Name string
	// Count is the number of weights; SquaredError and MinMaxSquaredError are
	// sums over them.
	Count                            int64
	SquaredError, MinMaxSquaredError float64
}

// RMSE is the root mean squared error of the written weights.
func (c ComponentError) RMSE() float64 { return math.Sqrt(c.SquaredError / float64(max(c.Count, 1))) }

// MinMaxRMSE is the baseline's root mean squared error.
func (c ComponentError) MinMaxRMSE() float64 {
	return math.Sqrt(c.MinMaxSquaredError / float64(max(c.Count, 1)))
}

// Summary reports what Requantize did.
type Summary struct {
	SourceDir  string // the source set's directory, packed_experts
	SourceBits int    // its bits (16 for float experts)
	Dir        string // the written set's directory
	Bits       int
	Objective  quant.Objective
	Experts    int   // expert files written
	Resumed    int   // expert files already valid and kept
	Bytes      int64 // bytes written
	Elapsed    time.Duration
	// Errors holds gate_proj, up_proj and down_proj over the files written in
	// this run (none when every file was resumed).
	Errors [3]ComponentError
}

func (s *Summary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s (%d-bit) → %s (%d-bit, %s): %d expert files written, %d already valid (skipped), %s in %.2fs",
		s.SourceDir, s.SourceBits, s.Dir, s.Bits, s.Objective, s.Experts, s.Resumed, layout.FormatBytes(s.Bytes), s.Elapsed.Seconds())
	if s.Errors[0].Count > 0 {
		b.WriteString("; RMSE vs source (plain min/max would give):")
		for _, c := range s.Errors {
			fmt.Fprintf(&b, " %s %.3g (%.3g)", c.Name, c.RMSE(), c.MinMaxRMSE())
		}
	}
	return b.String()
}

// Requantize writes the expert set of dir/packed_experts again at opts.Bits
// into dir/packed_experts_2bit (or _3bit) and records it in the manifest next
// to the source set. Files an earlier run of the same source wrote and that
// still verify are kept (Summary.Resumed).
func Requantize(ctx context.Context, dir string, opts Options) (*Summary, error) {
	start := time.Now()
	if opts.Bits == 0 {
		opts.Bits = 2
	}
	if opts.Bits != 2 && opts.Bits != 3 {
		return nil, fmt.Errorf("--bits %d: fm-requant2bit writes 2- or 3-bit experts", opts.Bits)
	}
	manifestPath := filepath.Join(dir, layout.ManifestName)
	m, unlock, err := layout.LockManifest(dir, "fm-requant2bit", "run fm-extract and fm-repack first")
	if err != nil {
		return nil, err
	}
	defer unlock()
	src := m.ExpertSet(layout.ExpertsDir)
	if src == nil {
		return nil, fmt.Errorf("%s: lists no expert set %q: run fm-repack first", manifestPath, layout.ExpertsDir)
	}
	if opts.GroupSize == 0 {
		// The group size the conversion chose (fm-extract recorded it; the
		// source set carries it), else MLX's usual 64.
		opts.GroupSize = 64
		for _, g := range []int{m.Source.GroupSize, src.GroupSize} {
			if g > 0 {
				opts.GroupSize = g
			}
		}
		opts.logf("group size %d, as the source set uses", opts.GroupSize)
	}
	if src.Bits <= opts.Bits {
		return nil, fmt.Errorf("%s: the %s set is %d-bit; requantizing needs a source with more than %d bits (re-run fm-repack with --bits 4, 8 or 16)", manifestPath, src.Dir, src.Bits, opts.Bits)
	}
	obj := quant.GainCorrected
	if opts.LeastSquaresOnly {
		obj = quant.MinSquaredError
	}
	plan, err := newPlan(m, src, opts.Bits, opts.GroupSize, obj)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", manifestPath, err)
	}
	set := plan.set

	outDir := filepath.Join(dir, set.Dir)
	jobs := opts.Jobs
	if jobs <= 0 {
		jobs = runtime.NumCPU()
	}
	prog := progress.Sync(opts.Progress)
	// What earlier runs recorded for this source and layout: the manifest (a
	// finished run) and the journal (an interrupted one).
	res, err := layout.ResumeExpertSet(ctx, layout.ResumeOptions{
		Dir: dir, Set: &set, Listed: m.ExpertSet(set.Dir), Keys: plan.experts,
		JournalName: JournalName, JournalKey: "fm-requant-journal/1 " + set.SourceKey,
		Jobs: max(jobs, 4), Progress: prog, Logf: opts.logf,
	})
	if err != nil {
		return nil, err
	}
	journal, todo := res.Journal, res.Todo
	defer journal.Close()
	sum := &Summary{SourceDir: src.Dir, SourceBits: src.Bits, Dir: set.Dir, Bits: set.Bits, Objective: obj, Resumed: res.Kept}

	need := int64(len(todo)) * set.FileSize
	if err := layout.CheckFreeSpace(outDir, need); err != nil {
		return nil, err
	}
	prog.Start(set.Dir, need)
	var mu sync.Mutex
	for i, name := range components {
		sum.Errors[i].Name = name
	}
	workers := sync.Pool{New: func() any { return plan.newWorker() }}
	err = workpool.Run(ctx, jobs, len(todo), func(ctx context.Context, i int) error {
		k := todo[i]
		w := workers.Get().(*worker)
		defer workers.Put(w)
		var errs [3]ComponentError
		if err := w.build(ctx, dir, k, &errs); err != nil {
			return err
		}
		s := layout.Checksum(w.out)
		a, err := layout.CreateAtomic(set.Path(dir, k.Layer, k.Expert), opts.Write)
		if err != nil {
			return err
		}
		a.Write(w.out)
		if err := a.Commit(); err != nil {
			return err
		}
		if err := journal.Record(k, s); err != nil {
			return fmt.Errorf("%s: %w", filepath.Join(outDir, JournalName), err)
		}
		mu.Lock()
		set.Checksums[k.Layer][k.Expert] = s
		for c := range errs {
			sum.Errors[c].Count += errs[c].Count
			sum.Errors[c].SquaredError += errs[c].SquaredError
			sum.Errors[c].MinMaxSquaredError += errs[c].MinMaxSquaredError
		}
		mu.Unlock()
		prog.Add(set.FileSize)
		return nil
	})
	prog.Done()
	if err != nil {
		return nil, err
	}
	// The source set must not have changed under us (a concurrent fm-repack).
	err = layout.CommitExpertSet(dir, outDir, opts.Write, func(m *layout.Manifest) error {
		if now := m.ExpertSet(layout.ExpertsDir); now == nil || sourceKey(now, set.Bits, set.GroupSize, obj) != set.SourceKey {
			return fmt.Errorf("%s: the %s set changed while requantizing; run fm-requant2bit again", manifestPath, layout.ExpertsDir)
		}
		m.PutExpertSet(set)
		return nil
	})
	if err != nil {
		return nil, err
	}
	journal.Remove()

	sum.Experts = len(todo)
	sum.Bytes = need
	sum.Elapsed = time.Since(start)
	return sum, nil
}

// plan is the checked source set and the laid-out target set.
type plan struct {
	src     *layout.ExpertSet
	obj     quant.Objective
	set     layout.ExpertSet // checksums empty
	experts []layout.ExpertKey
	// dims[c] is the [rows, cols] of component c.
	dims [3][2]int
}

func newPlan(m *layout.Manifest, src *layout.ExpertSet, bits, groupSize int, obj quant.Objective) (*plan, error) {
	cfg := &m.Config
	I, H := cfg.MoEIntermediateSize, cfg.HiddenSize
	p := &plan{src: src, obj: obj, dims: [3][2]int{{I, H}, {I, H}, {H, I}}}
	var comps []layout.Tensor
	for c, name := range components {
		t := src.Component(name)
		if t == nil {
			return nil, fmt.Errorf("%s: component %q missing", src.Dir, name)
		}
		rows, cols := p.dims[c][0], p.dims[c][1]
		if len(t.Shape) != 2 || t.Shape[0] != int64(rows) || t.Shape[1] != int64(cols) {
			return nil, fmt.Errorf("%s: component %q: shape %v, want [%d, %d] (from the config)", src.Dir, name, t.Shape, rows, cols)
		}
		if t.Quant == nil {
			if _, err := quant.FloatSize(t.Data.DType); err != nil {
				return nil, fmt.Errorf("%s: component %q: %w", src.Dir, name, err)
			}
		} else if err := quant.Check(cols, t.Quant.Bits, t.Quant.GroupSize); err != nil {
			return nil, fmt.Errorf("%s: component %q: cannot read the source: %w", src.Dir, name, err)
		}
		if err := quant.Check(cols, bits, groupSize); err != nil {
			return nil, fmt.Errorf("%s: component %q: %w", src.Dir, name, err)
		}
		part := func(dtype string, r, c int) layout.Part {
			es := 4
			if dtype == scaleDType {
				es = 2
			}
			return layout.Part{DType: dtype, Shape: []int64{int64(r), int64(c)}, Size: int64(r * c * es)}
		}
		comps = append(comps, layout.Tensor{
			Name: name, Shape: []int64{int64(rows), int64(cols)},
			Data: part("U32", rows, quant.WordsPerRow(cols, bits)),
			Quant: &layout.Quant{Bits: bits, GroupSize: groupSize,
				Scales: part(scaleDType, rows, cols/groupSize), Biases: part(scaleDType, rows, cols/groupSize)},
		})
	}
	size := layout.AlignUp(layout.PlaceParts(comps, 0, layout.ExpertAlignment), layout.ExpertAlignment)
	p.set = layout.ExpertSet{
		Dir: DirName(bits), Bits: bits, GroupSize: groupSize,
		NameFormat: src.NameFormat, FileSize: size, Components: comps,
		Checksums: make([][]string, cfg.NumLayers),
		SourceKey: sourceKey(src, bits, groupSize, obj),
	}
	for l, sums := range src.Checksums {
		if sums == nil {
			continue
		}
		p.set.Checksums[l] = make([]string, len(sums))
		for e := range sums {
			p.experts = append(p.experts, layout.ExpertKey{Layer: l, Expert: e})
		}
	}
	if len(p.experts) == 0 {
		return nil, fmt.Errorf("%s: the set lists no expert files", src.Dir)
	}
	return p, nil
}

// sourceKey identifies what a target set is made from: the source set (layout
// and every file's checksum), the target bits and group size, and the algorithm.
func sourceKey(src *layout.ExpertSet, bits, groupSize int, obj quant.Objective) string {
	b, _ := json.Marshal(struct {
		Algorithm       string
		Objective       string
		Bits, GroupSize int
		Source          *layout.ExpertSet
	}{algorithm, obj.String(), bits, groupSize, src})
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// worker holds one goroutine's buffers and optimizer.
type worker struct {
	p        *plan
	in, out  []byte
	vals     []float32
	codes    []uint8
	words    []uint32
	scales   []float32
	biases   []float32
	opt      *quant.GroupOptimizer
	baseline []uint8
}

func (p *plan) newWorker() *worker {
	n, maxCols := 0, 0
	for _, d := range p.dims {
		n = max(n, d[0]*d[1])
		maxCols = max(maxCols, d[1])
	}
	opt, err := quant.NewGroupOptimizer(p.set.Bits, p.set.GroupSize, scaleDType, p.obj)
	if err != nil {
		panic(err) // newPlan checked bits, group size and dtype
	}
	return &worker{
		p: p, in: make([]byte, p.src.FileSize), out: make([]byte, p.set.FileSize),
		vals: make([]float32, n), codes: make([]uint8, maxCols),
		words:  make([]uint32, quant.WordsPerRow(maxCols, p.set.Bits)),
		scales: make([]float32, maxCols/p.set.GroupSize), biases: make([]float32, maxCols/p.set.GroupSize),
		opt: opt, baseline: make([]uint8, p.set.GroupSize),
	}
}

// build reads and checks the source file of k and fills w.out with the
// requantized expert file; errs receives each component's error statistics.
func (w *worker) build(ctx context.Context, dir string, k layout.ExpertKey, errs *[3]ComponentError) error {
	src := w.p.src
	path := src.Path(dir, k.Layer, k.Expert)
	if err := readFile(path, w.in); err != nil {
		return err
	}
	if sum := layout.Checksum(w.in); sum != src.Checksums[k.Layer][k.Expert] {
		return fmt.Errorf("%s: xxh3-128 %s, manifest says %s: the source expert file is damaged (re-run fm-repack)", path, sum, src.Checksums[k.Layer][k.Expert])
	}
	clear(w.out)
	for c, name := range components {
		st, dt := src.Component(name), &w.p.set.Components[c]
		rows, cols := w.p.dims[c][0], w.p.dims[c][1]
		vals := w.vals[:rows*cols]
		if err := decode(vals, w.in, st, rows, cols); err != nil {
			return fmt.Errorf("%s: component %q: %w", path, name, err)
		}
		if err := w.quantize(ctx, vals, rows, cols, dt, &errs[c]); err != nil {
			return err
		}
		errs[c].Name = name
	}
	return nil
}

// decode dequantizes (or widens) the source component t of file to float32.
func decode(dst []float32, file []byte, t *layout.Tensor, rows, cols int) error {
	data := file[t.Data.Offset : t.Data.Offset+t.Data.Size]
	if t.Quant == nil {
		return quant.DecodeFloats(dst, data, t.Data.DType)
	}
	q := t.Quant
	if q.Scales.DType != q.Biases.DType {
		return fmt.Errorf("scales are %s, biases %s", q.Scales.DType, q.Biases.DType)
	}
	return quant.DequantizeBytes(dst, data, file[q.Scales.Offset:q.Scales.Offset+q.Scales.Size],
		file[q.Biases.Offset:q.Biases.Offset+q.Biases.Size], q.Scales.DType, rows, cols, q.Bits, q.GroupSize)
}

// quantize writes vals ([rows, cols]) as the quantized component t of w.out.
func (w *worker) quantize(ctx context.Context, vals []float32, rows, cols int, t *layout.Tensor, e *ComponentError) error {
	bits, gs := t.Quant.Bits, t.Quant.GroupSize
	groups := cols / gs
	wpr := quant.WordsPerRow(cols, bits)
	codes, words := w.codes[:cols], w.words[:wpr]
	scales, biases := w.scales[:groups], w.biases[:groups]
	rowCodes := w.out[t.Data.Offset:]
	rowScales := w.out[t.Quant.Scales.Offset:]
	rowBiases := w.out[t.Quant.Biases.Offset:]
	round := func(x float32) float32 { return half.BF16ToF32(half.F32ToBF16(x)) }
	for r := 0; r < rows; r++ {
		if r%64 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		row := vals[r*cols : (r+1)*cols]
		for g := 0; g < groups; g++ {
			grp := row[g*gs : (g+1)*gs]
			s, b := w.opt.Quantize(codes[g*gs:(g+1)*gs], grp)
			scales[g], biases[g] = s, b
			e.SquaredError += quant.GroupSquaredError(codes[g*gs:(g+1)*gs], grp, s, b)
			ms, mb := quant.QuantizeGroupMinMax(w.baseline, grp, bits)
			e.MinMaxSquaredError += quant.GroupSquaredError(w.baseline, grp, round(ms), round(mb))
		}
		e.Count += int64(cols)
		quant.PackCodes(words, codes, bits)
		quant.EncodeCodes(rowCodes[r*wpr*4:], words)
		// The optimizer's scales and biases are bf16 values: encoding is exact.
		if err := quant.EncodeFloats(rowScales[r*groups*2:], scales, scaleDType); err != nil {
			return err
		}
		if err := quant.EncodeFloats(rowBiases[r*groups*2:], biases, scaleDType); err != nil {
			return err
		}
	}
	return nil
}

// readFile reads the whole file at path into buf, which must be its size.
func readFile(path string, buf []byte) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w (the manifest lists it; re-run fm-repack)", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() != int64(len(buf)) {
		return fmt.Errorf("%s: size %d, manifest says %d (re-run fm-repack)", path, st.Size(), len(buf))
	}
	if _, err := io.ReadFull(f, buf); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
