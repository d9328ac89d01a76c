//go:build !noasm

#include "textflag.h"

// NEON kernels for arm64 (ASIMD is part of every arm64 CPU). Go's assembler
// has no mnemonics for the vector float adds, the int→float conversions and
// the integer dot product, so those are spelled as WORDs, each commented
// with the instruction it encodes:
//   FADD Vd.4S, Vn.4S, Vm.4S   = 0x4E20D400 | m<<16 | n<<5 | d
//   FADDP Vd.4S, Vn.4S, Vm.4S  = 0x6E20D400 | m<<16 | n<<5 | d (pairwise)
//   UCVTF Vd.4S, Vn.4S         = 0x6E21D800 | n<<5 | d
//   SCVTF Vd.4S, Vn.4S         = 0x4E21D800 | n<<5 | d
//   SDOT Vd.4S, Vn.16B, Vm.16B = 0x4E809400 | m<<16 | n<<5 | d (ARMv8.2 dotprod)
// The affine row kernels read x in natural order: VLD2/VLD4 de-interleave
// it so that lane j of each x vector meets code byte j's field.

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

// FROWARGS loads the arguments of the float affine row kernels (packed, x,
// scales, out, groups, steps → R0..R5). Like every macro that names
// arguments, it is defined before the first TEXT so that vet's frame check
// reads the names against the kernels' own signatures.
#define FROWARGS \
	MOVD packed+0(FP), R0 \
	MOVD x+8(FP), R1 \
	MOVD scales+16(FP), R2 \
	MOVD out+24(FP), R3 \
	MOVD groups+32(FP), R4 \
	MOVD steps+40(FP), R5

// FGROUPSTART clears a group's four accumulators V24..V27 and sets the step
// count R6 from R5.
#define FGROUPSTART \
	VEOR V24.B16, V24.B16, V24.B16 \
	VEOR V25.B16, V25.B16, V25.B16 \
	VEOR V26.B16, V26.B16, V26.B16 \
	VEOR V27.B16, V27.B16, V27.B16 \
	MOVD R5, R6

// IROWARGS loads the arguments of the SDOT row kernels (packed, xq, sx,
// scales, out, groups, steps → R0..R6).
#define IROWARGS \
	MOVD packed+0(FP), R0 \
	MOVD xq+8(FP), R1 \
	MOVD sx+16(FP), R2 \
	MOVD scales+24(FP), R3 \
	MOVD out+32(FP), R4 \
	MOVD groups+40(FP), R5 \
	MOVD steps+48(FP), R6

// F4ZERO clears the eight per-group accumulators V16..V23.
#define F4ZERO \
	VEOR V16.B16, V16.B16, V16.B16 \
	VEOR V17.B16, V17.B16, V17.B16 \
	VEOR V18.B16, V18.B16, V18.B16 \
	VEOR V19.B16, V19.B16, V19.B16 \
	VEOR V20.B16, V20.B16, V20.B16 \
	VEOR V21.B16, V21.B16, V21.B16 \
	VEOR V22.B16, V22.B16, V22.B16 \
	VEOR V23.B16, V23.B16, V23.B16

// ROW4MAC multiplies the eight floats in V1, V2 with the next eight of four
// rows (R1, R3, R4, R5) into the rows' accumulator pairs V16/V17 … V22/V23.
#define ROW4MAC \
	VLD1.P 32(R1), [V4.S4, V5.S4] \
	VLD1.P 32(R3), [V6.S4, V7.S4] \
	VLD1.P 32(R4), [V8.S4, V9.S4] \
	VLD1.P 32(R5), [V10.S4, V11.S4] \
	VFMLA  V1.S4, V4.S4, V16.S4 \
	VFMLA  V2.S4, V5.S4, V17.S4 \
	VFMLA  V1.S4, V6.S4, V18.S4 \
	VFMLA  V2.S4, V7.S4, V19.S4 \
	VFMLA  V1.S4, V8.S4, V20.S4 \
	VFMLA  V2.S4, V9.S4, V21.S4 \
	VFMLA  V1.S4, V10.S4, V22.S4 \
	VFMLA  V2.S4, V11.S4, V23.S4

