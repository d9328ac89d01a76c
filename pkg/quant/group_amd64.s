//go:build !noasm

#include "textflag.h"

// The block quantizer's kernels (group_amd64.go). Every operation is the
// scalar quantizer's IEEE operation per lane (subtract, divide, round to
// nearest even, clamp), so the codes are bit-identical to codesGo's; min and
// max are exact in any order.

// STORE_MINMAX reduces the four lanes of X0 (maxima) and X1 (minima) and
// stores them at (DX) and (DI), advancing both; X4, X5 are scratch.
#define STORE_MINMAX \
	VPERMILPS $0x4e, X0, X4 \
	VMAXPS    X4, X0, X0    \
	VPERMILPS $0x4e, X1, X5 \
	VMINPS    X5, X1, X1    \
	VPERMILPS $0xb1, X0, X4 \
	VMAXPS    X4, X0, X0    \
	VPERMILPS $0xb1, X1, X5 \
	VMINPS    X5, X1, X1    \
	VMOVSS    X0, (DX)      \
	VMOVSS    X1, (DI)      \
	ADDQ      $4, DX        \
	ADDQ      $4, DI

// SUM_X2 sums the four lanes of X2 into lane 0; X4 is scratch.
#define SUM_X2 \
	VPERMILPS $0x4e, X2, X4 \
	VADDPS    X4, X2, X2    \
	VPERMILPS $0xb1, X2, X4 \
	VADDPS    X4, X2, X2

// func minMaxAVX512(w, mn, mx *float32, groups, gs int) float32
TEXT ·minMaxAVX512(SB), NOSPLIT, $0-44
	MOVQ w+0(FP), SI
	MOVQ mn+8(FP), DI
	MOVQ mx+16(FP), DX
	MOVQ groups+24(FP), CX
	MOVQ gs+32(FP), BX
	VPXORD Z2, Z2, Z2 // Σ w·0: NaN iff a weight is not finite
	VPXORD Z3, Z3, Z3

mm512group:
	VMOVUPS (SI), Z0
	VMOVAPS Z0, Z1
	VFMADD231PS Z3, Z0, Z2
	ADDQ $64, SI
	MOVQ BX, AX
	SUBQ $16, AX
	JZ   mm512reduce

mm512inner:
	VMOVUPS (SI), Z4
	VMAXPS Z4, Z0, Z0
	VMINPS Z4, Z1, Z1
	VFMADD231PS Z3, Z4, Z2
	ADDQ $64, SI
	SUBQ $16, AX
	JNZ  mm512inner

mm512reduce:
	VEXTRACTF64X4 $1, Z0, Y4
	VMAXPS Y4, Y0, Y0
	VEXTRACTF64X4 $1, Z1, Y5
	VMINPS Y5, Y1, Y1
	VEXTRACTF128 $1, Y0, X4
	VMAXPS X4, X0, X0
	VEXTRACTF128 $1, Y1, X5
	VMINPS X5, X1, X1
	STORE_MINMAX
	DECQ CX
	JNZ  mm512group

	VEXTRACTF64X4 $1, Z2, Y4
	VADDPS Y4, Y2, Y2
	VEXTRACTF128 $1, Y2, X4
	VADDPS X4, X2, X2
	SUM_X2
	VMOVSS X2, ret+40(FP)
	VZEROUPPER
	RET

// func minMaxAVX2(w, mn, mx *float32, groups, gs int) float32
TEXT ·minMaxAVX2(SB), NOSPLIT, $0-44
	MOVQ w+0(FP), SI
	MOVQ mn+8(FP), DI
	MOVQ mx+16(FP), DX
	MOVQ groups+24(FP), CX
	MOVQ gs+32(FP), BX
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3

mm2group:
	VMOVUPS (SI), Y0
	VMOVAPS Y0, Y1
	VFMADD231PS Y3, Y0, Y2
	ADDQ $32, SI
	MOVQ BX, AX
	SUBQ $8, AX

mm2inner:
	VMOVUPS (SI), Y4
	VMAXPS Y4, Y0, Y0
	VMINPS Y4, Y1, Y1
	VFMADD231PS Y3, Y4, Y2
	ADDQ $32, SI
	SUBQ $8, AX
	JNZ  mm2inner

	VEXTRACTF128 $1, Y0, X4
	VMAXPS X4, X0, X0
	VEXTRACTF128 $1, Y1, X5
	VMINPS X5, X1, X1
	STORE_MINMAX
	DECQ CX
	JNZ  mm2group

	VEXTRACTF128 $1, Y2, X4
	VADDPS X4, X2, X2
	SUM_X2
	VMOVSS X2, ret+40(FP)
	VZEROUPPER
	RET

