package layout

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// LockName is the lock file every writer of a prepared directory holds
// (fm-extract, fm-repack, fm-requant2bit).
const LockName = ".fm-lock"

// ErrLocked is the cause of a Lock that found another writer at work.
var ErrLocked = errors.New("another fm writer is working on this directory")

// Lock takes the directory's writer lock: an exclusive flock on dir/.fm-lock,
// without waiting. Two writers at once would interleave their manifest
// updates and leave a directory that fails verify, so the second one fails at
// once with an error naming the directory and the holder's command and pid.
// The lock is released by unlock or when the process exits (the kernel drops
// flocks of dead processes, so a crash leaves no stale lock).
func Lock(dir, who string) (unlock func(), err error) {
	path := filepath.Join(dir, LockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: cannot create the lock file: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			h := strings.TrimSpace(string(holder))
			if h == "" {
				h = "another process"
			}
			return nil, fmt.Errorf("%s: %w (%s holds %s); wait for it to finish", dir, ErrLocked, h, LockName)
		}
		return nil, fmt.Errorf("%s: flock: %w", path, err)
	}
	// Say who holds it, for the message the next writer prints.
	f.Truncate(0)
	f.WriteAt([]byte(who+" pid "+strconv.Itoa(os.Getpid())+"\n"), 0)
	return func() {
		f.Truncate(0)
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}
