package checkpoint

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/fm-moe/fm/pkg/experts"
)

// directReads reads source tensors around the page cache (O_DIRECT on Linux,
// F_NOCACHE on macOS: experts.FS's direct mode). A buffered read of a cold
// source costs the kernel a page-cache insertion and a copy per page, which
// made fm-repack --bits 4 CPU-bound at about half of the disk's parallel read
// bandwidth on two cores (docs/PERF.md, "Converter: the source read around
// the page cache"); a direct read is the disk's DMA into an aligned buffer.
// It also leaves the page cache to the user's other files: a 209 GB source
// read buffered would evict all of them.
//
// O_DIRECT needs the buffer, the offset and the length aligned to the
// device's block, and tensors start anywhere in a safetensors file, so a read
// covers the aligned span around the wanted bytes (readSpan): expertPlan.gather
// reads it into an aligned slot of the expert's buffer and uses the bytes
// where they land. A file whose filesystem refuses direct reads (tmpfs, some
// FUSE mounts) is read buffered, as before; the refusal is remembered.
//
// Safe for concurrent use: Repack's workers share one.
type directReads struct {
	fs    experts.FS
	mu    sync.Mutex
	files map[string]experts.File // nil value: direct reads refused there
}

// directAlign is the alignment of direct reads (experts.Alignment: 4096
// covers every common device's logical block).
const directAlign = experts.Alignment

func newDirectReads(fs experts.FS) *directReads {
	return &directReads{fs: fs, files: map[string]experts.File{}}
}

// open returns path's direct descriptor, or nil where direct reads are
// refused (the caller reads buffered).
func (d *directReads) open(path string) (experts.File, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if f, ok := d.files[path]; ok {
		return f, nil
	}
	f, err := d.fs.Open(path, true)
	if err != nil {
		if !experts.DirectUnsupported(err) {
			return nil, err
		}
		f = nil
	}
	d.files[path] = f
	return f, nil
}

// readSpan fills slot, the directAlign-aligned span of f from offset start
// (slot aligned, its length a multiple of directAlign), with direct reads of
// up to blockBytes each, all in flight together. The file may end inside the
// span, but not before byte needEnd.
func readSpan(f experts.File, slot []byte, start, needEnd int64) error {
	errs := make([]error, (int64(len(slot))+blockBytes-1)/blockBytes)
	var wg sync.WaitGroup
	for i := range errs {
		a := int64(i) * blockBytes
		piece := slot[a:min(a+blockBytes, int64(len(slot)))]
		wg.Go(func() {
			got, err := experts.ReadFullAt(f, piece, start+a)
			if start+a+int64(got) >= min(start+a+int64(len(piece)), needEnd) {
				return
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = fmt.Errorf("%w (file truncated?)", err)
			}
			errs[i] = fmt.Errorf("direct read of %d bytes at offset %d: %w", len(piece), start+a, err)
		})
	}
	wg.Wait()
	return firstError(errs)
}

// firstError is the first non-nil error of errs (in order, not in time: the
// message is the same from run to run), or nil.
func firstError(errs []error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// Close closes the direct descriptors.
func (d *directReads) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var first error
	for path, f := range d.files {
		if f != nil {
			if err := f.Close(); err != nil && first == nil {
				first = fmt.Errorf("%s: %w", path, err)
			}
		}
		delete(d.files, path)
	}
	return first
}
