package simdlevel

import "testing"

func TestCap(t *testing.T) {
	for _, tc := range []struct {
		level int
		limit string
		want  int
	}{
		{AVX512, "", AVX512},
		{AVX512, "avx2", AVX2},
		{AVX512, "generic", Generic},
		{AVX2, "avx2", AVX2},
		{AVX2, "avx512", AVX2}, // not a cap: cannot raise
		{Generic, "avx2", Generic},
		{AVX512, "bogus", AVX512},
	} {
		if got := Cap(tc.level, tc.limit); got != tc.want {
			t.Errorf("Cap(%d, %q) = %d, want %d", tc.level, tc.limit, got, tc.want)
		}
	}
	if Detect("generic") != Generic {
		t.Error(`Detect("generic") is not Generic`)
	}
}
