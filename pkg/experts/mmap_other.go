//go:build !unix

package experts

import (
	"errors"
	"os"
	"sync/atomic"
)

const (
	mmapSupported = false
	mmapPage      = 4096
)

var mmapSink atomic.Uint32

func mapFile(f *os.File, size int) ([]byte, error) {
	return nil, errors.New("mmap is not supported on this platform")
}

func unmapFile(data []byte) {}
