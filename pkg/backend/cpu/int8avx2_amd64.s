//go:build !noasm

#include "textflag.h"

// Int8-activation kernels for AVX2 (CPUs without AVX-512 VNNI): the row walk
// of int8_amd64.s with 256-bit registers. 4-bit: VPMADDUBSW multiplies the
// unsigned codes with the signed x in pairs into int16 (at most 2·15·127, no
// saturation) and VPMADDWD by ones widens to int32; 8-bit codes (up to 255,
// whose pair sums VPMADDUBSW would saturate) and x are widened to int16
// first and VPMADDWD multiplies them. Per group the int32 lanes are
// converted once and scaled by sx_g·s_g; float32 scales and biases.
//
// Registers as in int8_amd64.s: SI codes, DI xq, R10 sx, R8 scales, R9
// biases, BX gsum, DX y, R13 rows left, R11 groups left, R12 steps per group.

#define A8_PROLOGUE \
	MOVQ packed+0(FP), SI \
	MOVQ scales+24(FP), R8 \
	MOVQ biases+32(FP), R9 \
	MOVQ y+48(FP), DX \
	MOVQ rows+56(FP), R13 \
	MOVQ reps+72(FP), R12

#define A8_ROW(step, row, group, st, b8, btail, tail1, bdone) \
row: \
	MOVQ         xq+8(FP), DI \
	MOVQ         sx+16(FP), R10 \
	MOVQ         groups+64(FP), R11 \
	VXORPS       Y0, Y0, Y0 \
group: \
	VPXOR        Y2, Y2, Y2 \
	MOVQ         R12, CX \
st: \
	step \
	DECQ         CX \
	JNZ          st \
	VCVTDQ2PS    Y2, Y2 \
	VBROADCASTSS (R10), Y5 \
	VMULPS       Y5, Y2, Y2 \
	VBROADCASTSS (R8), Y5 \
	VFMADD231PS  Y5, Y2, Y0 \
	ADDQ         $4, R10 \
	ADDQ         $4, R8 \
	DECQ         R11 \
	JNZ          group \
	MOVQ         gsum+40(FP), BX \
	MOVQ         groups+64(FP), R11 \
b8: \
	CMPQ         R11, $8 \
	JLT          btail \
	VMOVUPS      (R9), Y5 \
	VFMADD231PS  (BX), Y5, Y0 \
	ADDQ         $32, R9 \
	ADDQ         $32, BX \
	SUBQ         $8, R11 \
	JMP          b8 \
btail: \
	VEXTRACTF128 $1, Y0, X1 \
	VADDPS       X1, X0, X0 \
	VHADDPS      X0, X0, X0 \
	VHADDPS      X0, X0, X0 \
tail1: \
	TESTQ        R11, R11 \
	JZ           bdone \
	VMOVSS       (R9), X5 \
	VFMADD231SS  (BX), X5, X0 \
	ADDQ         $4, R9 \
	ADDQ         $4, BX \
	DECQ         R11 \
	JMP          tail1 \
bdone: \
	VMOVSS       X0, (DX) \
	ADDQ         $4, DX \
	DECQ         R13 \
	JNZ          row \
	VZEROUPPER \
	RET

#define Q4_A2_STEP \
	VPMOVZXBW  (SI), Y3 \
	VPSLLW     $4, Y3, Y4 \
	VPOR       Y4, Y3, Y3 \
	VPAND      Y14, Y3, Y3 \
	VPMADDUBSW (DI), Y3, Y3 \
	VPMADDWD   Y15, Y3, Y3 \
	VPADDD     Y3, Y2, Y2 \
	ADDQ       $16, SI \
	ADDQ       $32, DI

#define Q8_A2_STEP \
	VPMOVZXBW (SI), Y3 \
	VPMOVSXBW (DI), Y4 \
	VPMADDWD  Y4, Y3, Y3 \
	VPADDD    Y3, Y2, Y2 \
	ADDQ      $16, SI \
	ADDQ      $16, DI

// func q4RowsI8AVX2(packed *byte, xq, sx, scales, biases, gsum, y unsafe.Pointer, rows, groups, reps int)
// reps is GroupSize/32 (16 bytes of codes each).
TEXT ·q4RowsI8AVX2(SB), NOSPLIT, $0-80
	A8_PROLOGUE
	MOVL         $0x0f0f0f0f, AX
	MOVD         AX, X14
	VPBROADCASTD X14, Y14
	MOVL         $0x00010001, AX
	MOVD         AX, X15
	VPBROADCASTD X15, Y15
	A8_ROW(Q4_A2_STEP, a4row, a4group, a4step, a4b8, a4btail, a4tail1, a4bdone)

// func q8RowsI8AVX2(packed *byte, xq, sx, scales, biases, gsum, y unsafe.Pointer, rows, groups, reps int)
// reps is GroupSize/16.
TEXT ·q8RowsI8AVX2(SB), NOSPLIT, $0-80
	A8_PROLOGUE
	A8_ROW(Q8_A2_STEP, a8row, a8group, a8step, a8b8, a8btail, a8tail1, a8bdone)
