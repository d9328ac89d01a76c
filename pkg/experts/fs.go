package experts

import "errors"

// FS opens expert files. It is the seam where tests inject faults; OS() is the
// real one.
type FS interface {
	// Open opens path read-only. With direct set it bypasses the page cache
	// (O_DIRECT or the platform's equivalent); an implementation that cannot do
	// that returns an error matching ErrDirectIOUnsupported or syscall.EINVAL, and
	// the store retries without it.
	Open(path string, direct bool) (File, error)
}

// File is an open expert file. ReadAt has pread semantics: it may return fewer
// bytes than asked with a nil error (the store keeps reading), and io.EOF at
// the end of the file.
type File interface {
	ReadAt(p []byte, off int64) (int, error)
	Close() error
}

// ErrDirectIOUnsupported reports that the platform or filesystem cannot bypass
// the page cache.
var ErrDirectIOUnsupported = errors.New("direct I/O not supported")

// OS returns the FS of the operating system.
func OS() FS { return osFS{} }

type osFS struct{}
