package kernelcmp

import (
	"fmt"

	"github.com/fm-moe/fm/pkg/internal/half"
)

// Variant is one way of writing the kernels. A nil field is a kernel the
// technology cannot express on this CPU (Note says why).
type Variant struct {
	Name string
	// Q4Rows computes y[r] = Σ_i (scales[r,g(i)]·code[r,i] + biases[r,g(i)])·x[i]
	// for len(y) consecutive 4-bit rows; xp is PermuteQ4(x), gs a multiple of
	// 64 and codes two per byte, element 2i in the low nibble of byte i.
	Q4Rows func(codes []byte, xp, scales, biases, y []float32, gs int)
	// Q4RowAVX2 is one 4-bit row in the form of the AVX2 kernel (the level
	// for CPUs without AVX-512): Σ_g s_g·Σ(code·x) + b_g·gsum_g, where xp is
	// PermuteQ4AVX2(x), gsum[g] = Σ of group g's x, and gs a multiple of 32.
	Q4RowAVX2 func(codes []byte, xp, scales, biases, gsum []float32, gs int) float32
	// DotBF16 is Σ half.BF16ToF32(w[i])·x[i].
	DotBF16 func(w []uint16, x []float32) float32
	// DotU8I8 is Σ a[i]·b[i] over unsigned and signed bytes.
	DotU8I8 func(a []uint8, b []int8) int32
	Note    string
}

// variants is filled by the files of each technology (build-tag selected),
// in the order the benchmarks report them.
var variants = []Variant{{Name: "go", Q4Rows: q4RowsGo, Q4RowAVX2: q4RowAVX2Go, DotBF16: dotBF16Go, DotU8I8: dotU8I8Go}}

// Variants returns every technology compiled into this binary that this CPU
// can run.
func Variants() []Variant { return variants }

// PermuteQ4 reorders x per 64 elements for the AVX-512 4-bit kernels: entry
// 16k+j is x[8j+2k] for j < 8 and x[8(j−8)+2k+1] for j ≥ 8 (the order in which
// VPSRLVD by 8k (+4) brings the codes of 32 broadcast bytes to the low nibble
// of each lane). It is pkg/backend/cpu's permuteX(…, 4, 16). len(x) must be a
// multiple of 64.
func PermuteQ4(dst, x []float32) {
	if len(x)%64 != 0 || len(dst) < len(x) {
		panic(fmt.Sprintf("kernelcmp: PermuteQ4 of %d elements into %d (want a multiple of 64)", len(x), len(dst)))
	}
	for b := 0; b < len(x); b += 64 {
		for k := 0; k < 4; k++ {
			for j := 0; j < 8; j++ {
				dst[b+16*k+j] = x[b+8*j+2*k]
				dst[b+16*k+8+j] = x[b+8*j+2*k+1]
			}
		}
	}
}

// PermuteQ4AVX2 reorders x per 16 elements as [x0 x2 … x14 x1 x3 … x15], so
// that the low nibbles of 8 bytes meet the even elements and the high
// nibbles the odd ones (pkg/backend/cpu's permuteX(…, 4, 8)). len(x) must be a
// multiple of 16.
func PermuteQ4AVX2(dst, x []float32) {
	if len(x)%16 != 0 || len(dst) < len(x) {
		panic(fmt.Sprintf("kernelcmp: PermuteQ4AVX2 of %d elements into %d (want a multiple of 16)", len(x), len(dst)))
	}
	for b := 0; b < len(x); b += 16 {
		for i := 0; i < 8; i++ {
			dst[b+i] = x[b+2*i]
			dst[b+8+i] = x[b+2*i+1]
		}
	}
}

// q4RowShape checks a Q4RowAVX2 call and returns its groups.
func q4RowShape(codes []byte, xp, scales, biases, gsum []float32, gs int) int {
	g := len(scales)
	if g == 0 || gs <= 0 || gs%32 != 0 || len(biases) != g || len(gsum) != g || len(xp) != g*gs || len(codes) != g*gs/2 {
		panic(fmt.Sprintf("kernelcmp: Q4RowAVX2 with %d code bytes, %d x, %d scales, %d biases, %d group sums, group size %d",
			len(codes), len(xp), len(scales), len(biases), len(gsum), gs))
	}
	return g
}

// q4RowAVX2Go is Q4RowAVX2 in Go on the permuted x.
func q4RowAVX2Go(codes []byte, xp, scales, biases, gsum []float32, gs int) float32 {
	g := q4RowShape(codes, xp, scales, biases, gsum, gs)
	var tot float32
	for gi := 0; gi < g; gi++ {
		var acc float32
		for b := gi * gs; b < (gi+1)*gs; b += 16 {
			for i := 0; i < 8; i++ {
				c := codes[b/2+i]
				acc += float32(c&15)*xp[b+i] + float32(c>>4)*xp[b+8+i]
			}
		}
		tot += scales[gi]*acc + biases[gi]*gsum[gi]
	}
	return tot
}

