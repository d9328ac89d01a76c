//go:build unix

package experts

import "golang.org/x/sys/unix"

// openFileLimit returns the soft RLIMIT_NOFILE (the Go runtime raises it to the
// hard limit at start-up).
func openFileLimit() int {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil || r.Cur > 1<<20 {
		return 1 << 20
	}
	return int(r.Cur)
}
