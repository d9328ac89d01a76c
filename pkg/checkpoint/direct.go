package checkpoint

import (
	"fmt"
	"sync"

	"github.com/fm-moe/fm/pkg/experts"
)

// directReads reads source tensors around the page cache (O_DIRECT on Linux,
// F_NOCACHE on macOS: experts.FS's direct mode). A buffered read of a cold
// source costs the kernel a page-cache insertion and a copy per page, which
// made fm-repack --bits 4 CPU-bound at about half of the disk's parallel read
// bandwidth on two cores (docs/PERF.md, "Converter: the source read around
// the page cache"); a direct read is the disk's DMA into an aligned buffer. It also leaves the page cache to the user's other
// files: a 209 GB source read buffered would evict all of them.
//
// O_DIRECT needs the buffer, the offset and the length aligned to the
// device's block, and tensors start anywhere in a safetensors file, so a read
// covers the aligned span around the wanted bytes: expertPlan.gather reads it
// into an aligned slot of the expert's buffer and uses the bytes where they
// land; readAt (for views made of several runs) reads it into a bounce buffer
// and copies them out. A file whose filesystem refuses direct reads (tmpfs,
// some FUSE mounts) is read buffered, as before; the refusal is remembered.
//
// Safe for concurrent use: Repack's workers share one.
type directReads struct {
	fs    experts.FS
	mu    sync.Mutex
	files map[string]experts.File // nil value: direct reads refused there
	bufs  sync.Pool               // *[]byte of bounceBytes, aligned
}

const (
	// directAlign is the alignment of direct reads (experts.Alignment: 4096
	// covers every common device's logical block).
	directAlign = experts.Alignment
	// bounceBytes is the most one direct read transfers: a streamed block
	// (blockBytes) and the alignment slack on both sides.
	bounceBytes = blockBytes + 2*directAlign
)

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

// readAt fills dst with the bytes of the file at path from absolute offset
// off. ok is false when the file cannot be read directly; dst is then
// untouched and the caller reads it buffered.
func (d *directReads) readAt(path string, dst []byte, off int64) (ok bool, err error) {
	f, err := d.open(path)
	if err != nil || f == nil {
		return false, err
	}
	bp, _ := d.bufs.Get().(*[]byte)
	if bp == nil {
		b := experts.AlignedBuffer(bounceBytes)
		bp = &b
	}
	defer d.bufs.Put(bp)
	bounce := *bp
	for len(dst) > 0 {
		start := off &^ (directAlign - 1)
		n := min(len(dst), blockBytes)
		end := (off + int64(n) + directAlign - 1) &^ (directAlign - 1)
		span := bounce[:end-start]
		got, err := experts.ReadFullAt(f, span, start)
		if need := int(off-start) + n; got < need {
			// The file ends inside the span: a short read is fine past
			// the wanted bytes, not before them.
			return true, fmt.Errorf("direct read of %d bytes at offset %d: %w", need, start, err)
		}
		copy(dst[:n], span[off-start:])
		dst, off = dst[n:], off+int64(n)
	}
	return true, nil
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
