//go:build unix

package experts

import (
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

const (
	mmapSupported = true
	mmapPage      = 4096 // touching one byte per 4 KiB faults every page in
)

// mmapSink keeps the prefault loads from being optimized away.
var mmapSink atomic.Uint32

// mapFile maps size bytes of f read-only and shared, and starts the kernel's
// read-ahead of all of it.
func mapFile(f *os.File, size int) ([]byte, error) {
	data, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	_ = unix.Madvise(data, unix.MADV_WILLNEED) // advice only: a refusal changes nothing
	return data, nil
}

func unmapFile(data []byte) { _ = unix.Munmap(data) }
