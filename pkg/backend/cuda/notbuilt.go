//go:build !cuda || !linux

package cuda

import "errors"

// Available reports why no CUDA device can be used: in a build without the
// `cuda` tag, always.
func Available() error {
	return errors.New("the CUDA backend is not in this build (rebuild with -tags cuda)")
}
