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

// LockManifest is how a writer that updates an existing prepared directory
// starts: it reads the manifest (a missing one is an error naming the step
// to run first, missingHint), takes the writer lock, and reads the manifest
// again under the lock, since a writer that just finished may have changed
// it.
func LockManifest(dir, who, missingHint string) (m *Manifest, unlock func(), err error) {
	if _, err := ReadManifest(dir); errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("%s: not found: %s", filepath.Join(dir, ManifestName), missingHint)
	} else if err != nil {
		return nil, nil, err
	}
	if unlock, err = Lock(dir, who); err != nil {
		return nil, nil, err
	}
	if m, err = ReadManifest(dir); err != nil {
		unlock()
		return nil, nil, err
	}
	return m, unlock, nil
}
