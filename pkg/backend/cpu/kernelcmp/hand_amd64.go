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
	v := Variant{Name: "asm", Q4Rows: wrapRows(q4RowsAsm), DotBF16: wrapDot("DotBF16", 64, dotBF16Asm, dotBF16Go)}
	if haveVNNI {
		v.DotU8I8 = wrapDot("DotU8I8", 256, dotU8I8Asm, dotU8I8Go)
	} else {
		v.Note = "no AVX512-VNNI on this CPU"
	}
	variants = append(variants, v)
}
