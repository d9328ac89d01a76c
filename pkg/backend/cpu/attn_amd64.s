//go:build !noasm

#include "textflag.h"

// EXPSUM_FOLD folds the exp-and-sum kernels' float64 lanes 0–3 (Y4) and 4–7
// (Y5) into X4: lane j with j+4, then the halves, then the two — the same
// order in both kernels.
#define EXPSUM_FOLD \
	VADDPD       Y5, Y4, Y4 \
	VEXTRACTF128 $1, Y4, X5 \
	VADDPD       X5, X4, X4 \
	VHADDPD      X4, X4, X4

// Attention kernels (see attn.go). Both end with VZEROUPPER.

// func dotRows4AVX2(q, k *float32, kstride int, out unsafe.Pointer, n int)
// Two 8-float steps per iteration into eight accumulators (two per key) so
// that the FMA latency is hidden; n is a multiple of 16.
TEXT ·dotRows4AVX2(SB), NOSPLIT, $0-40
	MOVQ   q+0(FP), SI
	MOVQ   k+8(FP), DI
	MOVQ   kstride+16(FP), BX
	MOVQ   n+32(FP), CX
	SHRQ   $4, CX
	LEAQ   (DI)(BX*1), R12
	LEAQ   (DI)(BX*2), R13
	LEAQ   (R12)(BX*2), R14
	XORQ   AX, AX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7

dotrows4step:
	VMOVUPS     (SI), Y8
	VMOVUPS     32(SI), Y9
	VFMADD231PS (DI)(AX*1), Y8, Y0
	VFMADD231PS 32(DI)(AX*1), Y9, Y4
	VFMADD231PS (R12)(AX*1), Y8, Y1
	VFMADD231PS 32(R12)(AX*1), Y9, Y5
	VFMADD231PS (R13)(AX*1), Y8, Y2
	VFMADD231PS 32(R13)(AX*1), Y9, Y6
	VFMADD231PS (R14)(AX*1), Y8, Y3
	VFMADD231PS 32(R14)(AX*1), Y9, Y7
	ADDQ        $64, SI
	ADDQ        $64, AX
	DECQ        CX
	JNZ         dotrows4step

	VADDPS       Y4, Y0, Y0
	VADDPS       Y5, Y1, Y1
	VADDPS       Y6, Y2, Y2
	VADDPS       Y7, Y3, Y3
	MOVQ         out+24(FP), DI
	VEXTRACTF128 $1, Y0, X8
	VADDPS       X8, X0, X0
	VEXTRACTF128 $1, Y1, X8
	VADDPS       X8, X1, X1
	VEXTRACTF128 $1, Y2, X8
	VADDPS       X8, X2, X2
	VEXTRACTF128 $1, Y3, X8
	VADDPS       X8, X3, X3
	VHADDPS      X1, X0, X0
	VHADDPS      X3, X2, X2
	VHADDPS      X2, X0, X0
	VMOVUPS      X0, (DI)
	VZEROUPPER
	RET

// func weightedSum64AVX2(o, p, v *float32, vstride int, n int)
// o[0:64] stays in Y0–Y7 while each row s adds p[s]·v_s with one FMA per
// element, in row order: bit-for-bit the result of n successive axpys.
TEXT ·weightedSum64AVX2(SB), NOSPLIT, $0-40
	MOVQ    o+0(FP), DI
	MOVQ    p+8(FP), SI
	MOVQ    v+16(FP), DX
	MOVQ    vstride+24(FP), BX
	MOVQ    n+32(FP), CX
	VMOVUPS (DI), Y0
	VMOVUPS 32(DI), Y1
	VMOVUPS 64(DI), Y2
	VMOVUPS 96(DI), Y3
	VMOVUPS 128(DI), Y4
	VMOVUPS 160(DI), Y5
	VMOVUPS 192(DI), Y6
	VMOVUPS 224(DI), Y7
	TESTQ   CX, CX
	JZ      wsum64done

