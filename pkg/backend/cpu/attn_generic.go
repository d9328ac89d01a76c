//go:build !amd64 || noasm

package cpu

func dotHeads4SIMD(q []float32, qstride int, k []float32, kstride, D int, out *[16]float32) {
	dotHeads4Go(q, qstride, k, kstride, D, out)
}

func weightedRowSumHeads4SIMD(o []float32, ostride int, p []float32, pstride, n int, v []float32, stride, D int) {
	weightedRowSumHeads4Go(o, ostride, p, pstride, n, v, stride, D)
}

func swiGLU32SIMD(gate, up []float32) { swiGLU32Go(gate, up) }

func dotRows4SIMD(q, k []float32, stride int, out *[4]float32) { dotRows4Go(q, k, stride, out) }

func weightedRowSumSIMD(o, p, v []float32, stride int) { weightedRowSumGo(o, p, v, stride) }

func expSumAll(x []float32, mx float32) (float64, bool) { return 0, false }

func expSumSIMD(x []float32, mx float32) float64 {
	var sum float64
	for i, v := range x {
		x[i] = exp32(v - mx)
		sum += float64(x[i])
	}
	return sum
}

func maxF32SIMD(x []float32) float32 { return maxF32Go(x) }

func scaleF32SIMD(x []float32, s float32) { scaleF32Go(x, s) }
