//go:build !amd64 || noasm

package cpu

// Without assembly (another architecture, or the noasm build tag) the generic
// twins in dot.go, ops.go and attn.go run; the SIMD entry points below forward
// to them so that callers need no build tags.
const (
	simdLevel  = levelGeneric
	haveAVX2   = false
	haveAVX512 = false
	haveVBMI   = false
	haveVNNI   = false
)

func quantizeWide(xq []int8, sx, gsum, x []float32, gs int) {
	panic("cpu: no SIMD kernels in this build")
}

func q4PairsBF16(raw []byte, xq []int8, sx []float32, scales, biases []uint16, gsum, y []float32) {
	panic("cpu: no SIMD kernels in this build")
}

func q4Pairs4BF16(raw []byte, x4 []int8, sx4 []float32, scales, biases []uint16, gsum, y []float32, rows, ystride int) {
	panic("cpu: no SIMD kernels in this build")
}

func q2QuadsBF16(raw []byte, xq []int8, sx []float32, scales, biases []uint16, gsum, y []float32) {
	panic("cpu: no SIMD kernels in this build")
}

func affineRowsInt8AVX2(bits int, raw []byte, xq []int8, sx, scales, biases, gsum, y []float32, gs int) {
	panic("cpu: no SIMD kernels in this build")
}

func affineRowsInt8(bits int, raw []byte, xq []int8, sx, scales, biases, gsum, y []float32, gs int) {
	panic("cpu: no SIMD kernels in this build")
}

func dotF32SIMD(a, b []float32) float32                  { return dotF32(a, b) }
func dotBF16SIMD(w []uint16, x []float32) float32        { return dotBF16(w, x) }
func axpySIMD(y []float32, a float32, x []float32)       { axpyGo(y, a, x) }
func scaledMulSIMD(dst, x, w []float32, s float32)       { scaledMulGo(dst, x, w, s) }
func decayReadSIMD(s, mem []float32, alpha, k float32)   { decayReadGo(s, mem, alpha, k) }
func updateReadSIMD(s, delta, o []float32, k, q float32) { updateReadGo(s, delta, o, k, q) }

func affineRowSIMD(bits int, row []byte, xp, scales, biases, gsum []float32, gs int) float32 {
	panic("cpu: no SIMD kernels on this architecture")
}

func affineRow4SIMD(bits int, row []byte, xp []float32, stride int, scales, biases, gsum4 []float32, gs int, out *[4]float32) bool {
	return false
}

func bf16Row4SIMD(w []uint16, x []float32, stride int, out *[4]float32) {
	panic("cpu: no SIMD kernels on this architecture")
}

func affineRowsWide(bits int, raw []byte, x, scales, biases, y []float32, gs int) {
	panic("cpu: no SIMD kernels in this build")
}

func affineRow4Wide(bits int, row []byte, x []float32, stride int, scales, biases []float32, gs int, out *[4]float32) bool {
	return false
}

func row8Wide(bits, cols int) bool { return false }

func row4Split(bits, cols int) bool { return false }

func bf16Split(cols int) bool { return false }

func bf16Rows4Split(w []uint16, cols int, x []float32, stride int, acc []float32, out [][4]float32) {
	panic("cpu: no SIMD kernels in this build")
}

func affineRows4Split(bits int, codes []byte, rb int, x []float32, stride int, scales, biases []float32, gs int, acc []float32, out [][4]float32) {
	panic("cpu: no SIMD kernels in this build")
}

func affineRow8Wide(row []byte, x []float32, stride int, scales, biases []float32, gs int, out *[8]float32) {
	panic("cpu: no SIMD kernels in this build")
}

func dotF32Wide(a, b []float32, wide bool) float32 { return dotF32(a, b) }

func dotBF16Wide(w []uint16, x []float32, wide bool) float32 { return dotBF16(w, x) }

func bf16Row4Wide(w []uint16, x []float32, stride int, out *[4]float32) {
	panic("cpu: no SIMD kernels in this build")
}

func readSumSIMD(b []byte) uint64 { return readSumGo(b) }

func q4RowsNatural(raw []byte, xq []int8, sx, scales, biases, gsum, y []float32, gs int) {
	panic("cpu: no SIMD kernels in this build")
}

func rowPack1(pk []byte, xq []int8, sx, gsum, y []float32, gs, bits int) {
	panic("cpu: no SIMD kernels in this build")
}

func rowPack8(pk []byte, x8 []int8, sx8, gs8, y []float32, blocks, gs, bits, ystride, ahead int) {
	panic("cpu: no SIMD kernels in this build")
}

func rowPack4(pk []byte, x4 []int8, sx4, gs4, y []float32, blocks, gs, bits, ystride int) {
	panic("cpu: no SIMD kernels in this build")
}

func packBlocks(out []byte, m *Matrix, lo, hi int) { packBlocksGo(out, m, lo, hi) }