wsum64step:
	VBROADCASTSS (SI), Y8
	VFMADD231PS  (DX), Y8, Y0
	VFMADD231PS  32(DX), Y8, Y1
	VFMADD231PS  64(DX), Y8, Y2
	VFMADD231PS  96(DX), Y8, Y3
	VFMADD231PS  128(DX), Y8, Y4
	VFMADD231PS  160(DX), Y8, Y5
	VFMADD231PS  192(DX), Y8, Y6
	VFMADD231PS  224(DX), Y8, Y7
	ADDQ         $4, SI
	ADDQ         BX, DX
	DECQ         CX
	JNZ          wsum64step

wsum64done:
	VMOVUPS Y0, (DI)
	VMOVUPS Y1, 32(DI)
	VMOVUPS Y2, 64(DI)
	VMOVUPS Y3, 96(DI)
	VMOVUPS Y4, 128(DI)
	VMOVUPS Y5, 160(DI)
	VMOVUPS Y6, 192(DI)
	VMOVUPS Y7, 224(DI)
	VZEROUPPER
	RET

// EXP32_8: Y2 = exp(Y0), eight lanes, exp32's steps (DX: expConsts, 32
// bytes a row): Y0 clamped at −87.3, n = round(Y0·log2 e), r = Y0 − n·ln 2 in
// two parts, the Cephes polynomial in r, times 2ⁿ built in the exponent bits.
// Y0, Y1 and Y3 are overwritten.
#define EXP32_8 \
	VMAXPS       (DX), Y0, Y0 \
	VMULPS       32(DX), Y0, Y1 \
	VROUNDPS     $0, Y1, Y1 \
	VFNMADD231PS 64(DX), Y1, Y0 \
	VFNMADD231PS 96(DX), Y1, Y0 \
	VMOVUPS      128(DX), Y2 \
	VFMADD213PS  160(DX), Y0, Y2 \
	VFMADD213PS  192(DX), Y0, Y2 \
	VFMADD213PS  224(DX), Y0, Y2 \
	VFMADD213PS  256(DX), Y0, Y2 \
	VFMADD213PS  288(DX), Y0, Y2 \
	VMULPS       Y0, Y0, Y3 \
	VFMADD213PS  Y0, Y3, Y2 \
	VADDPS       320(DX), Y2, Y2 \
	VCVTPS2DQ    Y1, Y1 \
	VPADDD       352(DX), Y1, Y1 \
	VPSLLD       $23, Y1, Y1 \
	VMULPS       Y1, Y2, Y2

// func expSumAVX2(x *float32, n int, consts unsafe.Pointer, mx float32) float64
// x[i] = exp(x[i] − mx) eight lanes at a time (the steps of exp32, with FMA),
// the sum widened to float64 in Y4/Y5. consts is expConsts: 32 bytes a row.
TEXT ·expSumAVX2(SB), NOSPLIT, $0-40
	MOVQ         x+0(FP), SI
	MOVQ         n+8(FP), CX
	MOVQ         consts+16(FP), DX
	VBROADCASTSS mx+24(FP), Y15
	VXORPD       Y4, Y4, Y4
	VXORPD       Y5, Y5, Y5
	SHRQ         $3, CX
	JZ           expsumdone

expsumstep:
	VMOVUPS      (SI), Y0
	VSUBPS       Y15, Y0, Y0
	EXP32_8
	VMOVUPS      Y2, (SI)
	VCVTPS2PD    X2, Y3
	VADDPD       Y3, Y4, Y4
	VEXTRACTF128 $1, Y2, X2
	VCVTPS2PD    X2, Y3
	VADDPD       Y3, Y5, Y5
	ADDQ         $32, SI
	DECQ         CX
	JNZ          expsumstep

expsumdone:
	EXPSUM_FOLD
	VMOVSD     X4, ret+32(FP)
	VZEROUPPER
	RET