// ROW4SUM stores {Σ V16+V17, Σ V18+V19, Σ V20+V21, Σ V22+V23} at (R6).
#define ROW4SUM \
	WORD $0x4E31D610 /* FADD V16.4S, V16.4S, V17.4S */ \
	WORD $0x4E33D652 /* FADD V18.4S, V18.4S, V19.4S */ \
	WORD $0x4E35D694 /* FADD V20.4S, V20.4S, V21.4S */ \
	WORD $0x4E37D6D6 /* FADD V22.4S, V22.4S, V23.4S */ \
	WORD $0x6E32D610 /* FADDP V16.4S, V16.4S, V18.4S */ \
	WORD $0x6E36D694 /* FADDP V20.4S, V20.4S, V22.4S */ \
	WORD $0x6E34D610 /* FADDP V16.4S, V16.4S, V20.4S */ \
	VST1 [V16.S4], (R6)

// F4PROLOGUE loads the arguments shared by the 4-token float kernels
// (q4Row4NEON, q8Row4NEON): codes
// R0, the four tokens' x at R1, R3, R4, R5 (stride elements apart), scales
// R6, out R7, groups R8, steps R9; the totals V24..V27 start at zero.
#define F4PROLOGUE \
	MOVD packed+0(FP), R0 \
	MOVD x+8(FP), R1 \
	MOVD stride+16(FP), R2 \
	MOVD scales+24(FP), R6 \
	MOVD out+32(FP), R7 \
	MOVD groups+40(FP), R8 \
	MOVD steps+48(FP), R9 \
	LSL  $2, R2, R2 \
	ADD  R1, R2, R3 \
	ADD  R3, R2, R4 \
	ADD  R4, R2, R5 \
	VEOR V24.B16, V24.B16, V24.B16 \
	VEOR V25.B16, V25.B16, V25.B16 \
	VEOR V26.B16, V26.B16, V26.B16 \
	VEOR V27.B16, V27.B16, V27.B16

// func q4RowNEON(packed *byte, x, scales *float32, out *[4]float32, groups, steps int)
// One 4-bit affine row: out (four lanes to be summed) = Σ_g s_g·Σ q·x over
// the row's groups, x in natural order (VLD2 splits it into the even
// elements, which meet the low nibbles, and the odd ones). steps is
// GroupSize/32 (16 bytes of codes each). The caller adds Σ_g b_g·Σx_g.
TEXT ·q4RowNEON(SB), NOSPLIT, $0-48
	FROWARGS
	VMOVI $15, V31.B16
	VEOR  V28.B16, V28.B16, V28.B16

q4ngroup:
	FGROUPSTART

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

// Group epilogue of the float affine row kernels: V24 = V24+V25+V26+V27, then
// V28 += s_g·V24 with s_g the next float32 at (R2).
#define FGROUPEND \
	WORD    $0x4E39D718 /* FADD V24.4S, V24.4S, V25.4S */ \
	WORD    $0x4E3BD75A /* FADD V26.4S, V26.4S, V27.4S */ \
	WORD    $0x4E3AD718 /* FADD V24.4S, V24.4S, V26.4S */ \
	MOVWU.P 4(R2), R7 \
	VDUP    R7, V29.S4 \
	VFMLA   V24.S4, V29.S4, V28.S4

// func q8RowNEON(packed *byte, x, scales *float32, out *[4]float32, groups, steps int)
// One 8-bit affine row: out (four lanes to be summed) = Σ_g s_g·Σ q·x, x in
// natural order; steps is GroupSize/16 (16 codes each). The caller adds
// Σ_g b_g·Σx_g.
TEXT ·q8RowNEON(SB), NOSPLIT, $0-48
	FROWARGS
	VEOR V28.B16, V28.B16, V28.B16

q8ngroup:
	FGROUPSTART

q8nstep:
	VLD1.P 16(R0), [V0.B16]
	// codes 0–3, 4–7, 8–11, 12–15 → V5..V8 (UCVTF V5..V8)
	WIDEN4(V0, V3, V4, V5, V6, V7, V8, 0x6E21D8A5, 0x6E21D8C6, 0x6E21D8E7, 0x6E21D908)
	VLD1.P 64(R1), [V13.S4, V14.S4, V15.S4, V16.S4]
	VFMLA  V5.S4, V13.S4, V24.S4
	VFMLA  V6.S4, V14.S4, V25.S4
	VFMLA  V7.S4, V15.S4, V26.S4
	VFMLA  V8.S4, V16.S4, V27.S4
	SUBS   $1, R6, R6
	BNE    q8nstep

	FGROUPEND
	SUBS $1, R4, R4
	BNE  q8ngroup

	VST1 [V28.S4], (R3)
	RET

