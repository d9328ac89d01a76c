package experts

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Open opens path; with direct set it turns on F_NOCACHE, macOS's way of
// reading around the unified buffer cache (there is no O_DIRECT).
func (osFS) Open(path string, direct bool) (File, error) {
	f, err := os.Open(path)
	if err != nil || !direct {
		return f, err
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_NOCACHE, 1); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: F_NOCACHE: %w: %w", path, ErrDirectIOUnsupported, err)
	}
	return f, nil
}
