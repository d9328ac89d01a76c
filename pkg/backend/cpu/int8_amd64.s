//go:build !noasm

#include "textflag.h"

// Int8-activation kernels (AVX512BW + AVX512-VNNI): the affine codes are
// unsigned bytes, x is quantized to signed bytes per group (quantizeX, in
// int8Pos order), and VPDPBUSD adds four u8·s8 products into each int32 lane,
// 64 products per instruction. A group's 16 int32 lanes are converted to
// float once and scaled by sx_g·s_g into a float accumulator (two, for
// alternate groups), so nothing is reduced across lanes until the row ends;
// the bias term Σ b_g·Σx_g is a float dot product of the row's biases with the
// group sums, 16 groups at a time (masked tail).
//
// Registers: SI codes, DI xq, R10 sx, R8 scales, R9 biases, BX gsum, DX y,
// R13 rows left, R11 groups left, R12 reps (GroupSize/64), CX, AX scratch;
// Z15 shift counts, Z14 the code mask, Z0/Z1 float accumulators, Z2/Z7 int32
// group sums, Z3 codes, Z4..Z6 the bias dot.

#define I8_PROLOGUE \
	MOVQ packed+0(FP), SI \
	MOVQ scales+24(FP), R8 \
	MOVQ biases+32(FP), R9 \
	MOVQ y+48(FP), DX \
	MOVQ rows+56(FP), R13 \
	MOVQ reps+72(FP), R12

#define I8_ROW_START \
	MOVQ   xq+8(FP), DI \
	MOVQ   sx+16(FP), R10 \
	MOVQ   groups+64(FP), R11 \
	VPXORD Z0, Z0, Z0 \
	VPXORD Z1, Z1, Z1

// I8_GROUP: one group's integer dot in acc (reps steps of 64 codes), then
// facc += float(acc)·sx_g·s_g lane by lane.
#define I8_GROUP(acc, facc, l) \
	VPXORD           acc, acc, acc \
	MOVQ             R12, CX \
l: \
	I8_STEP(acc) \
	DECQ             CX \
	JNZ              l \
	VCVTDQ2PS        acc, acc \
	VMULPS.BCST      (R10), acc, acc \
	VFMADD231PS.BCST (R8), acc, facc \
	ADDQ             $4, R10 \
	ADDQ             $4, R8

// I8_ROW_END adds Σ b_g·gsum_g, reduces Z0 + Z1 to the row's result, stores
// it and loops to label row while rows remain.
#define I8_ROW_END(b16, btail, bdone, row) \
	MOVQ         gsum+40(FP), BX \
	MOVQ         groups+64(FP), R11 \
	VPXORD       Z4, Z4, Z4 \
b16: \
	CMPQ         R11, $16 \
	JLT          btail \
	VMOVUPS      (R9), Z5 \
	VFMADD231PS  (BX), Z5, Z4 \
	ADDQ         $64, R9 \
	ADDQ         $64, BX \
	SUBQ         $16, R11 \
	JMP          b16 \
btail: \
	TESTQ        R11, R11 \
	JZ           bdone \
	MOVQ         R11, CX \
	MOVL         $1, AX \
	SHLL         CX, AX \
	DECL         AX \
	KMOVW        AX, K1 \
	VMOVUPS.Z    (R9), K1, Z5 \
	VMOVUPS.Z    (BX), K1, Z6 \
	VFMADD231PS  Z6, Z5, Z4 \
	LEAQ         (R9)(R11*4), R9 \
bdone: \
	VADDPS        Z1, Z0, Z0 \
	VADDPS        Z4, Z0, Z0 \
	VEXTRACTF64X4 $1, Z0, Y1 \
	VADDPS        Y1, Y0, Y0 \
	VEXTRACTF128  $1, Y0, X1 \
	VADDPS        X1, X0, X0 \
	VHADDPS       X0, X0, X0 \
	VHADDPS       X0, X0, X0 \
	VMOVSS        X0, (DX) \
	ADDQ          $4, DX \
	DECQ          R13 \
	JNZ           row \
	VZEROUPPER \
	RET

DATA i8q4shift<>+0(SB)/8, $0x0000000000000000
DATA i8q4shift<>+8(SB)/8, $0x0000000000000000
DATA i8q4shift<>+16(SB)/8, $0x0000000000000000
DATA i8q4shift<>+24(SB)/8, $0x0000000000000000
DATA i8q4shift<>+32(SB)/8, $0x0004000400040004
DATA i8q4shift<>+40(SB)/8, $0x0004000400040004
DATA i8q4shift<>+48(SB)/8, $0x0004000400040004
DATA i8q4shift<>+56(SB)/8, $0x0004000400040004
GLOBL i8q4shift<>(SB), RODATA|NOPTR, $64