// Q2FIELD multiplies field k of the 16 code bytes in V1 (already shifted
// down and masked), whose byte j is element 4j+k of the 64, with the x
// vectors VLD4 left in V(8+k), V(12+k), V(16+k), V(20+k).
#define Q2FIELD(xa, xb, xc, xd) \
	WIDEN4(V1, V2, V3, V4, V5, V6, V7, 0x6E21D884, 0x6E21D8A5, 0x6E21D8C6, 0x6E21D8E7) /* UCVTF V4..V7 */ \
	VFMLA V4.S4, xa.S4, V24.S4 \
	VFMLA V5.S4, xb.S4, V25.S4 \
	VFMLA V6.S4, xc.S4, V26.S4 \
	VFMLA V7.S4, xd.S4, V27.S4

// func q2RowNEON(packed *byte, x, scales *float32, out *[4]float32, groups, steps int)
// One 2-bit affine row: out (four lanes to be summed) = Σ_g s_g·Σ q·x, x in
// natural order; steps is GroupSize/64 (16 bytes of codes, four per byte,
// lowest bits first). VLD4 splits each 16 elements of x by element mod 4, the
// order in which the codes' bit fields hold them. The caller adds Σ_g b_g·Σx_g.
TEXT ·q2RowNEON(SB), NOSPLIT, $0-48
	FROWARGS
	VMOVI $3, V30.B16
	VEOR  V28.B16, V28.B16, V28.B16

q2ngroup:
	FGROUPSTART

q2nstep:
	VLD1.P 16(R0), [V0.B16]
	VLD4.P 64(R1), [V8.S4, V9.S4, V10.S4, V11.S4]
	VLD4.P 64(R1), [V12.S4, V13.S4, V14.S4, V15.S4]
	VLD4.P 64(R1), [V16.S4, V17.S4, V18.S4, V19.S4]
	VLD4.P 64(R1), [V20.S4, V21.S4, V22.S4, V23.S4]
	VAND   V30.B16, V0.B16, V1.B16
	Q2FIELD(V8, V12, V16, V20)
	VUSHR  $2, V0.B16, V1.B16
	VAND   V30.B16, V1.B16, V1.B16
	Q2FIELD(V9, V13, V17, V21)
	VUSHR  $4, V0.B16, V1.B16
	VAND   V30.B16, V1.B16, V1.B16
	Q2FIELD(V10, V14, V18, V22)
	VUSHR  $6, V0.B16, V1.B16
	Q2FIELD(V11, V15, V19, V23)
	SUBS   $1, R6, R6
	BNE    q2nstep

	FGROUPEND
	SUBS $1, R4, R4
	BNE  q2ngroup

	VST1 [V28.S4], (R3)
	RET

// BF16W widens the eight bf16 weights in V(src) to float32: ZIP1/ZIP2 with
// the zero vector V31 put each weight in the high half of a 32-bit lane.
#define BF16W(src, lo, hi) \
	VZIP1 src.H8, V31.H8, lo.H8 \
	VZIP2 src.H8, V31.H8, hi.H8

// func bf16DotNEON(w *uint16, x *float32, out *[4]float32, blocks int)
// out (four lanes to be summed) = Σ bf16(w[i])·x[i] over blocks·16 weights.
TEXT ·bf16DotNEON(SB), NOSPLIT, $0-32
	MOVD w+0(FP), R0
	MOVD x+8(FP), R1
	MOVD out+16(FP), R2
	MOVD blocks+24(FP), R3
	VEOR V31.B16, V31.B16, V31.B16
	VEOR V24.B16, V24.B16, V24.B16
	VEOR V25.B16, V25.B16, V25.B16
	VEOR V26.B16, V26.B16, V26.B16
	VEOR V27.B16, V27.B16, V27.B16