// EXP32_16: Z2 = exp(Z0), sixteen lanes, EXP32_8's operations lane for lane
// (so the same results), the constants broadcast from expConsts' rows at DX.
// Z0, Z1 and Z3 are overwritten.
#define EXP32_16 \
	VMAXPS.BCST       (DX), Z0, Z0 \
	VMULPS.BCST       32(DX), Z0, Z1 \
	VRNDSCALEPS       $0, Z1, Z1 \
	VFNMADD231PS.BCST 64(DX), Z1, Z0 \
	VFNMADD231PS.BCST 96(DX), Z1, Z0 \
	VBROADCASTSS      128(DX), Z2 \
	VFMADD213PS.BCST  160(DX), Z0, Z2 \
	VFMADD213PS.BCST  192(DX), Z0, Z2 \
	VFMADD213PS.BCST  224(DX), Z0, Z2 \
	VFMADD213PS.BCST  256(DX), Z0, Z2 \
	VFMADD213PS.BCST  288(DX), Z0, Z2 \
	VMULPS            Z0, Z0, Z3 \
	VFMADD213PS       Z0, Z3, Z2 \
	VADDPS.BCST       320(DX), Z2, Z2 \
	VCVTPS2DQ         Z1, Z1 \
	VPADDD.BCST       352(DX), Z1, Z1 \
	VPSLLD            $23, Z1, Z1 \
	VMULPS            Z1, Z2, Z2

// func expSumAVX512(x *float32, n int, consts unsafe.Pointer, mx float32) float64
// x[i] = exp(x[i] − mx) for any n ≥ 1, sixteen lanes at a time and the last
// n mod 16 under a mask, EXP32_8's operations lane for lane; the float64 sum
// keeps expSumAVX2's order: lane j of Z4 takes the elements ≡ j mod 8 in
// order (masked-off lanes add nothing), reduced as expSumAVX2 reduces Y4 and
// Y5. For n a multiple of 8 it is expSumAVX2 bit for bit.
TEXT ·expSumAVX512(SB), NOSPLIT, $0-40
	MOVQ         x+0(FP), SI
	MOVQ         n+8(FP), CX
	MOVQ         consts+16(FP), DX
	VBROADCASTSS mx+24(FP), Z15
	VXORPD       Z4, Z4, Z4
	MOVQ         CX, BX
	SHRQ         $4, CX
	JZ           expsum16tail

expsum16step:
	VMOVUPS       (SI), Z0
	VSUBPS        Z15, Z0, Z0
	EXP32_16
	VMOVUPS       Z2, (SI)
	VCVTPS2PD     Y2, Z3
	VADDPD        Z3, Z4, Z4
	VEXTRACTF32X8 $1, Z2, Y2
	VCVTPS2PD     Y2, Z3
	VADDPD        Z3, Z4, Z4
	ADDQ          $64, SI
	DECQ          CX
	JNZ           expsum16step

expsum16tail:
	ANDQ          $15, BX
	JZ            expsum16done
	MOVL          $1, AX
	MOVQ          BX, CX
	SHLL          CX, AX
	DECL          AX
	KMOVW         AX, K1             // the last n mod 16 lanes
	SHRL          $8, AX
	KMOVW         AX, K2             // of them, those in the high eight
	VMOVUPS.Z     (SI), K1, Z0
	VSUBPS        Z15, Z0, Z0
	EXP32_16
	VMOVUPS       Z2, K1, (SI)
	VCVTPS2PD     Y2, Z3
	VADDPD        Z3, Z4, K1, Z4
	VEXTRACTF32X8 $1, Z2, Y2
	VCVTPS2PD     Y2, Z3
	VADDPD        Z3, Z4, K2, Z4

expsum16done:
	VEXTRACTF64X4 $1, Z4, Y5
	EXPSUM_FOLD
	VMOVSD        X4, ret+32(FP)
	VZEROUPPER
	RET

// FOLD16TO4 adds the four 128-bit quarters of z into its low quarter x (y
// is z's low half; Z16 is scratch, so the EVEX forms are used).
#define FOLD16TO4(z, y, x) \
	VEXTRACTF64X4 $1, z, Y16 \
	VADDPS        Y16, y, y  \
	VEXTRACTF32X4 $1, y, X16 \
	VADDPS        X16, x, x

// SUM4X4 stores the horizontal sums of a, b, c and d, in that order, at dst.
#define SUM4X4(a, b, c, d, dst) \
	VHADDPS b, a, a \
	VHADDPS d, c, c \
	VHADDPS c, a, a \
	VMOVUPS a, dst

