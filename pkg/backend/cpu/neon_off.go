//go:build !arm64 || noasm

package cpu

// Without the arm64 assembly there is no NEON kernel.
const haveNEON = false

func q4RowArch(raw []byte, x, scales, biases, gsum []float32, gs int) float32 {
	panic("cpu: no NEON kernels in this build")
}
