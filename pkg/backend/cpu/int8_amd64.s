//go:build !noasm

#include "textflag.h"

// Int8-activation kernels (AVX512BW + AVX512-VNNI; the 3-bit one also
// AVX512-VBMI). The affine codes are widened to unsigned bytes in element
// order, x is quantized to signed bytes per group in element order
// (quantizeI8AVX512, or quantizeX in Go), and VPDPBUSD adds four u8·s8
// products into each int32 lane, 64 products per instruction. A group's 16
// int32 lanes are converted to float once and scaled by sx_g·s_g into a float
// accumulator (two, for alternate groups), so nothing is reduced across lanes
// until the row ends; the bias term Σ b_g·Σx_g is a float dot product of the
// row's biases with the group sums, 16 groups at a time (masked tail).
//
// Registers: SI codes, DI xq, R10 sx, R8 scales, R9 biases, BX gsum, DX y,
// R13 rows left, R11 groups left, R12 reps (GroupSize/64), CX, AX scratch;
// Z12..Z15 per-kernel constants, Z0/Z1 float accumulators, Z2/Z7 int32
// group sums, Z3/Z4 codes, Z5/Z6 the bias dot.

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

// I8_FINISH adds Z1 and the bias dot in Z5 to Z0, reduces it to the row's
// result, stores it and loops to label row while rows remain.
#define I8_FINISH(row) \
	VADDPS        Z1, Z0, Z0 \
	VADDPS        Z5, Z0, Z0 \
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

// I8_ROW_END adds Σ b_g·gsum_g, reduces Z0 + Z1 to the row's result, stores
// it and loops to label row while rows remain.
#define I8_ROW_END(b16, btail, bdone, row) \
	MOVQ          gsum+40(FP), BX \
	MOVQ          groups+64(FP), R11 \
	VPXORD        Z5, Z5, Z5 \
b16: \
	CMPQ          R11, $16 \
	JLT           btail \
	VMOVUPS       (R9), Z6 \
	VFMADD231PS   (BX), Z6, Z5 \
	ADDQ          $64, R9 \
	ADDQ          $64, BX \
	SUBQ          $16, R11 \
	JMP           b16 \
btail: \
	TESTQ         R11, R11 \
	JZ            bdone \
	MOVQ          R11, CX \
	MOVL          $1, AX \
	SHLL          CX, AX \
	DECL          AX \
	KMOVW         AX, K1 \
	VMOVUPS.Z     (R9), K1, Z6 \
	VMOVUPS.Z     (BX), K1, Z4 \
	VFMADD231PS   Z4, Z6, Z5 \
	LEAQ          (R9)(R11*4), R9 \
bdone: \
	I8_FINISH(row)

// I8_ROWS is the row loop of the one-group kernels: groups two at a time into
// alternate accumulators (I8_STEP is the kernel's 64-code step), an odd last
// one, then the bias dot and the row's result.
#define I8_ROWS(row, pair, single, bias, la, lb, lc, b16, btail, bdone) \
row: \
	I8_ROW_START \
pair: \
	CMPQ R11, $2 \
	JLT  single \
	I8_GROUP(Z2, Z0, la) \
	I8_GROUP(Z7, Z1, lb) \
	SUBQ $2, R11 \
	JMP  pair \
single: \
	TESTQ R11, R11 \
	JZ    bias \
	I8_GROUP(Z2, Z0, lc) \
bias: \
	I8_ROW_END(b16, btail, bdone, row)

DATA i8gather3<>+0(SB)/8, $0x0706050403020100
DATA i8gather3<>+8(SB)/8, $0x0a09080706050403
DATA i8gather3<>+16(SB)/8, $0x0d0c0b0a09080706
DATA i8gather3<>+24(SB)/8, $0x100f0e0d0c0b0a09
DATA i8gather3<>+32(SB)/8, $0x131211100f0e0d0c
DATA i8gather3<>+40(SB)/8, $0x161514131211100f
DATA i8gather3<>+48(SB)/8, $0x1918171615141312
DATA i8gather3<>+56(SB)/8, $0x1c1b1a1918171615
GLOBL i8gather3<>(SB), RODATA|NOPTR, $64