// func dotHeads4AVX512(q *float32, qstride int, k *float32, kstride int, out unsafe.Pointer, n int)
// out[4h+j] = Σ_d q_h[d]·k_j[d] for four query rows q_h = q + h·qstride and
// four keys k_j = k + j·kstride (strides in bytes, n a multiple of 16): each
// key vector is loaded once for the four heads, so the loop does 16 FMAs per
// 8 loads (DotRows4: 8 per 10). Sixteen lane-wise accumulators, reduced at the
// end like dotRows4AVX2's.
TEXT ·dotHeads4AVX512(SB), NOSPLIT, $0-48
	MOVQ   q+0(FP), SI
	MOVQ   qstride+8(FP), AX
	MOVQ   k+16(FP), DI
	MOVQ   kstride+24(FP), BX
	MOVQ   n+40(FP), CX
	SHRQ   $4, CX
	LEAQ   (SI)(AX*1), R8
	LEAQ   (SI)(AX*2), R9
	LEAQ   (R8)(AX*2), R10
	LEAQ   (DI)(BX*1), R11
	LEAQ   (DI)(BX*2), R12
	LEAQ   (R11)(BX*2), R13
	XORQ   DX, DX
	VXORPS Z0, Z0, Z0
	VXORPS Z1, Z1, Z1
	VXORPS Z2, Z2, Z2
	VXORPS Z3, Z3, Z3
	VXORPS Z4, Z4, Z4
	VXORPS Z5, Z5, Z5
	VXORPS Z6, Z6, Z6
	VXORPS Z7, Z7, Z7
	VXORPS Z8, Z8, Z8
	VXORPS Z9, Z9, Z9
	VXORPS Z10, Z10, Z10
	VXORPS Z11, Z11, Z11
	VXORPS Z12, Z12, Z12
	VXORPS Z13, Z13, Z13
	VXORPS Z14, Z14, Z14
	VXORPS Z15, Z15, Z15

dotheads4step:
	VMOVUPS     (DI)(DX*1), Z16
	VMOVUPS     (R11)(DX*1), Z17
	VMOVUPS     (R12)(DX*1), Z18
	VMOVUPS     (R13)(DX*1), Z19
	VMOVUPS     (SI)(DX*1), Z20
	VFMADD231PS Z16, Z20, Z0
	VFMADD231PS Z17, Z20, Z1
	VFMADD231PS Z18, Z20, Z2
	VFMADD231PS Z19, Z20, Z3
	VMOVUPS     (R8)(DX*1), Z21
	VFMADD231PS Z16, Z21, Z4
	VFMADD231PS Z17, Z21, Z5
	VFMADD231PS Z18, Z21, Z6
	VFMADD231PS Z19, Z21, Z7
	VMOVUPS     (R9)(DX*1), Z22
	VFMADD231PS Z16, Z22, Z8
	VFMADD231PS Z17, Z22, Z9
	VFMADD231PS Z18, Z22, Z10
	VFMADD231PS Z19, Z22, Z11
	VMOVUPS     (R10)(DX*1), Z23
	VFMADD231PS Z16, Z23, Z12
	VFMADD231PS Z17, Z23, Z13
	VFMADD231PS Z18, Z23, Z14
	VFMADD231PS Z19, Z23, Z15
	ADDQ        $64, DX
	DECQ        CX
	JNZ         dotheads4step

	MOVQ out+32(FP), DI
	FOLD16TO4(Z0, Y0, X0)
	FOLD16TO4(Z1, Y1, X1)
	FOLD16TO4(Z2, Y2, X2)
	FOLD16TO4(Z3, Y3, X3)
	FOLD16TO4(Z4, Y4, X4)
	FOLD16TO4(Z5, Y5, X5)
	FOLD16TO4(Z6, Y6, X6)
	FOLD16TO4(Z7, Y7, X7)
	FOLD16TO4(Z8, Y8, X8)
	FOLD16TO4(Z9, Y9, X9)
	FOLD16TO4(Z10, Y10, X10)
	FOLD16TO4(Z11, Y11, X11)
	FOLD16TO4(Z12, Y12, X12)
	FOLD16TO4(Z13, Y13, X13)
	FOLD16TO4(Z14, Y14, X14)
	FOLD16TO4(Z15, Y15, X15)
	SUM4X4(X0, X1, X2, X3, 0(DI))
	SUM4X4(X4, X5, X6, X7, 16(DI))
	SUM4X4(X8, X9, X10, X11, 32(DI))
	SUM4X4(X12, X13, X14, X15, 48(DI))
	VZEROUPPER
	RET

