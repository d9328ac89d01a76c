//go:build !noasm

package cpu

import (
	"github.com/fm-moe/fm/pkg/internal/half"
	"os"
	"unsafe"

	"github.com/fm-moe/fm/pkg/internal/simdlevel"
	"golang.org/x/sys/cpu"
)

// The one switch that selects the assembly kernels: simdLevel, set once from
// the CPU's features (x/sys/cpu also checks that the OS saves the YMM/ZMM
// registers). FM_SIMD=generic|avx2|avx512 caps it, for A/B measurements and
// to rule a kernel out when hunting a bug; the noasm build tag compiles the
// assembly out altogether (kernels_generic.go).
var simdLevel = detectSIMD(os.Getenv("FM_SIMD"))

// haveAVX2 gates the AVX2+FMA kernels, haveAVX512 the AVX-512 ones
// (AVX512F; haveVBMI adds the byte permutes of the 3-bit kernel).
var (
	haveAVX2   = simdLevel >= levelAVX2
	haveAVX512 = simdLevel >= levelAVX512
	haveVBMI   = haveAVX512 && cpu.X86.HasAVX512VBMI
	// haveVNNI gates the int8-activation kernels (int8_amd64.s, VPDPBUSD).
	haveVNNI = haveAVX512 && cpu.X86.HasAVX512VNNI
)

func detectSIMD(limit string) int { return simdlevel.Detect(limit) }

//go:noescape
func dotF32AVX2(a, b *float32, n int) float32

//go:noescape
func dotBF16AVX2(w *uint16, x *float32, n int) float32

//go:noescape
func q4RowAVX2(packed *byte, xperm, scales, biases, gsum unsafe.Pointer, groups, gs int) float32

//go:noescape
func q8RowAVX2(packed *byte, xperm, scales, biases, gsum unsafe.Pointer, groups, gs int) float32

//go:noescape
func q2RowAVX2(packed *byte, xperm, scales, biases, gsum unsafe.Pointer, groups, gs int) float32

//go:noescape
func q4Row4AVX2(packed *byte, xp unsafe.Pointer, xstride int, scales, biases, gsum4, out unsafe.Pointer, groups, gs int)

//go:noescape
func q8Row4AVX2(packed *byte, xp unsafe.Pointer, xstride int, scales, biases, gsum4, out unsafe.Pointer, groups, gs int)

//go:noescape
func bf16Row4AVX2(w *uint16, xp unsafe.Pointer, xstride int, out unsafe.Pointer, n int)

//go:noescape
func q3RowAVX2(packed *byte, xperm, scales, biases, gsum unsafe.Pointer, groups, gs int) float32

//go:noescape
func axpyAVX2(y, x *float32, n int, a float32)

//go:noescape
func decayReadAVX2(s, mem *float32, n int, alpha, k float32)

//go:noescape
func updateReadAVX2(s, delta, o *float32, n int, k, q float32)

// dotF32SIMD and dotBF16SIMD are the AVX2 dot products, dotF32Wide and
// dotBF16Wide the AVX-512 ones when wide is set (the caller checks
// haveAVX512); the assembly takes whole blocks, the tail runs in Go.
func dotF32SIMD(a, b []float32) float32 { return dotF32Wide(a, b, false) }

func dotBF16SIMD(w []uint16, x []float32) float32 { return dotBF16Wide(w, x, false) }

func dotF32Wide(a, b []float32, wide bool) float32 {
	b = b[:len(a)]
	var s float32
	n := len(a) &^ 31
	if wide {
		n = len(a) &^ 63
	}
	switch {
	case n > 0 && wide:
		s = dotF32AVX512(&a[0], &b[0], n)
	case n > 0:
		s = dotF32AVX2(&a[0], &b[0], n)
	}
	for i := n; i < len(a); i++ {
		s += a[i] * b[i]
	}
	return s
}

func dotBF16Wide(w []uint16, x []float32, wide bool) float32 {
	x = x[:len(w)]
	var s float32
	n := len(w) &^ 31
	if wide {
		n = len(w) &^ 63
	}
	switch {
	case n > 0 && wide:
		s = dotBF16AVX512(&w[0], &x[0], n)
	case n > 0:
		s = dotBF16AVX2(&w[0], &x[0], n)
	}
	for i := n; i < len(w); i++ {
		s += half.BF16ToF32(w[i]) * x[i]
	}
	return s
}

// scaledMulAVX2 writes x[i]·s·w[i] into dst[0..n), n a multiple of 16.
//
//go:noescape
func scaledMulAVX2(dst, x, w *float32, n int, s float32)

func scaledMulSIMD(dst, x, w []float32, s float32) {
	dst, w = dst[:len(x)], w[:len(x)]
	n := len(x) &^ 15
	if !haveAVX2 || n == 0 {
		scaledMulGo(dst, x, w, s)
		return
	}
	scaledMulAVX2(&dst[0], &x[0], &w[0], n, s)
	scaledMulGo(dst[n:], x[n:], w[n:], s)
}

