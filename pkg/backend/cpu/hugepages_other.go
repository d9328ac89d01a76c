//go:build !linux

package cpu

// adviseHugePages does nothing outside Linux (macOS has no transparent huge
// pages to ask for).
func adviseHugePages([]byte) {}