DATA i8ctrl3<>+0(SB)/8, $0x15120f0c09060300
DATA i8ctrl3<>+8(SB)/8, $0x15120f0c09060300
DATA i8ctrl3<>+16(SB)/8, $0x15120f0c09060300
DATA i8ctrl3<>+24(SB)/8, $0x15120f0c09060300
DATA i8ctrl3<>+32(SB)/8, $0x15120f0c09060300
DATA i8ctrl3<>+40(SB)/8, $0x15120f0c09060300
DATA i8ctrl3<>+48(SB)/8, $0x15120f0c09060300
DATA i8ctrl3<>+56(SB)/8, $0x15120f0c09060300
GLOBL i8ctrl3<>(SB), RODATA|NOPTR, $64

// func q4RowsVNNI(packed *byte, xq, sx, scales, biases, gsum, y unsafe.Pointer, rows, groups, reps int)
// 4-bit: the 32 bytes of 64 codes widen to words (VPMOVZXBW); w | w<<4
// masked by 0x0f0f puts the low nibble (element 2i) in byte 2i and the high
// one in byte 2i+1.
#define I8_STEP(acc) \
	VPMOVZXBW  (SI), Z3 \
	VPSLLW     $4, Z3, Z4 \
	VPTERNLOGD $0xa8, Z14, Z4, Z3 \
	VPDPBUSD   (DI), Z3, acc \
	ADDQ       $32, SI \
	ADDQ       $64, DI

TEXT ·q4RowsVNNI(SB), NOSPLIT, $0-80
	I8_PROLOGUE
	MOVL         $0x0f0f0f0f, AX
	VPBROADCASTD AX, Z14

	I8_ROWS(i4row, i4pair, i4single, i4bias, i4a, i4b, i4c, i4b16, i4btail, i4bdone)

#undef I8_STEP

// func q2RowsVNNI(packed *byte, xq, sx, scales, biases, gsum, y unsafe.Pointer, rows, groups, reps int)
// 2-bit: the 16 bytes of 64 codes widen to dwords; b | b<<6 | b<<12 | b<<18
// masked by 0x03030303 puts code k of byte i in byte 4i+k.
#define I8_STEP(acc) \
	VPMOVZXBD  (SI), Z3 \
	VPSLLD     $6, Z3, Z4 \
	VPORD      Z4, Z3, Z3 \
	VPSLLD     $12, Z3, Z4 \
	VPTERNLOGD $0xa8, Z14, Z4, Z3 \
	VPDPBUSD   (DI), Z3, acc \
	ADDQ       $16, SI \
	ADDQ       $64, DI

TEXT ·q2RowsVNNI(SB), NOSPLIT, $0-80
	I8_PROLOGUE
	MOVL         $0x03030303, AX
	VPBROADCASTD AX, Z14

	I8_ROWS(i2row, i2pair, i2single, i2bias, i2a, i2b, i2c, i2b16, i2btail, i2bdone)

#undef I8_STEP

// func q3RowsVNNI(packed *byte, xq, sx, scales, biases, gsum, y unsafe.Pointer, rows, groups, reps int)
// 3-bit: the 24 bytes of 64 codes, loaded as 32 (8 bytes past each block are
// read: the caller keeps the matrix's last row away from this kernel; a
// masked 24-byte load measured 2× slower from memory); VPERMB gives qword m
// the bytes 3m..3m+7, which hold codes 8m..8m+7, and VPMULTISHIFTQB picks
// byte j of it at bit 3j; masked to 3 bits.
#define I8_STEP(acc) \
	VMOVDQU        (SI), Y3 \
	VPERMB         Z3, Z13, Z3 \
	VPMULTISHIFTQB Z3, Z12, Z3 \
	VPANDD         Z14, Z3, Z3 \
	VPDPBUSD       (DI), Z3, acc \
	ADDQ           $24, SI \
	ADDQ           $64, DI

