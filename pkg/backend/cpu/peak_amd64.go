//go:build !noasm

package cpu

// fmaLoopAVX512 runs n iterations of 12 independent VFMADD231PS on ZMM
// registers (384 float32 operations per iteration); fmaLoopAVX2 the same on
// YMM (192); vnniLoopAVX512 12 independent VPDPBUSD on ZMM (12·64
// multiply-adds, 1,536 operations per iteration). Twelve chains cover the
// multiply-add latency (4–5 cycles) on two issue ports.
//
//go:noescape
func fmaLoopAVX512(n int)

//go:noescape
func fmaLoopAVX2(n int)

//go:noescape
func vnniLoopAVX512(n int)

func peakKernel() string {
	switch {
	case haveAVX512:
		return "avx512"
	case haveAVX2:
		return "avx2"
	}
	return "go"
}

func peakF32(n int) float64 {
	switch {
	case haveAVX512:
		fmaLoopAVX512(n)
		return float64(n) * 384
	case haveAVX2:
		fmaLoopAVX2(n)
		return float64(n) * 192
	}
	return peakF32Go(n)
}

func haveInt8Peak() bool { return haveVNNI }

func peakInt8(n int) float64 {
	vnniLoopAVX512(n)
	return float64(n) * 1536
}
