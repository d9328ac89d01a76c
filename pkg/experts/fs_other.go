//go:build !linux && !darwin

package experts

import (
	"fmt"
	"os"
)

// Open opens path; this platform has no supported way to bypass the page cache.
func (osFS) Open(path string, direct bool) (File, error) {
	if direct {
		return nil, fmt.Errorf("%s: %w on this platform", path, ErrDirectIOUnsupported)
	}
	return os.Open(path)
}