TEXT ·q3RowsVNNI(SB), NOSPLIT, $0-80
	I8_PROLOGUE
	MOVL         $0x07070707, AX
	VPBROADCASTD AX, Z14
	VMOVDQU64    i8gather3<>(SB), Z13
	VMOVDQU64    i8ctrl3<>(SB), Z12

	I8_ROWS(i3row, i3pair, i3single, i3bias, i3a, i3b, i3c, i3b16, i3btail, i3bdone)

#undef I8_STEP

// func q8RowsVNNI(packed *byte, xq, sx, scales, biases, gsum, y unsafe.Pointer, rows, groups, reps int)
// 8-bit: 64 byte codes.
#define I8_STEP(acc) \
	VMOVDQU8 (SI), Z3 \
	VPDPBUSD (DI), Z3, acc \
	ADDQ     $64, SI \
	ADDQ     $64, DI

TEXT ·q8RowsVNNI(SB), NOSPLIT, $0-80
	I8_PROLOGUE

	I8_ROWS(i8row, i8pair, i8single, i8bias, i8a, i8b, i8c, i8b16, i8btail, i8bdone)

#undef I8_STEP

// func quantizeI8AVX512(x *float32, xq *int8, sx, gsum *float32, groups, gs16 int)
// quantizeX for groups of 16·gs16 elements: per group, Σx and max|x| (lane
// by lane, then reduced), sx = max/127, inv = 127/max (0 when max is not
// positive), and xq = x·inv rounded to nearest even (VCVTPS2DQ) and narrowed
// with signed saturation (VPMOVSDB).
TEXT ·quantizeI8AVX512(SB), NOSPLIT, $0-48
	MOVQ         x+0(FP), SI
	MOVQ         xq+8(FP), DI
	MOVQ         sx+16(FP), R8
	MOVQ         gsum+24(FP), R9
	MOVQ         groups+32(FP), R11
	MOVQ         gs16+40(FP), R12
	MOVL         $0x7fffffff, AX
	VPBROADCASTD AX, Z15
	MOVL         $0x42fe0000, AX
	VMOVD        AX, X14

qgroup:
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	MOVQ   SI, BX
	MOVQ   R12, CX

qpass1:
	VMOVUPS (BX), Z2
	VADDPS  Z2, Z1, Z1
	VPANDD  Z15, Z2, Z2
	VMAXPS  Z2, Z0, Z0
	ADDQ    $64, BX
	DECQ    CX
	JNZ     qpass1
	VEXTRACTF64X4 $1, Z1, Y2
	VADDPS        Y2, Y1, Y1
	VEXTRACTF128  $1, Y1, X2
	VADDPS        X2, X1, X1
	VHADDPS       X1, X1, X1
	VHADDPS       X1, X1, X1
	VMOVSS        X1, (R9)
	VEXTRACTF64X4 $1, Z0, Y2
	VMAXPS        Y2, Y0, Y0
	VEXTRACTF128  $1, Y0, X2
	VMAXPS        X2, X0, X0
	VPERMILPS     $0x4e, X0, X2
	VMAXPS        X2, X0, X0
	VPERMILPS     $0xb1, X0, X2
	VMAXPS        X2, X0, X0
	VDIVSS        X14, X0, X3
	VMOVSS        X3, (R8)
	VXORPS        X5, X5, X5
	VUCOMISS      X5, X0
	JBE           qzero
	VDIVSS        X0, X14, X5

qzero:
	VBROADCASTSS X5, Z5
	MOVQ         R12, CX

qpass2:
	VMULPS    (SI), Z5, Z2
	VCVTPS2DQ Z2, Z2
	VPMOVSDB  Z2, (DI)
	ADDQ      $64, SI
	ADDQ      $16, DI
	DECQ      CX
	JNZ       qpass2
	ADDQ      $4, R8
	ADDQ      $4, R9
	DECQ      R11
	JNZ       qgroup
	VZEROUPPER
	RET

