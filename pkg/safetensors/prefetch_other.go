//go:build !linux

package safetensors

// Prefetch is a hint that only Linux acts on (posix_fadvise WILLNEED; see
// prefetch_linux.go).
func (t *Tensor) Prefetch(off, n int64) {}
