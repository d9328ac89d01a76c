//go:build !noasm

package kernelcmp

import "golang.org/x/sys/cpu"

// The hand-written kernels of hand_amd64.s.

//go:noescape
func q4RowsAsm(packed *byte, x, scales, biases, y *float32, rows, groups, reps int)

//go:noescape
func dotBF16Asm(w *uint16, x *float32, n int) float32

//go:noescape
func dotU8I8Asm(a *uint8, b *int8, n int) int32

// haveAVX512 and haveVNNI gate every amd64 variant: all three technologies
// are measured on the same AVX-512 instructions.
var (
	haveAVX512 = cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VL
	haveVNNI   = haveAVX512 && cpu.X86.HasAVX512VNNI
)

func init() {
	if !haveAVX512 {
		return
	}
	v := Variant{Name: "asm", Q4Rows: q4RowsHand, DotBF16: dotBF16Hand}
	if haveVNNI {
		v.DotU8I8 = dotU8I8Hand
	} else {
		v.Note = "no AVX512-VNNI on this CPU"
	}
	variants = append(variants, v)
}

func q4RowsHand(codes []byte, xp, scales, biases, y []float32, gs int) {
	g := q4Shape(codes, xp, scales, biases, y, gs)
	q4RowsAsm(&codes[0], &xp[0], &scales[0], &biases[0], &y[0], len(y), g, gs/64)
}

func dotBF16Hand(w []uint16, x []float32) float32 {
	checkLen(len(w), len(x), "DotBF16")
	n := bulk(len(w), 64)
	var s float32
	if n > 0 {
		s = dotBF16Asm(&w[0], &x[0], n)
	}
	return s + dotBF16Go(w[n:], x[n:])
}

func dotU8I8Hand(a []uint8, b []int8) int32 {
	checkLen(len(a), len(b), "DotU8I8")
	n := bulk(len(a), 256)
	var s int32
	if n > 0 {
		s = dotU8I8Asm(&a[0], &b[0], n)
	}
	return s + dotU8I8Go(a[n:], b[n:])
}