DATA i8pairidx<>+0(SB)/8, $0x0000000800000000
DATA i8pairidx<>+8(SB)/8, $0x0000000900000001
DATA i8pairidx<>+16(SB)/8, $0x0000000a00000002
DATA i8pairidx<>+24(SB)/8, $0x0000000b00000003
DATA i8pairidx<>+32(SB)/8, $0x0000000c00000004
DATA i8pairidx<>+40(SB)/8, $0x0000000d00000005
DATA i8pairidx<>+48(SB)/8, $0x0000000e00000006
DATA i8pairidx<>+56(SB)/8, $0x0000000f00000007
GLOBL i8pairidx<>(SB), RODATA|NOPTR, $64

// Q4_PAIR: groups 2k and 2k+1 of a 4-bit row with GroupSize 64 (64 bytes of
// codes) in one register: VPERMD interleaves their dwords (even lanes group
// 2k, odd lanes group 2k+1), the low and high nibbles are masked apart, and
// two VPDPBUSD against x in int8PairLayout order give both groups' int32 sums
// in alternate lanes, scaled by the (sx, s) pairs broadcast as qwords.
#define Q4_PAIR(acc, c, lo, hi, t, facc) \
	VPERMD       (SI), Z13, lo \
	VPSRLW       $4, lo, hi \
	VPANDD       Z14, lo, lo \
	VPANDD       Z14, hi, hi \
	VPXORD       acc, acc, acc \
	VPDPBUSD     (DI), lo, acc \
	VPDPBUSD     64(DI), hi, acc \
	VCVTDQ2PS    acc, acc \
	VPBROADCASTQ (R10), c \
	VPBROADCASTQ (R8), t \
	VMULPS       t, c, c \
	VFMADD231PS  c, acc, facc \
	ADDQ         $64, SI \
	ADDQ         $128, DI \
	ADDQ         $8, R10 \
	ADDQ         $8, R8

#define I8_STEP(acc) \
	VPMOVZXBW  (SI), Z3 \
	VPSLLW     $4, Z3, Z4 \
	VPTERNLOGD $0xa8, Z14, Z4, Z3 \
	VPDPBUSD   (DI), Z3, acc \
	ADDQ       $32, SI \
	ADDQ       $64, DI

// func q4PairsVNNI(packed *byte, xq, sx, scales, biases, gsum, y unsafe.Pointer, rows, groups, reps int)
// 4-bit rows of GroupSize 64 (reps is 1): pairs of groups as Q4_PAIR, four
// groups per iteration into two accumulators; an odd last group as
// q4RowsVNNI (x in element order there).
TEXT ·q4PairsVNNI(SB), NOSPLIT, $0-80
	I8_PROLOGUE
	MOVL         $0x0f0f0f0f, AX
	VPBROADCASTD AX, Z14
	VMOVDQU32    i8pairidx<>(SB), Z13

p4row:
	I8_ROW_START

p4quad:
	CMPQ R11, $4
	JLT  p4pair
	Q4_PAIR(Z2, Z5, Z3, Z4, Z6, Z0)
	Q4_PAIR(Z7, Z8, Z9, Z10, Z11, Z1)
	SUBQ $4, R11
	JMP  p4quad

p4pair:
	CMPQ R11, $2
	JLT  p4single
	Q4_PAIR(Z2, Z5, Z3, Z4, Z6, Z0)
	SUBQ $2, R11

p4single:
	TESTQ R11, R11
	JZ    p4bias
	I8_GROUP(Z2, Z0, p4c)

p4bias:
	I8_ROW_END(p4b16, p4btail, p4bdone, p4row)

#undef I8_STEP

// I8_BIAS_BF16_END is I8_ROW_END with bf16 biases.
#define I8_BIAS_BF16_END(b16, btail, bdone, row) \
	MOVQ          gsum+40(FP), BX \
	MOVQ          groups+64(FP), R11 \
	VPXORD        Z5, Z5, Z5 \
b16: \
	CMPQ          R11, $16 \
	JLT           btail \
	VPMOVZXWD     (R9), Z6 \
	VPSLLD        $16, Z6, Z6 \
	VFMADD231PS   (BX), Z6, Z5 \
	ADDQ          $32, R9 \
	ADDQ          $64, BX \
	SUBQ          $16, R11 \
	JMP           b16 \
