//go:build !noasm

package kernelcmp

import "golang.org/x/sys/cpu"

// The hand-written kernels of hand_amd64.s.

//go:noescape
func q4RowsAsm(packed *byte, x, scales, biases, y *float32, rows, groups, reps int)

//go:noescape
func q4RowAsmY(packed *byte, xperm, scales, biases, gsum *float32, groups, gs int) float32

//go:noescape
func dotBF16Asm(w *uint16, x *float32, n int) float32

//go:noescape
func dotU8I8Asm(a *uint8, b *int8, n int) int32

// haveAVX512 and haveVNNI gate every amd64 variant: all three technologies
// are measured on the same AVX-512 instructions.
var (
	haveAVX512 = cpu.X86.HasAVX512F && cpu.X86.HasAVX512BW && cpu.X86.HasAVX512VL
	haveVNNI   = haveAVX512 && cpu.X86.HasAVX512VNNI
	haveAVX2   = cpu.X86.HasAVX2 && cpu.X86.HasFMA
)

func init() {
	if !haveAVX512 {
		if haveAVX2 {
			variants = append(variants, Variant{Name: "asm", Q4RowAVX2: q4RowHandY, Note: "AVX2 only"})
		}
		return
	}
	v := Variant{Name: "asm", Q4RowAVX2: q4RowHandY, Q4Rows: wrapRows(q4RowsAsm), DotBF16: wrapDot("DotBF16", 64, dotBF16Asm, dotBF16Go)}
	if haveVNNI {
		v.DotU8I8 = wrapDot("DotU8I8", 256, dotU8I8Asm, dotU8I8Go)
	} else {
		v.Note = "no AVX512-VNNI on this CPU"
	}
	variants = append(variants, v)
}

// q4RowHandY runs the AVX2 row kernel.
func q4RowHandY(codes []byte, xp, scales, biases, gsum []float32, gs int) float32 {
	g := q4RowShape(codes, xp, scales, biases, gsum, gs)
	return q4RowAsmY(&codes[0], &xp[0], &scales[0], &biases[0], &gsum[0], g, gs)
}
