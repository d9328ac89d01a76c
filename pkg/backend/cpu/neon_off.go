//go:build !arm64 || noasm

package cpu

// Without the arm64 assembly there are no NEON kernels; the callers test
// haveNEON (a constant) or int8NEON first, so these are never reached.
const (
	haveNEON = false
	haveSDOT = false
)

func neonAffine(bits, gs int) bool { return false }

func neonAffine4(bits, gs int) bool { return false }

func affineRow4Arch(bits int, raw []byte, x []float32, stride int, scales, biases, gsum4 []float32, gs int, out *[4]float32) {
	panic("cpu: no NEON kernels in this build")
}

func int8NEON(bits, gs int) bool { return false }

func affineRowArch(bits int, raw []byte, x, scales, biases, gsum []float32, gs int) float32 {
	panic("cpu: no NEON kernels in this build")
}

func f32DotArch(a, b []float32) float32 {
	panic("cpu: no NEON kernels in this build")
}

func bf16DotArch(w []uint16, x []float32) float32 {
	panic("cpu: no NEON kernels in this build")
}

func bf16Row4Arch(w []uint16, x []float32, stride int, out *[4]float32) {
	panic("cpu: no NEON kernels in this build")
}

func affineRowInt8Arch(bits, gs int, raw []byte, xq []int8, sx, scales, biases, gsum []float32) float32 {
	panic("cpu: no NEON kernels in this build")
}

func dotRows4Arch(q, k []float32, stride int, out *[4]float32) {
	panic("cpu: no NEON kernels in this build")
}

func weightedRowSumArch(o, p, v []float32, stride int) {
	panic("cpu: no NEON kernels in this build")
}

func axpyArch(y []float32, a float32, x []float32) {
	panic("cpu: no NEON kernels in this build")
}