btail: \
	TESTQ         R11, R11 \
	JZ            bdone \
	MOVQ          R11, CX \
	MOVL          $1, AX \
	SHLL          CX, AX \
	DECL          AX \
	KMOVW         AX, K1 \
	VPMOVZXWD.Z   (R9), K1, Z6 \
	VPSLLD        $16, Z6, Z6 \
	VMOVUPS.Z     (BX), K1, Z4 \
	VFMADD231PS   Z4, Z6, Z5 \
	LEAQ          (R9)(R11*2), R9 \
bdone: \
	I8_FINISH(row)

DATA i8bf16pair<>+0(SB)/8, $0x0000000000000010
DATA i8bf16pair<>+8(SB)/8, $0x0000000000000010
DATA i8bf16pair<>+16(SB)/8, $0x0000000000000010
DATA i8bf16pair<>+24(SB)/8, $0x0000000000000010
DATA i8bf16pair<>+32(SB)/8, $0x0000000000000010
DATA i8bf16pair<>+40(SB)/8, $0x0000000000000010
DATA i8bf16pair<>+48(SB)/8, $0x0000000000000010
DATA i8bf16pair<>+56(SB)/8, $0x0000000000000010
GLOBL i8bf16pair<>(SB), RODATA|NOPTR, $64

// The bf16 variant of q4PairsVNNI reads the row's bf16 scales and biases in
// place (no float32 copy): a scale pair is one dword, s_{2k} in its low half,
// s_{2k+1} in its high half; broadcast, shifted left by 16 in even lanes
// and masked to the high half, it is the two float32 scales in alternate
// lanes. Z12 holds the shift counts (16, 0, …), Z11 the mask 0xffff0000.
#define Q4_PAIR_BF16(acc, c, lo, hi, t, facc) \
	VPERMD       (SI), Z13, lo \
	VPSRLW       $4, lo, hi \
	VPANDD       Z14, lo, lo \
	VPANDD       Z14, hi, hi \
	VPXORD       acc, acc, acc \
	VPDPBUSD     (DI), lo, acc \
	VPDPBUSD     64(DI), hi, acc \
	VCVTDQ2PS    acc, acc \
	VPBROADCASTD (R8), t \
	VPSLLVD      Z12, t, t \
	VPANDD       Z11, t, t \
	VPBROADCASTQ (R10), c \
	VMULPS       t, c, c \
	VFMADD231PS  c, acc, facc \
	ADDQ         $64, SI \
	ADDQ         $128, DI \
	ADDQ         $8, R10 \
	ADDQ         $4, R8

// func q4PairsVNNIBF16(packed *byte, xq, sx, scales, biases, gsum, y unsafe.Pointer, rows, groups, reps int)
// q4PairsVNNI with bf16 scales and biases.
TEXT ·q4PairsVNNIBF16(SB), NOSPLIT, $0-80
	I8_PROLOGUE
	MOVL         $0x0f0f0f0f, AX
	VPBROADCASTD AX, Z14
	VMOVDQU32    i8pairidx<>(SB), Z13
	VMOVDQU32    i8bf16pair<>(SB), Z12
	MOVL         $0xffff0000, AX
	VPBROADCASTD AX, Z11

b4row:
	I8_ROW_START

b4quad:
	CMPQ R11, $4
	JLT  b4pair
	Q4_PAIR_BF16(Z2, Z5, Z3, Z4, Z6, Z0)
	Q4_PAIR_BF16(Z7, Z8, Z9, Z10, Z16, Z1)
	SUBQ $4, R11
	JMP  b4quad

b4pair:
	CMPQ R11, $2
	JLT  b4single
	Q4_PAIR_BF16(Z2, Z5, Z3, Z4, Z6, Z0)
	SUBQ $2, R11

b4single:
	TESTQ R11, R11
	JZ    b4bias
	VPMOVZXBW      (SI), Z3
	VPSLLW         $4, Z3, Z4
	VPTERNLOGD     $0xa8, Z14, Z4, Z3
	VPXORD         Z2, Z2, Z2
	VPDPBUSD       (DI), Z3, Z2
	VCVTDQ2PS      Z2, Z2
	VMULPS.BCST    (R10), Z2, Z2
	VPBROADCASTW   (R8), Z6
	VPSLLD         $16, Z6, Z6
	VFMADD231PS    Z6, Z2, Z0
	ADDQ           $32, SI
	ADDQ           $2, R8

