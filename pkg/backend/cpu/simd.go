package cpu

import "github.com/fm-moe/fm/pkg/internal/simdlevel"

// SIMD levels, in increasing order; simdLevel (kernels_amd64.go, or
// kernels_generic.go without assembly) is the machine's, a Pool may use less.
const (
	levelGeneric = simdlevel.Generic // the Go kernels of dot.go and ops.go
	levelAVX2    = simdlevel.AVX2    // AVX2 + FMA
	levelAVX512  = simdlevel.AVX512  // AVX512F + AVX512BW
)

// wideAffine reports whether the AVX-512 kernels handle an affine matrix of
// this bit width and group size (groups of 64 codes are their unit).
func wideAffine(bits, gs int) bool {
	if !haveAVX512 || gs%64 != 0 {
		return false
	}
	switch bits {
	case 2, 4, 8:
		return true
	case 3:
		return haveVBMI
	}
	return false
}