// func codesAVX512(w *float32, codes *uint8, scales, biases *float32, groups, gs int, n float32, pack4 bool)
//
// pack4 stores two 4-bit codes per byte, element 2j in the low nibble of
// byte j (the packed stream itself); otherwise one code per byte.
TEXT ·codesAVX512(SB), NOSPLIT, $0-53
	MOVQ w+0(FP), SI
	MOVQ codes+8(FP), DI
	MOVQ scales+16(FP), R8
	MOVQ biases+24(FP), R9
	MOVQ groups+32(FP), CX
	MOVQ gs+40(FP), BX
	VBROADCASTSS n+48(FP), Z5
	VPXORD Z3, Z3, Z3
	CMPB pack4+52(FP), $0
	JNE  n512group

c512group:
	VBROADCASTSS (R8), Z6
	VBROADCASTSS (R9), Z7
	MOVQ BX, AX

c512inner:
	VMOVUPS (SI), Z0
	VSUBPS Z7, Z0, Z0
	VDIVPS Z6, Z0, Z0
	VRNDSCALEPS $0, Z0, Z0 // nearest, ties to even
	VMAXPS Z3, Z0, Z0
	VMINPS Z5, Z0, Z0
	VCVTPS2DQ Z0, Z0
	VPMOVDB Z0, (DI)
	ADDQ $64, SI
	ADDQ $16, DI
	SUBQ $16, AX
	JNZ  c512inner
	ADDQ $4, R8
	ADDQ $4, R9
	DECQ CX
	JNZ  c512group
	VZEROUPPER
	RET

n512group:
	VBROADCASTSS (R8), Z6
	VBROADCASTSS (R9), Z7
	MOVQ BX, AX

n512inner:
	VMOVUPS (SI), Z0
	VSUBPS Z7, Z0, Z0
	VDIVPS Z6, Z0, Z0
	VRNDSCALEPS $0, Z0, Z0
	VMAXPS Z3, Z0, Z0
	VMINPS Z5, Z0, Z0
	VCVTPS2DQ Z0, Z0
	VPSRLQ $28, Z0, Z1 // code 2j+1 (bits 32–35 of qword j) to bits 4–7
	VPORQ Z1, Z0, Z0
	VPMOVQB Z0, (DI)   // the low byte of each qword: 8 bytes
	ADDQ $64, SI
	ADDQ $8, DI
	SUBQ $16, AX
	JNZ  n512inner
	ADDQ $4, R8
	ADDQ $4, R9
	DECQ CX
	JNZ  n512group
	VZEROUPPER
	RET

// func codesAVX2(w *float32, codes *uint8, scales, biases *float32, groups, gs int, n float32, pack4 bool)
TEXT ·codesAVX2(SB), NOSPLIT, $0-53
	MOVQ w+0(FP), SI
	MOVQ codes+8(FP), DI
	MOVQ scales+16(FP), R8
	MOVQ biases+24(FP), R9
	MOVQ groups+32(FP), CX
	MOVQ gs+40(FP), BX
	VBROADCASTSS n+48(FP), Y5
	VXORPS Y3, Y3, Y3
	MOVBQZX pack4+52(FP), R10
	VPCMPEQW X8, X8, X8
	VPSRLW $8, X8, X8 // 0x00ff in every word

c2group:
	VBROADCASTSS (R8), Y6
	VBROADCASTSS (R9), Y7
	MOVQ BX, AX

c2inner:
	VMOVUPS (SI), Y0
	VMOVUPS 32(SI), Y1
	VSUBPS Y7, Y0, Y0
	VSUBPS Y7, Y1, Y1
	VDIVPS Y6, Y0, Y0
	VDIVPS Y6, Y1, Y1
	VROUNDPS $0, Y0, Y0 // nearest, ties to even
	VROUNDPS $0, Y1, Y1
	VMAXPS Y3, Y0, Y0
	VMAXPS Y3, Y1, Y1
	VMINPS Y5, Y0, Y0
	VMINPS Y5, Y1, Y1
	VCVTPS2DQ Y0, Y0
	VCVTPS2DQ Y1, Y1
	VPACKUSDW Y1, Y0, Y2   // words [a0-3 b0-3 | a4-7 b4-7]
	VPERMQ $0xd8, Y2, Y2   // [a0-7 | b0-7]
	VEXTRACTI128 $1, Y2, X4
	VPACKUSWB X4, X2, X2   // bytes a0-7 b0-7
	TESTQ R10, R10
	JNE  c2nibbles
	VMOVDQU X2, (DI)
	ADDQ $16, DI
	JMP  c2next

