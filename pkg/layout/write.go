package layout

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// WriteOptions adjust how output files are written. The zero value is right for
// normal use.
type WriteOptions struct {
	// WrapWriter, when set, wraps the writer of every output file (path is the
	// final name). Tests use it to inject write errors such as a full disk.
	WrapWriter func(path string, w io.Writer) io.Writer
}

// tempMarker is in the name of every temporary output file; RemoveTemps
// recognizes leftovers of an interrupted run by it.
const tempMarker = ".tmp-"

// AtomicFile is an output file written under a temporary name in its final
// directory and renamed into place by Commit, so a reader (or fm-infer verify)
// never sees a partial file under the final name.
type AtomicFile struct {
	path string
	f    *os.File
	w    io.Writer
	err  error
}

// CreateAtomic starts writing the file path.
func CreateAtomic(path string, opts WriteOptions) (*AtomicFile, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+tempMarker+"*")
	if err != nil {
		return nil, fmt.Errorf("%s: cannot create a file in the output directory: %w", path, err)
	}
	// CreateTemp makes the file 0600; outputs are ordinary readable files.
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	a := &AtomicFile{path: path, f: f, w: f}
	if opts.WrapWriter != nil {
		a.w = opts.WrapWriter(path, f)
	}
	return a, nil
}

// Path returns the final path.
func (a *AtomicFile) Path() string { return a.path }

// Write writes to the temporary file; the first error sticks.
func (a *AtomicFile) Write(p []byte) (int, error) {
	if a.err != nil {
		return 0, a.err
	}
	n, err := a.w.Write(p)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		a.err = fmt.Errorf("%s: write: %w", a.path, err)
	}
	return n, a.err
}

// Commit closes the temporary file and renames it to the final path. On any
// error the temporary file is removed and the final path is left as it was.
func (a *AtomicFile) Commit() error {
	if a.err != nil {
		a.Abort()
		return a.err
	}
	startWriteback(a.f)
	if err := a.f.Close(); err != nil {
		os.Remove(a.f.Name())
		return fmt.Errorf("%s: close: %w", a.path, err)
	}
	if err := os.Rename(a.f.Name(), a.path); err != nil {
		os.Remove(a.f.Name())
		return fmt.Errorf("%s: rename: %w", a.path, err)
	}
	return nil
}

// Abort discards the temporary file.
func (a *AtomicFile) Abort() {
	a.f.Close()
	os.Remove(a.f.Name())
}

// WriteFileAtomic writes data to path through a temporary file and a rename.
func WriteFileAtomic(path string, data []byte, opts WriteOptions) error {
	a, err := CreateAtomic(path, opts)
	if err != nil {
		return err
	}
	a.Write(data)
	return a.Commit()
}

