//go:build !noasm

package quant

import (
	"os"
	"unsafe"

	"github.com/fm-moe/fm/pkg/internal/simdlevel"
)

// simdLevel selects the block quantizer's kernels: the level pkg/backend/cpu
// uses (simdlevel, FM_SIMD caps it); the noasm build tag compiles the assembly
// out (group_generic.go). Tests lower it to run every level the machine has.
var simdLevel = detectedLevel

var detectedLevel = simdlevel.Detect(os.Getenv("FM_SIMD"))

// The kernels of group_amd64.s. Groups hold gs weights, a multiple of 16;
// groups ≥ 1. minMax* return 0 when every weight is finite (a sum of w·0),
// else NaN.

//go:noescape
func minMaxAVX512(w, mn, mx *float32, groups, gs int) float32

//go:noescape
func minMaxAVX2(w, mn, mx *float32, groups, gs int) float32

//go:noescape
func codesAVX512(w *float32, codes *uint8, scales, biases *float32, groups, gs int, n float32, pack4 bool)

//go:noescape
func codesAVX2(w *float32, codes *uint8, scales, biases *float32, groups, gs int, n float32, pack4 bool)

// k is a multiple of 16 (AVX-512) or 8 (AVX2), > 0.
//
//go:noescape
func paramsAVX512(mn, mx *float32, k int, n float32)

//go:noescape
func paramsAVX2(mn, mx *float32, k int, n float32)

// allParams replaces each group's minimum (mn) and maximum (mx) by its scale
// and bias.
func allParams(mn, mx []float32, n float32) {
	k := 0
	mx = mx[:len(mn)]
	switch {
	case simdLevel >= levelAVX512:
		if k = len(mn) &^ 15; k > 0 {
			paramsAVX512(&mn[0], &mx[0], k, n)
		}
	case simdLevel >= levelAVX2:
		if k = len(mn) &^ 7; k > 0 {
			paramsAVX2(&mn[0], &mx[0], k, n)
		}
	}
	allParamsGo(mn[k:], mx[k:], n)
}

func minMax(w, mn, mx []float32, gs int) bool {
	if len(mn) == 0 || gs%16 != 0 || simdLevel == levelGeneric {
		return minMaxGo(w, mn, mx, gs)
	}
	_, _, _ = w[len(mn)*gs-1], mx[len(mn)-1], mn[len(mn)-1]
	var bad float32
	if simdLevel >= levelAVX512 {
		bad = minMaxAVX512(&w[0], &mn[0], &mx[0], len(mn), gs)
	} else {
		bad = minMaxAVX2(&w[0], &mn[0], &mx[0], len(mn), gs)
	}
	return bad == 0
}

func groupCodes(w []float32, codes []uint8, scales, biases []float32, gs int, n float32) {
	if len(scales) == 0 || gs%16 != 0 || simdLevel == levelGeneric {
		codesGo(w, codes, scales, biases, gs, n)
		return
	}
	m := len(scales) * gs
	_, _, _ = w[m-1], codes[m-1], biases[len(scales)-1]
	codesSIMD(w, &codes[0], scales, biases, gs, n, false)
}

func codesSIMD(w []float32, dst *uint8, scales, biases []float32, gs int, n float32, pack4 bool) {
	if simdLevel >= levelAVX512 {
		codesAVX512(&w[0], dst, &scales[0], &biases[0], len(scales), gs, n, pack4)
	} else {
		codesAVX2(&w[0], dst, &scales[0], &biases[0], len(scales), gs, n, pack4)
	}
}

// packedCodes writes the packed codes of w straight into words when the
// kernels can (8 bits: one byte per code; 4 bits: two per byte; this is
// little-endian amd64, so a word's bytes are the stream's) and reports
// whether it did.
func packedCodes(w []float32, words []uint32, scales, biases []float32, gs, bits int, n float32) bool {
	if len(scales) == 0 || gs%16 != 0 || simdLevel == levelGeneric || bits != 4 && bits != 8 {
		return false
	}
	m := len(scales) * gs
	_, _, _ = w[m-1], words[m*bits/32-1], biases[len(scales)-1]
	codesSIMD(w, (*uint8)(unsafe.Pointer(&words[0])), scales, biases, gs, n, bits == 4)
	return true
}
