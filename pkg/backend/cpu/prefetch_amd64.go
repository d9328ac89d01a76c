//go:build !noasm

package cpu

import "unsafe"

// prefetchBytes asks for the n bytes at p (PREFETCHT0, one per cache line)
// without waiting for them.
//
//go:noescape
func prefetchBytes(p unsafe.Pointer, n int)

// prefetch asks for b's bytes (see prefetchBytes); an empty b does nothing.
func prefetch(b []byte) {
	if len(b) > 0 {
		prefetchBytes(unsafe.Pointer(unsafe.SliceData(b)), len(b))
	}
}
