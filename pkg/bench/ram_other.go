//go:build !linux

package bench

// TotalRAM is this machine's physical memory in bytes (0 when unknown: the
// caller asks for --ram-gb).
func TotalRAM() int64 { return 0 }
