//go:build !amd64 || noasm

package cpu

// prefetch is a hint that only the amd64 assembly acts on (prefetch_amd64.s);
// elsewhere the hardware's prefetchers are left to it.
func prefetch(b []byte) {}
