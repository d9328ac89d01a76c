//go:build !linux && !darwin

package sysmem

// Total is this machine's physical memory in bytes: 0, unknown here (callers
// treat it as such: bench asks for --ram-gb, fm-repack reads buffered).
func Total() int64 { return 0 }