bf16dloop:
	VLD1.P 32(R0), [V0.H8, V1.H8]
	BF16W(V0, V2, V3)
	BF16W(V1, V4, V5)
	VLD1.P 64(R1), [V16.S4, V17.S4, V18.S4, V19.S4]
	VFMLA  V2.S4, V16.S4, V24.S4
	VFMLA  V3.S4, V17.S4, V25.S4
	VFMLA  V4.S4, V18.S4, V26.S4
	VFMLA  V5.S4, V19.S4, V27.S4
	SUBS   $1, R3, R3
	BNE    bf16dloop

	WORD $0x4E39D718 // FADD V24.4S, V24.4S, V25.4S
	WORD $0x4E3BD75A // FADD V26.4S, V26.4S, V27.4S
	WORD $0x4E3AD718 // FADD V24.4S, V24.4S, V26.4S
	VST1 [V24.S4], (R2)
	RET

// func f32DotNEON(a, b *float32, out *[4]float32, blocks int)
// out (four lanes to be summed) = Σ a[i]·b[i] over blocks·16 elements.
TEXT ·f32DotNEON(SB), NOSPLIT, $0-32
	MOVD a+0(FP), R0
	MOVD b+8(FP), R1
	MOVD out+16(FP), R2
	MOVD blocks+24(FP), R3
	VEOR V24.B16, V24.B16, V24.B16
	VEOR V25.B16, V25.B16, V25.B16
	VEOR V26.B16, V26.B16, V26.B16
	VEOR V27.B16, V27.B16, V27.B16

f32dloop:
	VLD1.P 64(R0), [V0.S4, V1.S4, V2.S4, V3.S4]
	VLD1.P 64(R1), [V16.S4, V17.S4, V18.S4, V19.S4]
	VFMLA  V0.S4, V16.S4, V24.S4
	VFMLA  V1.S4, V17.S4, V25.S4
	VFMLA  V2.S4, V18.S4, V26.S4
	VFMLA  V3.S4, V19.S4, V27.S4
	SUBS   $1, R3, R3
	BNE    f32dloop

	WORD $0x4E39D718 // FADD V24.4S, V24.4S, V25.4S
	WORD $0x4E3BD75A // FADD V26.4S, V26.4S, V27.4S
	WORD $0x4E3AD718 // FADD V24.4S, V24.4S, V26.4S
	VST1 [V24.S4], (R2)
	RET

// func bf16Row4NEON(w *uint16, x *float32, stride int, out *[4]float32, blocks int)
// out[t] = Σ bf16(w[i])·x[t·stride+i] for four tokens over blocks·8
// weights: each widened weight vector meets all four tokens.
TEXT ·bf16Row4NEON(SB), NOSPLIT, $0-40
	MOVD w+0(FP), R0
	MOVD x+8(FP), R1
	MOVD stride+16(FP), R2
	MOVD out+24(FP), R6
	MOVD blocks+32(FP), R7
	LSL  $2, R2, R2
	ADD  R1, R2, R3
	ADD  R3, R2, R4
	ADD  R4, R2, R5
	VEOR V31.B16, V31.B16, V31.B16
	F4ZERO

bf16r4loop:
	VLD1.P 16(R0), [V0.H8]
	BF16W(V0, V1, V2)
	ROW4MAC
	SUBS   $1, R7, R7
	BNE    bf16r4loop

	ROW4SUM
	RET

// Group epilogue of the int8-activation kernels: V24 = V24+V25 (int32
// lanes), converted to float, then V28 += (sx_g·s_g)·V24 with sx_g at (R2)
// and s_g at (R3).
#define IGROUPEND \
	VADD  V25.S4, V24.S4, V24.S4 \
	WORD  $0x4E21DB18 /* SCVTF V24.4S, V24.4S */ \
	FMOVS (R2), F5 \
	FMOVS (R3), F6 \
	ADD   $4, R2 \
	ADD   $4, R3 \
	FMULS F5, F6, F6 \
	VDUP  V6.S[0], V29.S4 \
	VFMLA V24.S4, V29.S4, V28.S4

// func q4RowSDOT(packed *byte, xq *int8, sx, scales *float32, out *[4]float32, groups, steps int)
// One 4-bit affine row against int8 activations (quantizeX, natural order):
// out (four lanes to be summed) = Σ_g s_g·sx_g·Σ q·xq, steps = GroupSize/32.
// The codes 0..15 are also valid signed bytes, so the signed SDOT computes
// the unsigned×signed products exactly (no USDOT, no offset). VLD2 splits
// xq into the elements meeting low and high nibbles. The caller adds
// Σ_g b_g·Σx_g.
TEXT ·q4RowSDOT(SB), NOSPLIT, $0-56
	IROWARGS
	VMOVI $15, V31.B16
	VEOR  V28.B16, V28.B16, V28.B16