// q4Shape checks a Q4Rows call and returns its groups per row.
func q4Shape(codes []byte, xp, scales, biases, y []float32, gs int) int {
	rows := len(y)
	if rows == 0 || gs <= 0 || gs%64 != 0 || len(scales)%rows != 0 {
		panic(fmt.Sprintf("kernelcmp: Q4Rows with %d rows, %d scales, group size %d (want rows > 0, a multiple of 64)", rows, len(scales), gs))
	}
	g := len(scales) / rows
	if len(biases) != len(scales) || len(xp) != g*gs || len(codes) != rows*g*gs/2 {
		panic(fmt.Sprintf("kernelcmp: Q4Rows with %d code bytes, %d x, %d scales, %d biases for %d rows of %d groups of %d",
			len(codes), len(xp), len(scales), len(biases), rows, g, gs))
	}
	return g
}

// q4RowsGo is Q4Rows in Go on the permuted x (the generic twin; it reads the
// codes in the kernels' order, so its test checks PermuteQ4 too).
func q4RowsGo(codes []byte, xp, scales, biases, y []float32, gs int) {
	g := q4Shape(codes, xp, scales, biases, y, gs)
	n := g * gs
	for r := range y {
		row := codes[r*n/2 : (r+1)*n/2]
		var acc float32
		for gi := 0; gi < g; gi++ {
			s, b := scales[r*g+gi], biases[r*g+gi]
			for off := gi * gs; off < (gi+1)*gs; off += 64 {
				words := row[off/2 : off/2+32]
				xb := xp[off : off+64]
				for k := 0; k < 4; k++ {
					for j := 0; j < 8; j++ {
						c := words[4*j+k]
						acc += (s*float32(c&15) + b) * xb[16*k+j]
						acc += (s*float32(c>>4) + b) * xb[16*k+8+j]
					}
				}
			}
		}
		y[r] = acc
	}
}

// dotBF16Go is DotBF16 in Go.
func dotBF16Go(w []uint16, x []float32) float32 {
	checkLen(len(w), len(x), "DotBF16")
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(w); i += 4 {
		s0 += half.BF16ToF32(w[i]) * x[i]
		s1 += half.BF16ToF32(w[i+1]) * x[i+1]
		s2 += half.BF16ToF32(w[i+2]) * x[i+2]
		s3 += half.BF16ToF32(w[i+3]) * x[i+3]
	}
	for ; i < len(w); i++ {
		s0 += half.BF16ToF32(w[i]) * x[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// dotU8I8Go is DotU8I8 in Go.
func dotU8I8Go(a []uint8, b []int8) int32 {
	checkLen(len(a), len(b), "DotU8I8")
	var s int32
	for i, v := range a {
		s += int32(v) * int32(b[i])
	}
	return s
}

// bulk is how many of n elements a SIMD kernel taking whole blocks of
// block (a power of two) handles; the Go twin does the rest.
func bulk(n, block int) int { return n &^ (block - 1) }

// rowsKernel is the assembly signature of a Q4Rows kernel; reps is gs/64.
type rowsKernel func(packed *byte, x, scales, biases, y *float32, rows, groups, reps int)

// wrapRows makes a Q4Rows of an assembly kernel.
func wrapRows(kernel rowsKernel) func(codes []byte, xp, scales, biases, y []float32, gs int) {
	return func(codes []byte, xp, scales, biases, y []float32, gs int) {
		g := q4Shape(codes, xp, scales, biases, y, gs)
		kernel(&codes[0], &xp[0], &scales[0], &biases[0], &y[0], len(y), g, gs/64)
	}
}

// wrapDot makes a dot product of a SIMD kernel that takes whole blocks of
// block elements: it checks the lengths, runs the kernel over the bulk and
// the Go twin over the tail.
func wrapDot[A, B any, R float32 | int32](name string, block int, kernel func(*A, *B, int) R, twin func([]A, []B) R) func([]A, []B) R {
	return func(a []A, b []B) R {
		checkLen(len(a), len(b), name)
		n := bulk(len(a), block)
		var s R
		if n > 0 {
			s = kernel(&a[0], &b[0], n)
		}
		return s + twin(a[n:], b[n:])
	}
}

// checkLen panics unless a dot product's operands have the same length.
func checkLen(a, b int, kernel string) {
	if a != b {
		panic(fmt.Sprintf("kernelcmp: %s of vectors of %d and %d elements", kernel, a, b))
	}
}
