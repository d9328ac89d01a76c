//go:build !amd64 || noasm

package quant

// Without assembly (another architecture, or the noasm build tag) the Go twins
// of group.go run.
var simdLevel = levelGeneric

const detectedLevel = levelGeneric

func minMax(w, mn, mx []float32, gs int) bool { return minMaxGo(w, mn, mx, gs) }

func groupCodes(w []float32, codes []uint8, scales, biases []float32, gs int, n float32) {
	codesGo(w, codes, scales, biases, gs, n)
}

func packedCodes(w []float32, words []uint32, scales, biases []float32, gs, bits int, n float32) bool {
	return false
}

func allParams(mn, mx []float32, n float32) { allParamsGo(mn, mx, n) }