b4bias:
	I8_BIAS_BF16_END(b4b16, b4btail, b4bdone, b4row)

// Q4_TOK: one token's share of a pair of groups (codes in Z20/Z21, the bf16
// scale pair in Z22): its x at xlo/xhi, its (sx, sx) pair at sx.
#define Q4_TOK(xlo, xhi, sx, acc, c, f) \
	VPXORD       acc, acc, acc \
	VPDPBUSD     xlo, Z20, acc \
	VPDPBUSD     xhi, Z21, acc \
	VCVTDQ2PS    acc, acc \
	VPBROADCASTQ sx, c \
	VMULPS       Z22, c, c \
	VFMADD231PS  c, acc, f

// Q4_TOK1: one token's share of an odd last group (codes in Z20, scale in
// Z22).
#define Q4_TOK1(x, sx, acc, f) \
	VPXORD       acc, acc, acc \
	VPDPBUSD     x, Z20, acc \
	VCVTDQ2PS    acc, acc \
	VMULPS.BCST  sx, acc, acc \
	VFMADD231PS  Z22, acc, f

// func q4Pairs4VNNIBF16(packed *byte, x4, sx4, scales, biases, gsum, y unsafe.Pointer, rows, groups, gstride, ystride int)
// q4PairsVNNIBF16 against four tokens at once: each pair of groups is
// decoded once and meets the four tokens' x. x4 holds, per pair of groups,
// the four tokens' 128 bytes (int8PairLayout) one after another (an odd
// last group: 64 bytes per token), sx4 per pair the four tokens' (sx, sx)
// pairs (an odd last group: one per token); token t's group sums are at
// gsum + t·gstride bytes and its results at y + t·ystride bytes.
TEXT ·q4Pairs4VNNIBF16(SB), NOSPLIT, $0-88
	MOVQ         packed+0(FP), SI
	MOVQ         scales+24(FP), R8
	MOVQ         biases+32(FP), R9
	MOVQ         y+48(FP), DX
	MOVQ         rows+56(FP), R13
	MOVQ         ystride+80(FP), CX
	MOVL         $0x0f0f0f0f, AX
	VPBROADCASTD AX, Z14
	VMOVDQU32    i8pairidx<>(SB), Z13
	VMOVDQU32    i8bf16pair<>(SB), Z12
	MOVL         $0xffff0000, AX
	VPBROADCASTD AX, Z11
	// K1 masks the bias dot's tail of groups mod 16.
	MOVQ         groups+64(FP), AX
	ANDQ         $15, AX
	MOVQ         CX, R11
	MOVQ         AX, CX
	MOVL         $1, AX
	SHLL         CX, AX
	DECL         AX
	KMOVW        AX, K1
	MOVQ         R11, CX

q44row:
	MOVQ   x4+8(FP), DI
	MOVQ   sx4+16(FP), R10
	MOVQ   groups+64(FP), R11
	VPXORD Z0, Z0, Z0
	VPXORD Z1, Z1, Z1
	VPXORD Z2, Z2, Z2
	VPXORD Z3, Z3, Z3

q44pair:
	CMPQ         R11, $2
	JLT          q44single
	VPERMD       (SI), Z13, Z20
	VPSRLW       $4, Z20, Z21
	VPANDD       Z14, Z20, Z20
	VPANDD       Z14, Z21, Z21
	VPBROADCASTD (R8), Z22
	VPSLLVD      Z12, Z22, Z22
	VPANDD       Z11, Z22, Z22
	Q4_TOK(0(DI), 64(DI), 0(R10), Z24, Z28, Z0)
	Q4_TOK(128(DI), 192(DI), 8(R10), Z25, Z29, Z1)
	Q4_TOK(256(DI), 320(DI), 16(R10), Z26, Z30, Z2)
	Q4_TOK(384(DI), 448(DI), 24(R10), Z27, Z31, Z3)
	ADDQ         $64, SI
	ADDQ         $512, DI
	ADDQ         $32, R10
	ADDQ         $4, R8
	SUBQ         $2, R11
	JMP          q44pair