q4sgroup:
	VEOR V24.B16, V24.B16, V24.B16
	VEOR V25.B16, V25.B16, V25.B16
	MOVD R6, R7

q4sstep:
	VLD1.P 16(R0), [V0.B16]
	VAND   V31.B16, V0.B16, V1.B16
	VUSHR  $4, V0.B16, V2.B16
	VLD2.P 32(R1), [V3.B16, V4.B16]
	WORD   $0x4E839438 // SDOT V24.4S, V1.16B, V3.16B
	WORD   $0x4E849459 // SDOT V25.4S, V2.16B, V4.16B
	SUBS   $1, R7, R7
	BNE    q4sstep

	IGROUPEND
	SUBS $1, R5, R5
	BNE  q4sgroup

	VST1 [V28.S4], (R4)
	RET

// func q2RowSDOT(packed *byte, xq *int8, sx, scales *float32, out *[4]float32, groups, steps int)
// q4RowSDOT for 2-bit codes (0..3, signed-safe too), steps = GroupSize/64:
// VLD4 splits 64 bytes of xq by element mod 4, the field order of the codes.
TEXT ·q2RowSDOT(SB), NOSPLIT, $0-56
	IROWARGS
	VMOVI $3, V31.B16
	VEOR  V28.B16, V28.B16, V28.B16

q2sgroup:
	VEOR V24.B16, V24.B16, V24.B16
	VEOR V25.B16, V25.B16, V25.B16
	MOVD R6, R7

q2sstep:
	VLD1.P 16(R0), [V0.B16]
	VLD4.P 64(R1), [V3.B16, V4.B16, V5.B16, V6.B16]
	VAND   V31.B16, V0.B16, V1.B16
	VUSHR  $2, V0.B16, V2.B16
	VAND   V31.B16, V2.B16, V2.B16
	WORD   $0x4E839438 // SDOT V24.4S, V1.16B, V3.16B
	WORD   $0x4E849459 // SDOT V25.4S, V2.16B, V4.16B
	VUSHR  $4, V0.B16, V1.B16
	VAND   V31.B16, V1.B16, V1.B16
	VUSHR  $6, V0.B16, V2.B16
	WORD   $0x4E859438 // SDOT V24.4S, V1.16B, V5.16B
	WORD   $0x4E869459 // SDOT V25.4S, V2.16B, V6.16B
	SUBS   $1, R7, R7
	BNE    q2sstep

	IGROUPEND
	SUBS $1, R5, R5
	BNE  q2sgroup

	VST1 [V28.S4], (R4)
	RET

// func q8RowSDOT(packed *byte, xq *int8, sx, scales *float32, out *[4]float32, groups, steps int)
// q4RowSDOT for 8-bit codes, steps = GroupSize/16. Codes 0..255 are not
// signed bytes, so the kernel flips their top bit (q−128, a signed byte) and
// adds back 128·Σxq, which a second SDOT against a vector of ones sums in
// the same pass: Σ q·xq = Σ (q−128)·xq + 128·Σ xq. (USDOT, the mixed-sign
// dot product, needs FEAT_I8MM, which the M1 lacks.)
TEXT ·q8RowSDOT(SB), NOSPLIT, $0-56
	IROWARGS
	VMOVI $128, V31.B16
	VMOVI $1, V30.B16
	VEOR  V28.B16, V28.B16, V28.B16

q8sgroup:
	VEOR V24.B16, V24.B16, V24.B16
	VEOR V25.B16, V25.B16, V25.B16
	MOVD R6, R7

q8sstep:
	VLD1.P 16(R0), [V0.B16]
	VLD1.P 16(R1), [V3.B16]
	VEOR   V31.B16, V0.B16, V1.B16
	WORD   $0x4E839438 // SDOT V24.4S, V1.16B, V3.16B
	WORD   $0x4E8397D9 // SDOT V25.4S, V30.16B, V3.16B
	SUBS   $1, R7, R7
	BNE    q8sstep

	VSHL $7, V25.S4, V25.S4
	IGROUPEND
	SUBS $1, R5, R5
	BNE  q8sgroup

	VST1 [V28.S4], (R4)
	RET