DATA i8q2shift<>+0(SB)/8, $0x0000000000000000
DATA i8q2shift<>+8(SB)/8, $0x0000000000000000
DATA i8q2shift<>+16(SB)/8, $0x0002000200020002
DATA i8q2shift<>+24(SB)/8, $0x0002000200020002
DATA i8q2shift<>+32(SB)/8, $0x0004000400040004
DATA i8q2shift<>+40(SB)/8, $0x0004000400040004
DATA i8q2shift<>+48(SB)/8, $0x0006000600060006
DATA i8q2shift<>+56(SB)/8, $0x0006000600060006
GLOBL i8q2shift<>(SB), RODATA|NOPTR, $64

// 4-bit: 32 bytes of codes (64 codes) broadcast to both halves; the upper
// half shifted right by 4 (VPSRLVW, per-word counts) and both masked to a
// nibble: bytes 0..31 are the even elements, 32..63 the odd ones.
#define I8_Q4_CONST \
	VMOVDQU16    i8q4shift<>(SB), Z15 \
	MOVL         $0x0f0f0f0f, AX \
	VPBROADCASTD AX, Z14

#define I8_STEP(acc) \
	VBROADCASTI64X4 (SI), Z3 \
	VPSRLVW         Z15, Z3, Z3 \
	VPANDD          Z14, Z3, Z3 \
	VPDPBUSD        (DI), Z3, acc \
	ADDQ            $32, SI \
	ADDQ            $64, DI

// func q4RowsVNNI(packed *byte, xq, sx, scales, biases, gsum, y unsafe.Pointer, rows, groups, reps int)
TEXT ·q4RowsVNNI(SB), NOSPLIT, $0-80
	I8_PROLOGUE
	I8_Q4_CONST

i4row:
	I8_ROW_START

i4pair:
	CMPQ R11, $2
	JLT  i4single
	I8_GROUP(Z2, Z0, i4a)
	I8_GROUP(Z7, Z1, i4b)
	SUBQ $2, R11
	JMP  i4pair

i4single:
	TESTQ R11, R11
	JZ    i4bias
	I8_GROUP(Z2, Z0, i4c)

i4bias:
	I8_ROW_END(i4b16, i4btail, i4bdone, i4row)

// 2-bit: 16 bytes of codes broadcast to the four quarters, quarter k shifted
// right by 2k and masked to two bits: quarter k holds code k of each byte.

#undef I8_STEP
#define I8_STEP(acc) \
	VBROADCASTI32X4 (SI), Z3 \
	VPSRLVW         Z15, Z3, Z3 \
	VPANDD          Z14, Z3, Z3 \
	VPDPBUSD        (DI), Z3, acc \
	ADDQ            $16, SI \
	ADDQ            $64, DI

// func q2RowsVNNI(packed *byte, xq, sx, scales, biases, gsum, y unsafe.Pointer, rows, groups, reps int)
TEXT ·q2RowsVNNI(SB), NOSPLIT, $0-80
	I8_PROLOGUE
	VMOVDQU16    i8q2shift<>(SB), Z15
	MOVL         $0x03030303, AX
	VPBROADCASTD AX, Z14

i2row:
	I8_ROW_START

i2pair:
	CMPQ R11, $2
	JLT  i2single
	I8_GROUP(Z2, Z0, i2a)
	I8_GROUP(Z7, Z1, i2b)
	SUBQ $2, R11
	JMP  i2pair

i2single:
	TESTQ R11, R11
	JZ    i2bias
	I8_GROUP(Z2, Z0, i2c)

i2bias:
	I8_ROW_END(i2b16, i2btail, i2bdone, i2row)

// 8-bit: 64 byte codes in natural order.

#undef I8_STEP
#define I8_STEP(acc) \
	VMOVDQU8 (SI), Z3 \
	VPDPBUSD (DI), Z3, acc \
	ADDQ     $64, SI \
	ADDQ     $64, DI

// func q8RowsVNNI(packed *byte, xq, sx, scales, biases, gsum, y unsafe.Pointer, rows, groups, reps int)
TEXT ·q8RowsVNNI(SB), NOSPLIT, $0-80
	I8_PROLOGUE

i8row:
	I8_ROW_START

i8pair:
	CMPQ R11, $2
	JLT  i8single
	I8_GROUP(Z2, Z0, i8a)
	I8_GROUP(Z7, Z1, i8b)
	SUBQ $2, R11
	JMP  i8pair

i8single:
	TESTQ R11, R11
	JZ    i8bias
	I8_GROUP(Z2, Z0, i8c)

i8bias:
	I8_ROW_END(i8b16, i8btail, i8bdone, i8row)