func axpySIMD(y []float32, a float32, x []float32) {
	y = y[:len(x)]
	n := len(x) &^ 15
	if n > 0 {
		axpyAVX2(&y[0], &x[0], n, a)
	}
	for i := n; i < len(x); i++ {
		y[i] += a * x[i]
	}
}

func decayReadSIMD(s, mem []float32, alpha, k float32) {
	mem = mem[:len(s)]
	n := len(s) &^ 7
	if n > 0 {
		decayReadAVX2(&s[0], &mem[0], n, alpha, k)
	}
	for i := n; i < len(s); i++ {
		s[i] *= alpha
		mem[i] += s[i] * k
	}
}

func updateReadSIMD(s, delta, o []float32, k, q float32) {
	delta, o = delta[:len(s)], o[:len(s)]
	n := len(s) &^ 7
	if n > 0 {
		updateReadAVX2(&s[0], &delta[0], &o[0], n, k, q)
	}
	for i := n; i < len(s); i++ {
		s[i] += k * delta[i]
		o[i] += s[i] * q
	}
}

// affineRowSIMD dispatches one affine row to its assembly kernel. xp is x in
// the kernel's order (see permuteX), scales/biases the row's float32 values.
func affineRowSIMD(bits int, row []byte, xp, scales, biases, gsum []float32, gs int) float32 {
	g := len(scales)
	xpp, sp, bp, gp := unsafe.Pointer(&xp[0]), unsafe.Pointer(&scales[0]), unsafe.Pointer(&biases[0]), unsafe.Pointer(&gsum[0])
	switch bits {
	case 4:
		return q4RowAVX2(&row[0], xpp, sp, bp, gp, g, gs)
	case 8:
		return q8RowAVX2(&row[0], xpp, sp, bp, gp, g, gs)
	case 2:
		return q2RowAVX2(&row[0], xpp, sp, bp, gp, g, gs)
	case 3:
		return q3RowAVX2(&row[0], xpp, sp, bp, gp, g, gs)
	}
	panic("cpu: no SIMD kernel for this bit width")
}

// affineRow4SIMD computes one affine row against four tokens whose permuted x
// rows start at xp[0], xp[stride], … (stride in floats); gsum4 holds the group
// sums as [group][token]. ok is false when no 4-token kernel exists for bits.
func affineRow4SIMD(bits int, row []byte, xp []float32, stride int, scales, biases, gsum4 []float32, gs int, out *[4]float32) bool {
	g := len(scales)
	_ = xp[3*stride+g*gs-1] // the four token rows are in range
	_ = gsum4[4*g-1]
	args := func() (unsafe.Pointer, unsafe.Pointer, unsafe.Pointer, unsafe.Pointer, unsafe.Pointer) {
		return unsafe.Pointer(&xp[0]), unsafe.Pointer(&scales[0]), unsafe.Pointer(&biases[0]), unsafe.Pointer(&gsum4[0]), unsafe.Pointer(out)
	}
	switch bits {
	case 4:
		x, s, b, gp, o := args()
		q4Row4AVX2(&row[0], x, 4*stride, s, b, gp, o, g, gs)
	case 8:
		x, s, b, gp, o := args()
		q8Row4AVX2(&row[0], x, 4*stride, s, b, gp, o, g, gs)
	default:
		return false
	}
	return true
}

// bf16Row4SIMD computes one bf16 row against four tokens' x (stride in
// floats) with the AVX2 kernel; bf16Row4Wide with the AVX-512 one.
func bf16Row4SIMD(w []uint16, x []float32, stride int, out *[4]float32) {
	bf16Row4(w, x, stride, out, false)
}

func bf16Row4Wide(w []uint16, x []float32, stride int, out *[4]float32) {
	bf16Row4(w, x, stride, out, true)
}

func bf16Row4(w []uint16, x []float32, stride int, out *[4]float32, wide bool) {
	_ = x[3*stride+len(w)-1]
	n := len(w) &^ 15
	if wide {
		n = len(w) &^ 31
	}
	switch {
	case n > 0 && wide:
		bf16Row4AVX512(&w[0], unsafe.Pointer(&x[0]), 4*stride, unsafe.Pointer(out), n, nil, row4Whole)
	case n > 0:
		bf16Row4AVX2(&w[0], unsafe.Pointer(&x[0]), 4*stride, unsafe.Pointer(out), n)
	default:
		*out = [4]float32{}
	}
	for i := n; i < len(w); i++ {
		f := half.BF16ToF32(w[i])
		out[0] += f * x[i]
		out[1] += f * x[stride+i]
		out[2] += f * x[2*stride+i]
		out[3] += f * x[3*stride+i]
	}
}
