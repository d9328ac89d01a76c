//go:build !noasm

#include "textflag.h"

// Hand-written AVX-512 kernels: copies of pkg/backend/cpu's q4RowsAVX512
// (kernels512_amd64.s, its macros expanded), dotBF16AVX512, and the integer
// dot step of int8_amd64.s reduced to a plain u8·s8 dot. Keep them in step
// with production when those change, or the measurement is of old code.

// Z0..Z3 (four accumulators) to a float32 in X0 (clobbers Z1, Z2).
#define HSUM4_Z0 \
	VADDPS        Z1, Z0, Z0 \
	VADDPS        Z3, Z2, Z2 \
	VADDPS        Z2, Z0, Z0 \
	VEXTRACTF64X4 $1, Z0, Y1 \
	VADDPS        Y1, Y0, Y0 \
	VEXTRACTF128  $1, Y0, X1 \
	VADDPS        X1, X0, X0 \
	VHADDPS       X0, X0, X0 \
	VHADDPS       X0, X0, X0

#define ZERO4 \
	VPXORD Z0, Z0, Z0 \
	VPXORD Z1, Z1, Z1 \
	VPXORD Z2, Z2, Z2 \
	VPXORD Z3, Z3, Z3

// func q4RowsAsm(packed *byte, x, scales, biases, y *float32, rows, groups, reps int)
// reps is GroupSize/64.
TEXT ·q4RowsAsm(SB), NOSPLIT, $0-64
	MOVQ         packed+0(FP), SI
	MOVQ         scales+16(FP), R8
	MOVQ         biases+24(FP), R9
	MOVQ         y+32(FP), DX
	MOVQ         rows+40(FP), R13
	MOVQ         reps+56(FP), R12
	VMOVUPS      iota16<>(SB), Z15
	VMOVDQU32    shift4<>(SB), Z10
	VPBROADCASTD eight<>(SB), Z14
	VPADDD       Z14, Z10, Z11
	VPADDD       Z14, Z11, Z12
	VPADDD       Z14, Z12, Z13

q4row:
	MOVQ   x+8(FP), DI
	MOVQ   groups+48(FP), R11
	ZERO4

q4group:
	VBROADCASTSS (R8), Z4
	VBROADCASTSS (R9), Z5
	VFMADD213PS  Z5, Z15, Z4
	ADDQ         $4, R8
	ADDQ         $4, R9
	MOVQ         R12, CX

q4step:
	VBROADCASTI64X4 (SI), Z5
	VPSRLVD         Z10, Z5, Z6
	VPSRLVD         Z11, Z5, Z7
	VPSRLVD         Z12, Z5, Z8
	VPSRLVD         Z13, Z5, Z9
	VPERMPS         Z4, Z6, Z6
	VPERMPS         Z4, Z7, Z7
	VPERMPS         Z4, Z8, Z8
	VPERMPS         Z4, Z9, Z9
	VFMADD231PS     (DI), Z6, Z0
	VFMADD231PS     64(DI), Z7, Z1
	VFMADD231PS     128(DI), Z8, Z2
	VFMADD231PS     192(DI), Z9, Z3
	ADDQ            $32, SI
	ADDQ            $256, DI
	DECQ            CX
	JNZ             q4step
	DECQ            R11
	JNZ             q4group
	HSUM4_Z0
	VMOVSS          X0, (DX)
	ADDQ            $4, DX
	DECQ            R13
	JNZ             q4row
	VZEROUPPER
	RET

// func q4RowAsmY(packed *byte, xperm, scales, biases, gsum *float32, groups, gs int) float32
// Copy of pkg/backend/cpu's q4RowAVX2 (kernels_amd64.s, macros expanded):
// VPMOVZXBD widens 8 bytes, AND/shift split the nibbles, VCVTDQ2PS converts,
// one FMA per 8 weights; Σ s_g·(Σ q·x) + b_g·gsum_g. gs is a multiple of 32.
TEXT ·q4RowAsmY(SB), NOSPLIT, $0-60
	MOVQ         packed+0(FP), SI
	MOVQ         xperm+8(FP), DI
	MOVQ         scales+16(FP), R8
	MOVQ         biases+24(FP), R9
	MOVQ         gsum+32(FP), R10
	MOVQ         groups+40(FP), R11
	MOVQ         gs+48(FP), R12
	SHRQ         $5, R12
	VXORPS       Y0, Y0, Y0
	VXORPS       X7, X7, X7
	MOVL         $15, AX
	VMOVD        AX, X15
	VPBROADCASTD X15, Y15

q4ygroup:
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	MOVQ   R12, CX

q4ystep:
	VPMOVZXBD    (SI), Y3
	VPMOVZXBD    8(SI), Y11
	VPAND        Y15, Y3, Y4
	VPSRLD       $4, Y3, Y5
	VPAND        Y15, Y11, Y12
	VPSRLD       $4, Y11, Y13
	VCVTDQ2PS    Y4, Y4
	VCVTDQ2PS    Y5, Y5
	VCVTDQ2PS    Y12, Y12
	VCVTDQ2PS    Y13, Y13
	VFMADD231PS  (DI), Y4, Y1
	VFMADD231PS  32(DI), Y5, Y2
	VFMADD231PS  64(DI), Y12, Y9
	VFMADD231PS  96(DI), Y13, Y10
	ADDQ         $16, SI
	ADDQ         $128, DI
	DECQ         CX
	JNZ          q4ystep
	VADDPS       Y2, Y1, Y1
	VADDPS       Y10, Y9, Y9
	VADDPS       Y9, Y1, Y1
	VBROADCASTSS (R8), Y6
	VFMADD231PS  Y1, Y6, Y0
	VMOVSS       (R9), X8
	VFMADD231SS  (R10), X8, X7
	ADDQ         $4, R8
	ADDQ         $4, R9
	ADDQ         $4, R10
	DECQ         R11
	JNZ          q4ygroup
	VEXTRACTF128 $1, Y0, X1
	VADDPS       X1, X0, X0
	VHADDPS      X0, X0, X0
	VHADDPS      X0, X0, X0
	VADDSS       X7, X0, X0
	VMOVSS       X0, ret+56(FP)
	VZEROUPPER
	RET