// func weightedSumHeads4x64AVX512(o *float32, ostride int, p *float32, pstride int, v *float32, vstride int, n int)
// For h = 0…3 adds Σₛ p_h[s]·v[s·vstride : +64] to the 64 floats at
// o_h = o + h·ostride, p_h = p + h·pstride (strides in bytes, n rows): the four
// heads' outputs stay in Z0–Z15 while each value row, loaded once, meets the
// four heads' weights. Each output element gets one FMA per row, in row
// order: bit-for-bit weightedSum64AVX2 on each head.
TEXT ·weightedSumHeads4x64AVX512(SB), NOSPLIT, $0-56
	MOVQ    o+0(FP), DI
	MOVQ    ostride+8(FP), AX
	MOVQ    p+16(FP), SI
	MOVQ    pstride+24(FP), BX
	MOVQ    v+32(FP), R11
	MOVQ    vstride+40(FP), R12
	MOVQ    n+48(FP), CX
	LEAQ    (DI)(AX*1), R8
	LEAQ    (DI)(AX*2), R9
	LEAQ    (R8)(AX*2), R10
	LEAQ    (SI)(BX*1), R13
	LEAQ    (SI)(BX*2), R14
	LEAQ    (R13)(BX*2), R15
	VMOVUPS (DI), Z0
	VMOVUPS 64(DI), Z1
	VMOVUPS 128(DI), Z2
	VMOVUPS 192(DI), Z3
	VMOVUPS (R8), Z4
	VMOVUPS 64(R8), Z5
	VMOVUPS 128(R8), Z6
	VMOVUPS 192(R8), Z7
	VMOVUPS (R9), Z8
	VMOVUPS 64(R9), Z9
	VMOVUPS 128(R9), Z10
	VMOVUPS 192(R9), Z11
	VMOVUPS (R10), Z12
	VMOVUPS 64(R10), Z13
	VMOVUPS 128(R10), Z14
	VMOVUPS 192(R10), Z15
	XORQ    DX, DX

wsheads4step:
	VMOVUPS      (R11), Z16
	VMOVUPS      64(R11), Z17
	VMOVUPS      128(R11), Z18
	VMOVUPS      192(R11), Z19
	VBROADCASTSS (SI)(DX*4), Z20
	VFMADD231PS  Z16, Z20, Z0
	VFMADD231PS  Z17, Z20, Z1
	VFMADD231PS  Z18, Z20, Z2
	VFMADD231PS  Z19, Z20, Z3
	VBROADCASTSS (R13)(DX*4), Z21
	VFMADD231PS  Z16, Z21, Z4
	VFMADD231PS  Z17, Z21, Z5
	VFMADD231PS  Z18, Z21, Z6
	VFMADD231PS  Z19, Z21, Z7
	VBROADCASTSS (R14)(DX*4), Z22
	VFMADD231PS  Z16, Z22, Z8
	VFMADD231PS  Z17, Z22, Z9
	VFMADD231PS  Z18, Z22, Z10
	VFMADD231PS  Z19, Z22, Z11
	VBROADCASTSS (R15)(DX*4), Z23
	VFMADD231PS  Z16, Z23, Z12
	VFMADD231PS  Z17, Z23, Z13
	VFMADD231PS  Z18, Z23, Z14
	VFMADD231PS  Z19, Z23, Z15
	ADDQ         R12, R11
	INCQ         DX
	CMPQ         DX, CX
	JLT          wsheads4step

	VMOVUPS Z0, (DI)
	VMOVUPS Z1, 64(DI)
	VMOVUPS Z2, 128(DI)
	VMOVUPS Z3, 192(DI)
	VMOVUPS Z4, (R8)
	VMOVUPS Z5, 64(R8)
	VMOVUPS Z6, 128(R8)
	VMOVUPS Z7, 192(R8)
	VMOVUPS Z8, (R9)
	VMOVUPS Z9, 64(R9)
	VMOVUPS Z10, 128(R9)
	VMOVUPS Z11, 192(R9)
	VMOVUPS Z12, (R10)
	VMOVUPS Z13, 64(R10)
	VMOVUPS Z14, 128(R10)
	VMOVUPS Z15, 192(R10)
	VZEROUPPER
	RET

