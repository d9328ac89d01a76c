//go:build !amd64 || noasm

package cpu

// Without the amd64 assembly the kernels are the Go twins (or, on arm64, a
// NEON 4-bit kernel beside them), so the ceiling is the Go loop's.
func peakKernel() string     { return "go" }
func peakF32(n int) float64  { return peakF32Go(n) }
func haveInt8Peak() bool     { return false }
func peakInt8(n int) float64 { return 0 }