// Epilogue of the 4-token float kernels, per group: token t's two
// accumulators V(16+2t), V(17+2t) are added and V(24+t) += s_g·their sum,
// s_g the next float32 at (R6).
#define F4GROUPEND \
	WORD    $0x4E31D610 /* FADD V16.4S, V16.4S, V17.4S */ \
	WORD    $0x4E33D652 /* FADD V18.4S, V18.4S, V19.4S */ \
	WORD    $0x4E35D694 /* FADD V20.4S, V20.4S, V21.4S */ \
	WORD    $0x4E37D6D6 /* FADD V22.4S, V22.4S, V23.4S */ \
	MOVWU.P 4(R6), R11 \
	VDUP    R11, V29.S4 \
	VFMLA   V16.S4, V29.S4, V24.S4 \
	VFMLA   V18.S4, V29.S4, V25.S4 \
	VFMLA   V20.S4, V29.S4, V26.S4 \
	VFMLA   V22.S4, V29.S4, V27.S4

// F4EPILOGUE reduces the totals to out = {Σ V24, Σ V25, Σ V26, Σ V27}.
#define F4EPILOGUE \
	WORD $0x6E39D718 /* FADDP V24.4S, V24.4S, V25.4S */ \
	WORD $0x6E3BD75A /* FADDP V26.4S, V26.4S, V27.4S */ \
	WORD $0x6E3AD718 /* FADDP V24.4S, V24.4S, V26.4S */ \
	VST1 [V24.S4], (R7)

// Q4TOKEN multiplies the 32 widened codes (even elements V8..V11, odd
// V12..V15) with the next 32 x of one token (VLD2 splits them the same way)
// into that token's accumulators.
#define Q4TOKEN(xr, acca, accb) \
	VLD2.P 32(xr), [V0.S4, V1.S4] \
	VLD2.P 32(xr), [V2.S4, V3.S4] \
	VLD2.P 32(xr), [V4.S4, V5.S4] \
	VLD2.P 32(xr), [V6.S4, V7.S4] \
	VFMLA  V8.S4, V0.S4, acca.S4 \
	VFMLA  V12.S4, V1.S4, accb.S4 \
	VFMLA  V9.S4, V2.S4, acca.S4 \
	VFMLA  V13.S4, V3.S4, accb.S4 \
	VFMLA  V10.S4, V4.S4, acca.S4 \
	VFMLA  V14.S4, V5.S4, accb.S4 \
	VFMLA  V11.S4, V6.S4, acca.S4 \
	VFMLA  V15.S4, V7.S4, accb.S4

// func q4Row4NEON(packed *byte, x *float32, stride int, scales *float32, out *[4]float32, groups, steps int)
// q4RowNEON for four tokens (prefill): out[t] = Σ_g s_g·Σ q·x[t·stride:],
// each 16 bytes of codes widened once for the four; steps = GroupSize/32.
// The caller adds Σ_g b_g·Σx_g per token.
TEXT ·q4Row4NEON(SB), NOSPLIT, $0-56
	F4PROLOGUE
	VMOVI $15, V31.B16

q4r4group:
	F4ZERO
	MOVD R9, R10

q4r4step:
	VLD1.P 16(R0), [V0.B16]
	VAND   V31.B16, V0.B16, V1.B16
	VUSHR  $4, V0.B16, V2.B16
	WIDEN4(V1, V3, V4, V8, V9, V10, V11, 0x6E21D908, 0x6E21D929, 0x6E21D94A, 0x6E21D96B)
	WIDEN4(V2, V3, V4, V12, V13, V14, V15, 0x6E21D98C, 0x6E21D9AD, 0x6E21D9CE, 0x6E21D9EF)
	Q4TOKEN(R1, V16, V17)
	Q4TOKEN(R3, V18, V19)
	Q4TOKEN(R4, V20, V21)
	Q4TOKEN(R5, V22, V23)
	SUBS   $1, R10, R10
	BNE    q4r4step

	F4GROUPEND
	SUBS $1, R8, R8
	BNE  q4r4group

	F4EPILOGUE
	RET

// Q8TOKEN multiplies the 16 widened codes V8..V11 with the next 16 x of
// one token into that token's accumulators.
#define Q8TOKEN(xr, acca, accb) \
	VLD1.P 64(xr), [V0.S4, V1.S4, V2.S4, V3.S4] \
	VFMLA  V8.S4, V0.S4, acca.S4 \
	VFMLA  V9.S4, V1.S4, accb.S4 \
	VFMLA  V10.S4, V2.S4, acca.S4 \
	VFMLA  V11.S4, V3.S4, accb.S4

