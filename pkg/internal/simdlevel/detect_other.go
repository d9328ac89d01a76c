//go:build !amd64

package simdlevel

// Detect returns Generic: the x86 levels do not exist here (arm64's NEON
// kernels are always on).
func Detect(limit string) int { return Generic }