q44single:
	TESTQ        R11, R11
	JZ           q44bias
	VPMOVZXBW    (SI), Z20
	VPSLLW       $4, Z20, Z21
	VPTERNLOGD   $0xa8, Z14, Z21, Z20
	VPBROADCASTW (R8), Z22
	VPSLLD       $16, Z22, Z22
	Q4_TOK1(0(DI), 0(R10), Z24, Z0)
	Q4_TOK1(64(DI), 4(R10), Z25, Z1)
	Q4_TOK1(128(DI), 8(R10), Z26, Z2)
	Q4_TOK1(192(DI), 12(R10), Z27, Z3)
	ADDQ         $32, SI
	ADDQ         $2, R8

q44bias:
	MOVQ gsum+40(FP), BX
	MOVQ gstride+72(FP), AX
	LEAQ (BX)(AX*1), R14
	LEAQ (R14)(AX*1), R15
	LEAQ (R15)(AX*1), R12
	MOVQ groups+64(FP), R11

q44b16:
	CMPQ        R11, $16
	JLT         q44btail
	VPMOVZXWD   (R9), Z22
	VPSLLD      $16, Z22, Z22
	VFMADD231PS (BX), Z22, Z0
	VFMADD231PS (R14), Z22, Z1
	VFMADD231PS (R15), Z22, Z2
	VFMADD231PS (R12), Z22, Z3
	ADDQ        $32, R9
	ADDQ        $64, BX
	ADDQ        $64, R14
	ADDQ        $64, R15
	ADDQ        $64, R12
	SUBQ        $16, R11
	JMP         q44b16

q44btail:
	TESTQ       R11, R11
	JZ          q44bdone
	VPMOVZXWD.Z (R9), K1, Z22
	VPSLLD      $16, Z22, Z22
	VMOVUPS.Z   (BX), K1, Z24
	VFMADD231PS Z24, Z22, Z0
	VMOVUPS.Z   (R14), K1, Z25
	VFMADD231PS Z25, Z22, Z1
	VMOVUPS.Z   (R15), K1, Z26
	VFMADD231PS Z26, Z22, Z2
	VMOVUPS.Z   (R12), K1, Z27
	VFMADD231PS Z27, Z22, Z3
	LEAQ        (R9)(R11*2), R9

q44bdone:
	VEXTRACTF64X4 $1, Z0, Y8
	VADDPS        Y8, Y0, Y0
	VEXTRACTF64X4 $1, Z1, Y8
	VADDPS        Y8, Y1, Y1
	VEXTRACTF64X4 $1, Z2, Y8
	VADDPS        Y8, Y2, Y2
	VEXTRACTF64X4 $1, Z3, Y8
	VADDPS        Y8, Y3, Y3
	VEXTRACTF128  $1, Y0, X8
	VADDPS        X8, X0, X0
	VEXTRACTF128  $1, Y1, X8
	VADDPS        X8, X1, X1
	VEXTRACTF128  $1, Y2, X8
	VADDPS        X8, X2, X2
	VEXTRACTF128  $1, Y3, X8
	VADDPS        X8, X3, X3
	VHADDPS       X1, X0, X0
	VHADDPS       X3, X2, X2
	VHADDPS       X2, X0, X0
	LEAQ          (DX)(CX*2), AX
	VMOVSS        X0, (DX)
	VEXTRACTPS    $1, X0, (DX)(CX*1)
	VEXTRACTPS    $2, X0, (AX)
	VEXTRACTPS    $3, X0, (AX)(CX*1)
	ADDQ          $4, DX
	DECQ          R13
	JNZ           q44row
	VZEROUPPER
	RET

