//go:build !amd64 || noasm

package cpu

func dotRows4SIMD(q, k []float32, stride int, out *[4]float32) { dotRows4Go(q, k, stride, out) }

func weightedRowSumSIMD(o, p, v []float32, stride int) { weightedRowSumGo(o, p, v, stride) }

func expSumSIMD(x []float32, mx float32) float64 {
	var sum float64
	for i, v := range x {
		x[i] = exp32(v - mx)
		sum += float64(x[i])
	}
	return sum
}