// func swiGLUAVX2(gate, up *float32, n int, consts unsafe.Pointer, hi float32)
// gate[i] = gate[i] / (1 + exp(−gate[i])) · up[i], eight lanes at a time (n a
// multiple of 8): exp32's steps as in expSumAVX2, its argument −gate also
// clamped from above at hi so that 2ⁿ stays a float, and 0 where −gate > hi
// (silu of a gate below −88 is below 1e−36).
TEXT ·swiGLUAVX2(SB), NOSPLIT, $0-36
	MOVQ         gate+0(FP), SI
	MOVQ         up+8(FP), DI
	MOVQ         n+16(FP), CX
	MOVQ         consts+24(FP), DX
	VBROADCASTSS hi+32(FP), Y15
	VXORPS       Y14, Y14, Y14
	SHRQ         $3, CX
	JZ           swigludone

swiglustep:
	VMOVUPS      (SI), Y6
	VSUBPS       Y6, Y14, Y0
	VCMPPS       $1, Y0, Y15, Y7
	VMINPS       Y15, Y0, Y0
	EXP32_8
	VADDPS       320(DX), Y2, Y2
	VDIVPS       Y2, Y6, Y6
	VMULPS       (DI), Y6, Y6
	VANDNPS      Y6, Y7, Y6
	VMOVUPS      Y6, (SI)
	ADDQ         $32, SI
	ADDQ         $32, DI
	DECQ         CX
	JNZ          swiglustep

swigludone:
	VZEROUPPER
	RET

// func maxAVX2(x *float32, n int) float32
// The largest of x[0..n) (n a positive multiple of 32), in four chains of
// VMAXPS folded at the end. Order does not change a maximum of finite
// floats; a NaN gives some element's value or NaN, and every score's exp
// is NaN then anyway (SoftmaxF32's scalar loop skips NaNs the same way).
TEXT ·maxAVX2(SB), NOSPLIT, $0-20
	MOVQ    x+0(FP), SI
	MOVQ    n+8(FP), CX
	VMOVUPS (SI), Y0
	VMOVUPS 32(SI), Y1
	VMOVUPS 64(SI), Y2
	VMOVUPS 96(SI), Y3
	ADDQ    $128, SI
	SHRQ    $5, CX
	DECQ    CX
	JZ      maxfold

maxstep:
	VMAXPS (SI), Y0, Y0
	VMAXPS 32(SI), Y1, Y1
	VMAXPS 64(SI), Y2, Y2
	VMAXPS 96(SI), Y3, Y3
	ADDQ   $128, SI
	DECQ   CX
	JNZ    maxstep

maxfold:
	VMAXPS       Y1, Y0, Y0
	VMAXPS       Y3, Y2, Y2
	VMAXPS       Y2, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VMAXPS       X1, X0, X0
	VPERMILPS    $0x4e, X0, X1
	VMAXPS       X1, X0, X0
	VPERMILPS    $0xb1, X0, X1
	VMAXPS       X1, X0, X0
	VZEROUPPER
	MOVSS        X0, ret+16(FP)
	RET

// func scaleAVX2(x *float32, n int, s float32)
// x[i] *= s (n a multiple of 16): SoftmaxF32's normalization.
TEXT ·scaleAVX2(SB), NOSPLIT, $0-20
	MOVQ         x+0(FP), SI
	MOVQ         n+8(FP), CX
	VBROADCASTSS s+16(FP), Y0
	SHRQ         $4, CX
	JZ           scaledone

scalestep:
	VMULPS  (SI), Y0, Y1
	VMULPS  32(SI), Y0, Y2
	VMOVUPS Y1, (SI)
	VMOVUPS Y2, 32(SI)
	ADDQ    $64, SI
	DECQ    CX
	JNZ     scalestep

scaledone:
	VZEROUPPER
	RET
