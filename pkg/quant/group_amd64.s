//go:build !noasm

#include "textflag.h"

// The block quantizer's kernels (group_amd64.go). Every operation is the
// scalar quantizer's IEEE operation per lane (subtract, divide, round to
// nearest even, clamp), so the codes are bit-identical to codesGo's; min and
// max are exact in any order.

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
	VPERMILPS $0x4e, X0, X4
	VMAXPS X4, X0, X0
	VPERMILPS $0x4e, X1, X5
	VMINPS X5, X1, X1
	VPERMILPS $0xb1, X0, X4
	VMAXPS X4, X0, X0
	VPERMILPS $0xb1, X1, X5
	VMINPS X5, X1, X1
	VMOVSS X0, (DX)
	VMOVSS X1, (DI)
	ADDQ $4, DX
	ADDQ $4, DI
	DECQ CX
	JNZ  mm512group

	VEXTRACTF64X4 $1, Z2, Y4
	VADDPS Y4, Y2, Y2
	VEXTRACTF128 $1, Y2, X4
	VADDPS X4, X2, X2
	VPERMILPS $0x4e, X2, X4
	VADDPS X4, X2, X2
	VPERMILPS $0xb1, X2, X4
	VADDPS X4, X2, X2
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
	VPERMILPS $0x4e, X0, X4
	VMAXPS X4, X0, X0
	VPERMILPS $0x4e, X1, X5
	VMINPS X5, X1, X1
	VPERMILPS $0xb1, X0, X4
	VMAXPS X4, X0, X0
	VPERMILPS $0xb1, X1, X5
	VMINPS X5, X1, X1
	VMOVSS X0, (DX)
	VMOVSS X1, (DI)
	ADDQ $4, DX
	ADDQ $4, DI
	DECQ CX
	JNZ  mm2group

	VEXTRACTF128 $1, Y2, X4
	VADDPS X4, X2, X2
	VPERMILPS $0x4e, X2, X4
	VADDPS X4, X2, X2
	VPERMILPS $0xb1, X2, X4
	VADDPS X4, X2, X2
	VMOVSS X2, ret+40(FP)
	VZEROUPPER
	RET

// func codesAVX512(w *float32, codes *uint8, scales, biases *float32, groups, gs int, n float32)
TEXT ·codesAVX512(SB), NOSPLIT, $0-52
	MOVQ w+0(FP), SI
	MOVQ codes+8(FP), DI
	MOVQ scales+16(FP), R8
	MOVQ biases+24(FP), R9
	MOVQ groups+32(FP), CX
	MOVQ gs+40(FP), BX
	VBROADCASTSS n+48(FP), Z5
	VPXORD Z3, Z3, Z3

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

// func codesAVX2(w *float32, codes *uint8, scales, biases *float32, groups, gs int, n float32)
TEXT ·codesAVX2(SB), NOSPLIT, $0-52
	MOVQ w+0(FP), SI
	MOVQ codes+8(FP), DI
	MOVQ scales+16(FP), R8
	MOVQ biases+24(FP), R9
	MOVQ groups+32(FP), CX
	MOVQ gs+40(FP), BX
	VBROADCASTSS n+48(FP), Y5
	VXORPS Y3, Y3, Y3

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
	VMOVDQU X2, (DI)
	ADDQ $64, SI
	ADDQ $16, DI
	SUBQ $16, AX
	JNZ  c2inner
	ADDQ $4, R8
	ADDQ $4, R9
	DECQ CX
	JNZ  c2group
	VZEROUPPER
	RET

// func decodeBF16AVX512(dst *float32, src *byte, n int)
TEXT ·decodeBF16AVX512(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX

d512:
	VPMOVZXWD (SI), Z0
	VPSLLD $16, Z0, Z0
	VMOVUPS Z0, (DI)
	ADDQ $32, SI
	ADDQ $64, DI
	SUBQ $16, CX
	JNZ  d512
	VZEROUPPER
	RET

// func decodeBF16AVX2(dst *float32, src *byte, n int)
TEXT ·decodeBF16AVX2(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX

d2:
	VPMOVZXWD (SI), Y0
	VPSLLD $16, Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ $16, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JNZ  d2
	VZEROUPPER
	RET
