// Package simdlevel is the one switch that says which SIMD instructions fm's
// assembly may use: the compute kernels (pkg/backend/cpu) and the converter's
// quantizer (pkg/quant) both ask it, so FM_SIMD caps them alike.
//
// The level is read once from the CPU's features (x/sys/cpu also checks that
// the OS saves the YMM/ZMM registers); FM_SIMD=generic|avx2 caps it, for A/B
// measurements and to rule a kernel out when hunting a bug. The noasm build
// tag is the callers' business: they compile their assembly out.
package simdlevel

// Levels, in increasing order.
const (
	Generic = iota // Go code only
	AVX2           // AVX2 + FMA
	AVX512         // AVX512F + AVX512BW
)

// Cap lowers level to what limit (an FM_SIMD value) allows; an unknown or
// empty limit leaves it.
func Cap(level int, limit string) int {
	if max, ok := map[string]int{"generic": Generic, "avx2": AVX2}[limit]; ok && max < level {
		return max
	}
	return level
}
