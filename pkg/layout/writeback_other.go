//go:build !linux

package layout

import "os"

// startWriteback is a Linux-only hint (writeback_linux.go).
func startWriteback(f *os.File) {}