// RemoveTemps deletes temporary files an interrupted run left in dir and
// returns how many it removed.
func RemoveTemps(dir string) (int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, nil
		}
		return 0, err
	}
	n := 0
	for _, e := range ents {
		if name := e.Name(); strings.HasPrefix(name, ".") && strings.Contains(name, tempMarker) && e.Type().IsRegular() {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// CheckFreeSpace returns an error naming dir when the file system holding it has
// fewer than need bytes available to an unprivileged writer.
func CheckFreeSpace(dir string, need int64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("%s: statfs: %w", dir, err)
	}
	avail := int64(st.Bavail) * int64(st.Bsize)
	if avail < need {
		return fmt.Errorf("%s: needs %s free, the file system has %s", dir, FormatBytes(need), FormatBytes(avail))
	}
	return nil
}

// FormatBytes prints a byte count with a binary unit.
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// AlignUp rounds n up to a multiple of align.
func AlignUp(n, align int64) int64 { return (n + align - 1) / align * align }

// PlaceParts gives every part of ts (Data, then Quant.Scales and Quant.Biases
// when quantized), in order, an offset that is a multiple of align, starting at
// start. Part sizes must be set. It returns the end of the last part.
func PlaceParts(ts []Tensor, start, align int64) int64 {
	off := start
	for i := range ts {
		for _, p := range ts[i].Parts() {
			off = AlignUp(off, align)
			p.Offset = off
			off += p.Size
		}
	}
	return off
}

// Parts returns pointers to the tensor's parts in file order: Data, then
// Scales and Biases when quantized.
func (t *Tensor) Parts() []*Part {
	if t.Quant == nil {
		return []*Part{&t.Data}
	}
	return []*Part{&t.Data, &t.Quant.Scales, &t.Quant.Biases}
}

// ExpertNameFormat returns the expert file name format for a model:
// "layer_%02d_expert_%04d.bin", widened to %03d / %05d when the model has 100
// or more layers / 10000 or more experts.
func ExpertNameFormat(numLayers, numExperts int) string {
	lw, ew := 2, 4
	for n := 100; numLayers >= n; n *= 10 {
		lw++
	}
	for n := 10000; numExperts >= n; n *= 10 {
		ew++
	}
	return fmt.Sprintf("layer_%%0%dd_expert_%%0%dd.bin", lw, ew)
}

// DenseWriter writes model_weights.bin: parts at DenseAlignment offsets, zero
// padding between them, the file size a multiple of DenseAlignment, and the
// checksum of every byte computed while writing.
type DenseWriter struct {
	a   *AtomicFile
	bw  *bufio.Writer
	h   *Hasher
	off int64
}

// CreateDense starts writing dir/model_weights.bin.
func CreateDense(dir string, opts WriteOptions) (*DenseWriter, error) {
	a, err := CreateAtomic(filepath.Join(dir, DenseName), opts)
	if err != nil {
		return nil, err
	}
	h := NewHasher()
	return &DenseWriter{a: a, h: h, bw: bufio.NewWriterSize(io.MultiWriter(a, h), 1<<20)}, nil
}

// Offset returns the number of bytes written so far.
func (d *DenseWriter) Offset() int64 { return d.off }

// Write appends p.
func (d *DenseWriter) Write(p []byte) (int, error) {
	n, err := d.bw.Write(p)
	d.off += int64(n)
	return n, err
}

var zeros [DenseAlignment]byte

// PadTo writes zeros up to offset off, which must not be behind Offset.
func (d *DenseWriter) PadTo(off int64) error {
	if off < d.off {
		return fmt.Errorf("%s: pad to %d, already at %d", d.a.path, off, d.off)
	}
	for d.off < off {
		n := min(off-d.off, int64(len(zeros)))
		if _, err := d.Write(zeros[:n]); err != nil {
			return err
		}
	}
	return nil
}

// Finish pads the file to DenseAlignment, renames it into place and returns its
// description for the manifest.
func (d *DenseWriter) Finish() (DenseFile, error) {
	if err := d.PadTo(AlignUp(d.off, DenseAlignment)); err != nil {
		d.a.Abort()
		return DenseFile{}, err
	}
	if err := d.bw.Flush(); err != nil {
		d.a.Abort()
		return DenseFile{}, err
	}
	if err := d.a.Commit(); err != nil {
		return DenseFile{}, err
	}
	return DenseFile{File: DenseName, Size: d.off, Checksum: d.h.Sum(), Alignment: DenseAlignment}, nil
}

// Abort discards the partial file.
func (d *DenseWriter) Abort() { d.a.Abort() }

// WriteManifest checks m (it must parse back) and writes dir/model_weights.json
// atomically, with its own checksum (Digest) in manifest_checksum. m itself is
// not modified.
func WriteManifest(dir string, m *Manifest, opts WriteOptions) error {
	c := *m
	var err error
	if c.ManifestChecksum, err = c.Digest(); err != nil {
		return err
	}
	b, err := json.MarshalIndent(&c, "", " ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if _, err := ParseManifest(b); err != nil {
		return fmt.Errorf("%s: refusing to write an invalid manifest: %w", filepath.Join(dir, ManifestName), err)
	}
	return WriteFileAtomic(filepath.Join(dir, ManifestName), b, opts)
}

// CommitExpertSet is the last step of writing an expert set (fm-repack,
// fm-requant2bit): it makes the files under setDir durable, then applies edit
// to the manifest of outDir as it is on disk now (another command may have
// changed it meanwhile) and writes it back atomically. Only then is the set
// listed, so no interrupted run leaves a set that verifies.
func CommitExpertSet(outDir, setDir string, opts WriteOptions, edit func(m *Manifest) error) error {
	if err := SyncFS(setDir); err != nil {
		return err
	}
	m, err := ReadManifest(outDir)
	if err != nil {
		return err
	}
	if err := edit(m); err != nil {
		return err
	}
	return WriteManifest(outDir, m, opts)
}

// PutExpertSet lists set, in place of the listed set of the same directory if
// there is one.
func (m *Manifest) PutExpertSet(set ExpertSet) {
	for i := range m.Experts {
		if m.Experts[i].Dir == set.Dir {
			m.Experts[i] = set
			return
		}
	}
	m.Experts = append(m.Experts, set)
}