// func q8Row4NEON(packed *byte, x *float32, stride int, scales *float32, out *[4]float32, groups, steps int)
// q8RowNEON for four tokens; steps = GroupSize/16.
TEXT ·q8Row4NEON(SB), NOSPLIT, $0-56
	F4PROLOGUE

q8r4group:
	F4ZERO
	MOVD R9, R10

q8r4step:
	VLD1.P 16(R0), [V4.B16]
	// UCVTF V8..V11
	WIDEN4(V4, V5, V6, V8, V9, V10, V11, 0x6E21D908, 0x6E21D929, 0x6E21D94A, 0x6E21D96B)
	Q8TOKEN(R1, V16, V17)
	Q8TOKEN(R3, V18, V19)
	Q8TOKEN(R4, V20, V21)
	Q8TOKEN(R5, V22, V23)
	SUBS   $1, R10, R10
	BNE    q8r4step

	F4GROUPEND
	SUBS $1, R8, R8
	BNE  q8r4group

	F4EPILOGUE
	RET

// func dotRows4NEON(q, k *float32, kstride int, out *[4]float32, blocks int)
// out[j] = Σ q[i]·k[j·kstride/4 + i] for four rows j (kstride in bytes) over
// blocks·8 elements: each q vector meets all four rows.
TEXT ·dotRows4NEON(SB), NOSPLIT, $0-40
	MOVD q+0(FP), R0
	MOVD k+8(FP), R1
	MOVD kstride+16(FP), R2
	MOVD out+24(FP), R6
	MOVD blocks+32(FP), R7
	ADD  R1, R2, R3
	ADD  R3, R2, R4
	ADD  R4, R2, R5
	F4ZERO

dr4loop:
	VLD1.P 32(R0), [V1.S4, V2.S4]
	ROW4MAC
	SUBS   $1, R7, R7
	BNE    dr4loop

	ROW4SUM
	RET

// func weightedSum16NEON(o, p, v *float32, vstride, n int)
// Adds Σₛ p[s]·v[s·vstride/4 : +16] (vstride in bytes, n ≥ 1 rows) to the 16
// floats at o, which stay in registers; one multiply-add per element and
// row, in row order.
TEXT ·weightedSum16NEON(SB), NOSPLIT, $0-40
	MOVD o+0(FP), R0
	MOVD p+8(FP), R1
	MOVD v+16(FP), R2
	MOVD vstride+24(FP), R3
	MOVD n+32(FP), R4
	VLD1 (R0), [V24.S4, V25.S4, V26.S4, V27.S4]

ws16loop:
	MOVWU.P 4(R1), R5
	VDUP    R5, V29.S4
	VLD1    (R2), [V0.S4, V1.S4, V2.S4, V3.S4]
	ADD     R3, R2, R2
	VFMLA   V0.S4, V29.S4, V24.S4
	VFMLA   V1.S4, V29.S4, V25.S4
	VFMLA   V2.S4, V29.S4, V26.S4
	VFMLA   V3.S4, V29.S4, V27.S4
	SUBS    $1, R4, R4
	BNE     ws16loop

	VST1 [V24.S4, V25.S4, V26.S4, V27.S4], (R0)
	RET

// func axpyNEON(y, x *float32, a float32, blocks int)
// y[i] += a·x[i] over blocks·16 elements.
TEXT ·axpyNEON(SB), NOSPLIT, $0-32
	MOVD  y+0(FP), R0
	MOVD  x+8(FP), R1
	MOVWU a+16(FP), R5
	MOVD  blocks+24(FP), R4
	VDUP  R5, V29.S4

axpyloop:
	VLD1   (R0), [V0.S4, V1.S4, V2.S4, V3.S4]
	VLD1.P 64(R1), [V4.S4, V5.S4, V6.S4, V7.S4]
	VFMLA  V4.S4, V29.S4, V0.S4
	VFMLA  V5.S4, V29.S4, V1.S4
	VFMLA  V6.S4, V29.S4, V2.S4
	VFMLA  V7.S4, V29.S4, V3.S4
	VST1.P [V0.S4, V1.S4, V2.S4, V3.S4], 64(R0)
	SUBS   $1, R4, R4
	BNE    axpyloop
	RET
