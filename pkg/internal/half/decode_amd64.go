//go:build !noasm

package half

import (
	"os"

	"github.com/fm-moe/fm/pkg/internal/simdlevel"
)

var level = simdlevel.Detect(os.Getenv("FM_SIMD"))

// decodeAVX512 widens n values (a multiple of 16), decodeAVX2 n values (a
// multiple of 8): VPMOVZXWD and a 16-bit shift per vector.
//
//go:noescape
func decodeAVX512(dst *float32, src *byte, n int)

//go:noescape
func decodeAVX2(dst *float32, src *byte, n int)

// decodeSIMD converts the longest prefix the vector loop takes and returns
// its length; the caller converts the rest.
func decodeSIMD(dst []float32, src []byte) int {
	switch {
	case level >= simdlevel.AVX512:
		if k := len(dst) &^ 15; k > 0 {
			decodeAVX512(&dst[0], &src[0], k)
			return k
		}
	case level >= simdlevel.AVX2:
		if k := len(dst) &^ 7; k > 0 {
			decodeAVX2(&dst[0], &src[0], k)
			return k
		}
	}
	return 0
}
