package simdlevel

import "golang.org/x/sys/cpu"

// Detect returns this CPU's level capped by limit (an FM_SIMD value).
func Detect(limit string) int {
	level := Generic
	if cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		level = AVX2
		if cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW {
			level = AVX512
		}
	}
	return Cap(level, limit)
}
