package experts

import (
	"os"
	"syscall"
)

// Open opens path, with O_DIRECT when direct is set. Filesystems without
// O_DIRECT support (tmpfs before Linux 6.6, some FUSE mounts) answer EINVAL,
// which the store turns into a fallback to buffered reads.
func (osFS) Open(path string, direct bool) (File, error) {
	flag := os.O_RDONLY
	if direct {
		flag |= syscall.O_DIRECT
	}
	return os.OpenFile(path, flag, 0)
}
