package sysmem

import "golang.org/x/sys/unix"

// Total is this machine's physical memory in bytes (0 when unknown).
func Total() int64 {
	n, err := unix.SysctlUint64("hw.memsize")
	if err != nil {
		return 0
	}
	return int64(n)
}