// func dotBF16Asm(w *uint16, x *float32, n int) float32
// n is a multiple of 64.
TEXT ·dotBF16Asm(SB), NOSPLIT, $0-28
	MOVQ   w+0(FP), SI
	MOVQ   x+8(FP), DI
	MOVQ   n+16(FP), CX
	ZERO4
	SHRQ   $6, CX
	JZ     bf16done

bf16loop:
	VPMOVZXWD   (SI), Z4
	VPMOVZXWD   32(SI), Z5
	VPMOVZXWD   64(SI), Z6
	VPMOVZXWD   96(SI), Z7
	VPSLLD      $16, Z4, Z4
	VPSLLD      $16, Z5, Z5
	VPSLLD      $16, Z6, Z6
	VPSLLD      $16, Z7, Z7
	VFMADD231PS (DI), Z4, Z0
	VFMADD231PS 64(DI), Z5, Z1
	VFMADD231PS 128(DI), Z6, Z2
	VFMADD231PS 192(DI), Z7, Z3
	ADDQ        $128, SI
	ADDQ        $256, DI
	DECQ        CX
	JNZ         bf16loop

bf16done:
	HSUM4_Z0
	VMOVSS        X0, ret+24(FP)
	VZEROUPPER
	RET

// func dotU8I8Asm(a *uint8, b *int8, n int) int32
// n is a multiple of 256. VPDPBUSD adds four u8·s8 products into each int32
// lane: 64 products per instruction, no saturation.
TEXT ·dotU8I8Asm(SB), NOSPLIT, $0-28
	MOVQ   a+0(FP), SI
	MOVQ   b+8(FP), DI
	MOVQ   n+16(FP), CX
	ZERO4
	SHRQ   $8, CX
	JZ     u8done

u8loop:
	VMOVDQU32 (SI), Z4
	VMOVDQU32 64(SI), Z5
	VMOVDQU32 128(SI), Z6
	VMOVDQU32 192(SI), Z7
	VPDPBUSD  (DI), Z4, Z0
	VPDPBUSD  64(DI), Z5, Z1
	VPDPBUSD  128(DI), Z6, Z2
	VPDPBUSD  192(DI), Z7, Z3
	ADDQ      $256, SI
	ADDQ      $256, DI
	DECQ      CX
	JNZ       u8loop

u8done:
	VPADDD        Z1, Z0, Z0
	VPADDD        Z3, Z2, Z2
	VPADDD        Z2, Z0, Z0
	VEXTRACTI64X4 $1, Z0, Y1
	VPADDD        Y1, Y0, Y0
	VEXTRACTI128  $1, Y0, X1
	VPADDD        X1, X0, X0
	VPSHUFD       $0x4e, X0, X1
	VPADDD        X1, X0, X0
	VPSHUFD       $0xb1, X0, X1
	VPADDD        X1, X0, X0
	VMOVD         X0, AX
	MOVL          AX, ret+24(FP)
	VZEROUPPER
	RET

DATA iota16<>+0(SB)/4, $0x0
DATA iota16<>+4(SB)/4, $0x3f800000
DATA iota16<>+8(SB)/4, $0x40000000
DATA iota16<>+12(SB)/4, $0x40400000
DATA iota16<>+16(SB)/4, $0x40800000
DATA iota16<>+20(SB)/4, $0x40a00000
DATA iota16<>+24(SB)/4, $0x40c00000
DATA iota16<>+28(SB)/4, $0x40e00000
DATA iota16<>+32(SB)/4, $0x41000000
DATA iota16<>+36(SB)/4, $0x41100000
DATA iota16<>+40(SB)/4, $0x41200000
DATA iota16<>+44(SB)/4, $0x41300000
DATA iota16<>+48(SB)/4, $0x41400000
DATA iota16<>+52(SB)/4, $0x41500000
DATA iota16<>+56(SB)/4, $0x41600000
DATA iota16<>+60(SB)/4, $0x41700000
GLOBL iota16<>(SB), RODATA|NOPTR, $64

// shift4: 0 for lanes 0..7, 4 for lanes 8..15 (low or high nibble).
DATA shift4<>+0(SB)/8, $0
DATA shift4<>+8(SB)/8, $0
DATA shift4<>+16(SB)/8, $0
DATA shift4<>+24(SB)/8, $0
DATA shift4<>+32(SB)/8, $0x0000000400000004
DATA shift4<>+40(SB)/8, $0x0000000400000004
DATA shift4<>+48(SB)/8, $0x0000000400000004
DATA shift4<>+56(SB)/8, $0x0000000400000004
GLOBL shift4<>(SB), RODATA|NOPTR, $64

DATA eight<>+0(SB)/4, $8
GLOBL eight<>(SB), RODATA|NOPTR, $4
