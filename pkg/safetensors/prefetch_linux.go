package safetensors

import "golang.org/x/sys/unix"

// Prefetch asks the OS to start reading bytes [off, off+n) of the tensor into
// the page cache without waiting for them (posix_fadvise WILLNEED), so that a
// later read finds them there: a converter that reads one expert while it
// computes on another keeps the disk busy this way. It is only a hint: a
// reader that is not a file, or an error, does nothing.
func (t *Tensor) Prefetch(off, n int64) {
	if f, ok := t.r.(interface{ Fd() uintptr }); ok && n > 0 {
		_ = unix.Fadvise(int(f.Fd()), t.Offset+off, n, unix.FADV_WILLNEED)
	}
}
