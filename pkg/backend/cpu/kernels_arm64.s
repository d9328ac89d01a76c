//go:build !noasm

#include "textflag.h"

// NEON kernels for arm64 (ASIMD is part of every arm64 CPU). Go's assembler
// has no mnemonics for the vector float add and the int→float conversion,
// so those two are spelled as WORDs:
//   FADD Vd.4S, Vn.4S, Vm.4S  = 0x4E20D400 | m<<16 | n<<5 | d
//   UCVTF Vd.4S, Vn.4S        = 0x6E21D800 | n<<5 | d

// WIDEN4 spreads the 16 bytes of codes in V(src) over four 4-lane vectors
// (V(a)..V(d): bytes 0–3, 4–7, 8–11, 12–15) and converts them to float32.
#define WIDEN4(src, t1, t2, a, b, c, d, ucvta, ucvtb, ucvtc, ucvtd) \
	VUXTL  src.B8, t1.H8 \
	VUXTL2 src.B16, t2.H8 \
	VUXTL  t1.H4, a.S4 \
	VUXTL2 t1.H8, b.S4 \
	VUXTL  t2.H4, c.S4 \
	VUXTL2 t2.H8, d.S4 \
	WORD   $ucvta \
	WORD   $ucvtb \
	WORD   $ucvtc \
	WORD   $ucvtd

// func q4RowNEON(packed *byte, x, scales *float32, out *[4]float32, groups, steps int)
// One 4-bit affine row: out (four lanes to be summed) = Σ_g s_g·Σ q·x over
// the row's groups, x in natural order (VLD2 splits it into the even
// elements, which meet the low nibbles, and the odd ones). steps is
// GroupSize/32 (16 bytes of codes each). The caller adds Σ_g b_g·Σx_g.
TEXT ·q4RowNEON(SB), NOSPLIT, $0-48
	MOVD  packed+0(FP), R0
	MOVD  x+8(FP), R1
	MOVD  scales+16(FP), R2
	MOVD  out+24(FP), R3
	MOVD  groups+32(FP), R4
	MOVD  steps+40(FP), R5
	VMOVI $15, V31.B16
	VEOR  V28.B16, V28.B16, V28.B16

q4ngroup:
	VEOR V24.B16, V24.B16, V24.B16
	VEOR V25.B16, V25.B16, V25.B16
	VEOR V26.B16, V26.B16, V26.B16
	VEOR V27.B16, V27.B16, V27.B16
	MOVD R5, R6

q4nstep:
	VLD1.P 16(R0), [V0.B16]
	VAND   V31.B16, V0.B16, V1.B16
	VUSHR  $4, V0.B16, V2.B16
	// low nibbles (codes 0, 2, …, 30) → V5..V8; high (1, 3, …, 31) → V9..V12
	WIDEN4(V1, V3, V4, V5, V6, V7, V8, 0x6E21D8A5, 0x6E21D8C6, 0x6E21D8E7, 0x6E21D908)
	WIDEN4(V2, V3, V4, V9, V10, V11, V12, 0x6E21D929, 0x6E21D94A, 0x6E21D96B, 0x6E21D98C)
	VLD2.P 32(R1), [V13.S4, V14.S4]
	VLD2.P 32(R1), [V15.S4, V16.S4]
	VLD2.P 32(R1), [V17.S4, V18.S4]
	VLD2.P 32(R1), [V19.S4, V20.S4]
	VFMLA  V5.S4, V13.S4, V24.S4
	VFMLA  V9.S4, V14.S4, V25.S4
	VFMLA  V6.S4, V15.S4, V26.S4
	VFMLA  V10.S4, V16.S4, V27.S4
	VFMLA  V7.S4, V17.S4, V24.S4
	VFMLA  V11.S4, V18.S4, V25.S4
	VFMLA  V8.S4, V19.S4, V26.S4
	VFMLA  V12.S4, V20.S4, V27.S4
	SUBS   $1, R6, R6
	BNE    q4nstep

	// V24 = V24 + V25 + V26 + V27; V28 += s·V24
	WORD  $0x4E39D718 // FADD V24.4S, V24.4S, V25.4S
	WORD  $0x4E3BD75A // FADD V26.4S, V26.4S, V27.4S
	WORD  $0x4E3AD718 // FADD V24.4S, V24.4S, V26.4S
	MOVWU.P 4(R2), R7
	VDUP  R7, V29.S4
	VFMLA V24.S4, V29.S4, V28.S4
	SUBS  $1, R4, R4
	BNE   q4ngroup

	VST1 [V28.S4], (R3)
	RET