c2nibbles:
	VPSRLW $4, X2, X4      // word j: code 2j+1 << 4
	VPOR X4, X2, X2
	VPAND X8, X2, X2
	VPACKUSWB X2, X2, X2   // the low byte of each word: 8 bytes
	VMOVQ X2, (DI)
	ADDQ $8, DI

c2next:
	ADDQ $64, SI
	SUBQ $16, AX
	JNZ  c2inner
	ADDQ $4, R8
	ADDQ $4, R9
	DECQ CX
	JNZ  c2group
	VZEROUPPER
	RET

// The scale and bias of 16 (8) groups at once, groupParams's operations per
// lane: scale = max((mx − mn)/n, 1e−7); edge = mn where |mn| > |mx| (scale
// kept), else mx (scale negated); q0 = rint(edge/scale); where q0 ≠ 0 (also
// where it is NaN, as Go's ≠) scale = edge/q0 and bias = edge, else bias = 0.
// mn becomes the scales and mx the biases.

DATA params<>+0(SB)/4, $1e-7
DATA params<>+4(SB)/4, $0x7fffffff
DATA params<>+8(SB)/4, $0x80000000
GLOBL params<>(SB), RODATA|NOPTR, $12

// func paramsAVX512(mn, mx *float32, k int, n float32)
TEXT ·paramsAVX512(SB), NOSPLIT, $0-28
	MOVQ mn+0(FP), DI
	MOVQ mx+8(FP), DX
	MOVQ k+16(FP), CX
	VBROADCASTSS n+24(FP), Z10
	VBROADCASTSS params<>+0(SB), Z11
	VPBROADCASTD params<>+4(SB), Z12
	VPBROADCASTD params<>+8(SB), Z13
	VPXORD Z3, Z3, Z3

p512:
	VMOVUPS (DI), Z0
	VMOVUPS (DX), Z1
	VSUBPS Z0, Z1, Z2
	VDIVPS Z10, Z2, Z2
	VMAXPS Z11, Z2, Z2
	VPANDD Z12, Z0, Z4
	VPANDD Z12, Z1, Z5
	VCMPPS $0x1e, Z5, Z4, K1 // |mn| > |mx| (ordered, greater than)
	VMOVAPS Z1, Z6
	VMOVAPS Z0, K1, Z6       // edge
	VPXORD Z13, Z2, Z7
	VMOVAPS Z2, K1, Z7       // scale, signed
	VDIVPS Z7, Z6, Z8
	VRNDSCALEPS $0, Z8, Z8   // q0
	VCMPPS $0x04, Z3, Z8, K2 // q0 ≠ 0 (unordered or not equal)
	VDIVPS Z8, Z6, Z9
	VMOVAPS Z9, K2, Z7
	VMOVAPS.Z Z6, K2, Z14
	VMOVUPS Z7, (DI)
	VMOVUPS Z14, (DX)
	ADDQ $64, DI
	ADDQ $64, DX
	SUBQ $16, CX
	JNZ  p512
	VZEROUPPER
	RET

// func paramsAVX2(mn, mx *float32, k int, n float32)
TEXT ·paramsAVX2(SB), NOSPLIT, $0-28
	MOVQ mn+0(FP), DI
	MOVQ mx+8(FP), DX
	MOVQ k+16(FP), CX
	VBROADCASTSS n+24(FP), Y10
	VBROADCASTSS params<>+0(SB), Y11
	VBROADCASTSS params<>+4(SB), Y12
	VBROADCASTSS params<>+8(SB), Y13
	VXORPS Y3, Y3, Y3

p2:
	VMOVUPS (DI), Y0
	VMOVUPS (DX), Y1
	VSUBPS Y0, Y1, Y2
	VDIVPS Y10, Y2, Y2
	VMAXPS Y11, Y2, Y2
	VANDPS Y12, Y0, Y4
	VANDPS Y12, Y1, Y5
	VCMPPS $0x1e, Y5, Y4, Y15   // |mn| > |mx|
	VBLENDVPS Y15, Y0, Y1, Y6   // edge
	VXORPS Y13, Y2, Y7
	VBLENDVPS Y15, Y2, Y7, Y7   // scale, signed
	VDIVPS Y7, Y6, Y8
	VROUNDPS $0, Y8, Y8         // q0
	VCMPPS $0x04, Y3, Y8, Y14   // q0 ≠ 0
	VDIVPS Y8, Y6, Y9
	VBLENDVPS Y14, Y9, Y7, Y7
	VANDPS Y14, Y6, Y9          // bias
	VMOVUPS Y7, (DI)
	VMOVUPS Y9, (DX)
	ADDQ $32, DI
	ADDQ $32, DX
	SUBQ $8, CX
	JNZ  p2
	VZEROUPPER
	RET
