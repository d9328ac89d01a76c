package checkpoint

import (
	"errors"
	"fmt"
	"io"

	"github.com/fm-moe/fm/pkg/safetensors"
)

// rowRun is n consecutive rows of a source tensor starting at row first.
type rowRun struct{ first, n int64 }

// rowSource is a view of rows of one source tensor, in output order: runs of
// consecutive source rows. It covers whole tensors, one expert's slice of a
// stacked or fused tensor, and the row permutation that splits Qwen3-Next's
// interleaved projections; reads are preads of whole runs.
type rowSource struct {
	t        *safetensors.Tensor
	file     string
	rowBytes int64
	runs     []rowRun
	rows     int64
	// mem, when set, holds the view's rows already read (gather), in view
	// order: read copies from it, view returns it in place.
	mem []byte
}

// newRowSource views t as srcRows rows (its bytes split evenly) and selects runs
// of them (nil: all, in order).
func newRowSource(t *safetensors.Tensor, file string, srcRows int64, runs []rowRun) rowSource {
	r := rowSource{t: t, file: file, rowBytes: t.Size / srcRows}
	if runs == nil {
		runs = []rowRun{{0, srcRows}}
	}
	r.runs = runs
	for _, run := range runs {
		r.rows += run.n
	}
	return r
}

// sub selects rows [first, first+n) of the view.
func (r rowSource) sub(first, n int64) rowSource {
	out := rowSource{t: r.t, file: r.file, rowBytes: r.rowBytes, rows: n}
	for _, run := range r.runs {
		if first >= run.n {
			first -= run.n
			continue
		}
		take := min(run.n-first, n)
		out.runs = append(out.runs, rowRun{run.first + first, take})
		n -= take
		first = 0
		if n == 0 {
			break
		}
	}
	return out
}

// permute selects view rows by runs over the view's own row numbering.
func (r rowSource) permute(runs []rowRun) rowSource {
	out := rowSource{t: r.t, file: r.file, rowBytes: r.rowBytes}
	for _, run := range runs {
		s := r.sub(run.first, run.n)
		out.runs = append(out.runs, s.runs...)
		out.rows += run.n
	}
	return out
}

// view returns view rows [start, start+n): a slice of mem when they were
// gathered (no copy), else buf's first bytes, read.
func (r rowSource) view(buf []byte, start, n int64) ([]byte, error) {
	if r.mem != nil {
		return r.mem[start*r.rowBytes : (start+n)*r.rowBytes], nil
	}
	b := buf[:n*r.rowBytes]
	return b, r.read(b, start)
}

// read fills dst with view rows [start, start+len(dst)/rowBytes).
func (r rowSource) read(dst []byte, start int64) error {
	if r.mem != nil {
		copy(dst, r.mem[start*r.rowBytes:])
		return nil
	}
	n := int64(len(dst)) / r.rowBytes
	for _, run := range r.sub(start, n).runs {
		size := run.n * r.rowBytes
		if err := r.readRun(dst[:size], run); err != nil {
			return err
		}
		dst = dst[size:]
	}
	return nil
}

// readRun reads one run's bytes through the page cache.
func (r rowSource) readRun(dst []byte, run rowRun) error {
	if _, err := r.t.Open().ReadAt(dst, run.first*r.rowBytes); err != nil {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("%w (file truncated?)", io.ErrUnexpectedEOF)
		}
		return fmt.Errorf("%s: tensor %q: read %d bytes at offset %d: %w", r.file, r.t.Name, len(dst), r.t.Offset+run.first*r.rowBytes, err)
	}
	return nil
}
