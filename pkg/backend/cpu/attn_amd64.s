//go:build !noasm

#include "textflag.h"

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
	VMAXPS       (DX), Y0, Y0
	VMULPS       32(DX), Y0, Y1
	VROUNDPS     $0, Y1, Y1
	VFNMADD231PS 64(DX), Y1, Y0
	VFNMADD231PS 96(DX), Y1, Y0
	VMOVUPS      128(DX), Y2
	VFMADD213PS  160(DX), Y0, Y2
	VFMADD213PS  192(DX), Y0, Y2
	VFMADD213PS  224(DX), Y0, Y2
	VFMADD213PS  256(DX), Y0, Y2
	VFMADD213PS  288(DX), Y0, Y2
	VMULPS       Y0, Y0, Y3
	VFMADD213PS  Y0, Y3, Y2
	VADDPS       320(DX), Y2, Y2
	VCVTPS2DQ    Y1, Y1
	VPADDD       352(DX), Y1, Y1
	VPSLLD       $23, Y1, Y1
	VMULPS       Y1, Y2, Y2
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
	VADDPD       Y5, Y4, Y4
	VEXTRACTF128 $1, Y4, X5
	VADDPD       X5, X4, X4
	VHADDPD      X4, X4, X4
	VMOVSD       X4, ret+32(FP)
	VZEROUPPER
	RET