DATA i8quadidx<>+0(SB)/8, $0x0000000400000000
DATA i8quadidx<>+8(SB)/8, $0x0000000c00000008
DATA i8quadidx<>+16(SB)/8, $0x0000000500000001
DATA i8quadidx<>+24(SB)/8, $0x0000000d00000009
DATA i8quadidx<>+32(SB)/8, $0x0000000600000002
DATA i8quadidx<>+40(SB)/8, $0x0000000e0000000a
DATA i8quadidx<>+48(SB)/8, $0x0000000700000003
DATA i8quadidx<>+56(SB)/8, $0x0000000f0000000b
GLOBL i8quadidx<>(SB), RODATA|NOPTR, $64

// Q2_QUAD: groups 4k..4k+3 of a 2-bit row with GroupSize 64 (64 bytes of
// codes) in one register: VPERMD interleaves their dwords (lane L from
// group L mod 4), and the four 2-bit fields of each byte, shifted down and
// masked, meet x in int8QuadLayout order in four VPDPBUSD; the four groups'
// bf16 scales widen to one 128-bit lane repeated, times their sx.
#define Q2_QUAD(acc, c0, c1, c2, c3, t, xt, facc) \
	VPERMD           (SI), Z13, c0 \
	VPSRLW           $2, c0, c1 \
	VPSRLW           $4, c0, c2 \
	VPSRLW           $6, c0, c3 \
	VPANDD           Z14, c0, c0 \
	VPANDD           Z14, c1, c1 \
	VPANDD           Z14, c2, c2 \
	VPANDD           Z14, c3, c3 \
	VPXORD           acc, acc, acc \
	VPDPBUSD         (DI), c0, acc \
	VPDPBUSD         64(DI), c1, acc \
	VPDPBUSD         128(DI), c2, acc \
	VPDPBUSD         192(DI), c3, acc \
	VCVTDQ2PS        acc, acc \
	VPMOVZXWD        (R8), xt \
	VPSLLD           $16, xt, xt \
	VSHUFI32X4       $0, t, t, t \
	VBROADCASTF32X4  (R10), c0 \
	VMULPS           c0, t, t \
	VFMADD231PS      t, acc, facc \
	ADDQ             $64, SI \
	ADDQ             $256, DI \
	ADDQ             $16, R10 \
	ADDQ             $8, R8

// func q2QuadsVNNIBF16(packed *byte, xq, sx, scales, biases, gsum, y unsafe.Pointer, rows, groups, reps int)
// 2-bit rows of GroupSize 64 with bf16 scales and biases read in place:
// quads of groups as Q2_QUAD; the last groups mod 4 as q2RowsVNNI (x in
// element order there).
TEXT ·q2QuadsVNNIBF16(SB), NOSPLIT, $0-80
	I8_PROLOGUE
	MOVL         $0x03030303, AX
	VPBROADCASTD AX, Z14
	VMOVDQU32    i8quadidx<>(SB), Z13

q2qrow:
	I8_ROW_START

q2qquad:
	CMPQ R11, $4
	JLT  q2qsingle
	Q2_QUAD(Z2, Z3, Z4, Z5, Z7, Z6, X6, Z0)
	SUBQ $4, R11
	JMP  q2qquad

q2qsingle:
	TESTQ        R11, R11
	JZ           q2qbias
	VPMOVZXBD    (SI), Z3
	VPSLLD       $6, Z3, Z4
	VPORD        Z4, Z3, Z3
	VPSLLD       $12, Z3, Z4
	VPTERNLOGD   $0xa8, Z14, Z4, Z3
	VPXORD       Z2, Z2, Z2
	VPDPBUSD     (DI), Z3, Z2
	VCVTDQ2PS    Z2, Z2
	VMULPS.BCST  (R10), Z2, Z2
	VPBROADCASTW (R8), Z6
	VPSLLD       $16, Z6, Z6
	VFMADD231PS  Z6, Z2, Z0
	ADDQ         $16, SI
	ADDQ         $64, DI
	ADDQ         $4, R10
	ADDQ         $2, R8
	DECQ         R11
	JMP          q2qsingle

q2qbias:
	I8_BIAS_BF16_END(q2qb16, q2qbtail, q2qbdone, q2qrow)
