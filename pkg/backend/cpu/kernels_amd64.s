//go:build !noasm

#include "textflag.h"
#include "rowprefetch_amd64.h"

// AVX2 + FMA twins of the Go kernels in dot.go. Every function ends with
// VZEROUPPER so that the caller's SSE code pays no transition penalty.

// Horizontal sum of Y0 into X0 (clobbers X1).
#define HSUM_Y0 \
	VEXTRACTF128 $1, Y0, X1 \
	VADDPS       X1, X0, X0 \
	VHADDPS      X0, X0, X0 \
	VHADDPS      X0, X0, X0

// Per-group end shared by the affine kernels: Y1 holds the group's Σ q·x;
// with the group's float32 scale (R8) and bias (R9): Y0 += s·Y1 and
// X7 += b·gsum[g] (R10).
#define AFFINE_GROUP_END \
	VBROADCASTSS (R8), Y6 \
	VFMADD231PS  Y1, Y6, Y0 \
	VMOVSS       (R9), X8 \
	VFMADD231SS  (R10), X8, X7 \
	ADDQ         $4, R8 \
	ADDQ         $4, R9 \
	ADDQ         $4, R10

#define AFFINE_PROLOGUE \
	MOVQ   packed+0(FP), SI \
	MOVQ   xperm+8(FP), DI \
	MOVQ   scales+16(FP), R8 \
	MOVQ   biases+24(FP), R9 \
	MOVQ   gsum+32(FP), R10 \
	MOVQ   groups+40(FP), R11 \
	MOVQ   gs+48(FP), R12 \
	SHRQ   $5, R12 \
	VXORPS Y0, Y0, Y0 \
	VXORPS X7, X7, X7

#define AFFINE_EPILOGUE \
	HSUM_Y0 \
	VADDSS X7, X0, X0 \
	VMOVSS X0, ret+56(FP) \
	VZEROUPPER \
	RET

// ROW4_FINISH reduces Y4..Y7 to one float each, adds the bias terms in X12
// (one lane per token), stores the four results at out and returns.
#define ROW4_FINISH \
	MOVQ         out+48(FP), DI \
	VEXTRACTF128 $1, Y4, X0 \
	VADDPS       X0, X4, X4 \
	VEXTRACTF128 $1, Y5, X0 \
	VADDPS       X0, X5, X5 \
	VEXTRACTF128 $1, Y6, X0 \
	VADDPS       X0, X6, X6 \
	VEXTRACTF128 $1, Y7, X0 \
	VADDPS       X0, X7, X7 \
	VHADDPS      X5, X4, X4 \
	VHADDPS      X7, X6, X6 \
	VHADDPS      X6, X4, X4 \
	VADDPS       X12, X4, X4 \
	VMOVUPS      X4, (DI) \
	VZEROUPPER \
	RET

// Register use of the 4-token affine kernels: Y0..Y3 and Y10, Y11, Y13, Y14
// accumulate a group's Σ q·x per token (two chains each, to cover the FMA
// latency), Y4..Y7 the per-token totals Σ s·(Σ q·x), X12 the bias terms (one
// lane per token), Y8/Y9 the decoded codes, Y15 the nibble mask.

// ROW4_GROUP_END folds the group's accumulators into the totals with the
// group's scale (R8) and adds bias·gsum for the four tokens (R9, R10).
#define ROW4_GROUP_END \
	VADDPS       Y10, Y0, Y0 \
	VADDPS       Y11, Y1, Y1 \
	VADDPS       Y13, Y2, Y2 \
	VADDPS       Y14, Y3, Y3 \
	VBROADCASTSS (R8), Y8 \
	VFMADD231PS  Y0, Y8, Y4 \
	VFMADD231PS  Y1, Y8, Y5 \
	VFMADD231PS  Y2, Y8, Y6 \
	VFMADD231PS  Y3, Y8, Y7 \
	VBROADCASTSS (R9), X9 \
	VFMADD231PS  (R10), X9, X12 \
	ADDQ         $4, R8 \
	ADDQ         $4, R9 \
	ADDQ         $16, R10

#define ROW4_PROLOGUE \
	MOVQ   packed+0(FP), SI \
	MOVQ   xp+8(FP), DI \
	MOVQ   xstride+16(FP), BX \
	MOVQ   scales+24(FP), R8 \
	MOVQ   biases+32(FP), R9 \
	MOVQ   gsum4+40(FP), R10 \
	MOVQ   groups+56(FP), R11 \
	MOVQ   gs+64(FP), R15 \
	SHRQ   $4, R15 \
	LEAQ   (DI)(BX*1), R12 \
	LEAQ   (DI)(BX*2), R13 \
	LEAQ   (R12)(BX*2), R14 \
	XORQ   AX, AX \
	VXORPS Y4, Y4, Y4 \
	VXORPS Y5, Y5, Y5 \
	VXORPS Y6, Y6, Y6 \
	VXORPS Y7, Y7, Y7 \
	VXORPS X12, X12, X12

#define ROW4_GROUP_START \
	VXORPS Y0, Y0, Y0 \
	VXORPS Y1, Y1, Y1 \
	VXORPS Y2, Y2, Y2 \
	VXORPS Y3, Y3, Y3 \
	VXORPS Y10, Y10, Y10 \
	VXORPS Y11, Y11, Y11 \
	VXORPS Y13, Y13, Y13 \
	VXORPS Y14, Y14, Y14 \
	MOVQ   R15, CX

// func dotF32AVX2(a, b *float32, n int) float32
// n is a multiple of 32.
TEXT ·dotF32AVX2(SB), NOSPLIT, $0-28
	MOVQ   a+0(FP), SI
	MOVQ   b+8(FP), DI
	MOVQ   n+16(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	SHRQ   $5, CX
	JZ     dotf32done

dotf32loop:
	VMOVUPS     (SI), Y4
	VMOVUPS     32(SI), Y5
	VMOVUPS     64(SI), Y6
	VMOVUPS     96(SI), Y7
	VFMADD231PS (DI), Y4, Y0
	VFMADD231PS 32(DI), Y5, Y1
	VFMADD231PS 64(DI), Y6, Y2
	VFMADD231PS 96(DI), Y7, Y3
	ADDQ        $128, SI
	ADDQ        $128, DI
	DECQ        CX
	JNZ         dotf32loop

dotf32done:
	VADDPS Y1, Y0, Y0
	VADDPS Y3, Y2, Y2
	VADDPS Y2, Y0, Y0
	HSUM_Y0
	VMOVSS X0, ret+24(FP)
	VZEROUPPER
	RET

// func dotBF16AVX2(w *uint16, x *float32, n int) float32
// n is a multiple of 32.
TEXT ·dotBF16AVX2(SB), NOSPLIT, $0-28
	MOVQ   w+0(FP), SI
	MOVQ   x+8(FP), DI
	MOVQ   n+16(FP), CX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	SHRQ   $5, CX
	JZ     dotbf16done

dotbf16loop:
	VPMOVZXWD   (SI), Y4
	VPMOVZXWD   16(SI), Y5
	VPMOVZXWD   32(SI), Y6
	VPMOVZXWD   48(SI), Y7
	VPSLLD      $16, Y4, Y4
	VPSLLD      $16, Y5, Y5
	VPSLLD      $16, Y6, Y6
	VPSLLD      $16, Y7, Y7
	VFMADD231PS (DI), Y4, Y0
	VFMADD231PS 32(DI), Y5, Y1
	VFMADD231PS 64(DI), Y6, Y2
	VFMADD231PS 96(DI), Y7, Y3
	ADDQ        $64, SI
	ADDQ        $128, DI
	DECQ        CX
	JNZ         dotbf16loop

dotbf16done:
	VADDPS Y1, Y0, Y0
	VADDPS Y3, Y2, Y2
	VADDPS Y2, Y0, Y0
	HSUM_Y0
	VMOVSS X0, ret+24(FP)
	VZEROUPPER
	RET

// func q4RowAVX2(packed *byte, xperm, scales, biases, gsum unsafe.Pointer, groups, gs int) float32
// One row of a 4-bit affine matrix dotted with x: Σ_g s_g·Σ(q·x) + b_g·gsum_g.
// xperm is x permuted per 16 elements as [x0 x2 … x14 x1 x3 … x15] so that the
// low nibbles of 8 bytes meet the even elements and the high nibbles the odd
// ones. gs is a multiple of 32.
TEXT ·q4RowAVX2(SB), NOSPLIT, $0-60
	AFFINE_PROLOGUE
	MOVL         $15, AX
	VMOVD        AX, X15
	VPBROADCASTD X15, Y15

q4group:
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	MOVQ   R12, CX

q4step:
	ROW_PREFETCH
	VPMOVZXBD   (SI), Y3
	VPMOVZXBD   8(SI), Y11
	VPAND       Y15, Y3, Y4
	VPSRLD      $4, Y3, Y5
	VPAND       Y15, Y11, Y12
	VPSRLD      $4, Y11, Y13
	VCVTDQ2PS   Y4, Y4
	VCVTDQ2PS   Y5, Y5
	VCVTDQ2PS   Y12, Y12
	VCVTDQ2PS   Y13, Y13
	VFMADD231PS (DI), Y4, Y1
	VFMADD231PS 32(DI), Y5, Y2
	VFMADD231PS 64(DI), Y12, Y9
	VFMADD231PS 96(DI), Y13, Y10
	ADDQ        $16, SI
	ADDQ        $128, DI
	DECQ        CX
	JNZ         q4step
	VADDPS      Y2, Y1, Y1
	VADDPS      Y10, Y9, Y9
	VADDPS      Y9, Y1, Y1
	AFFINE_GROUP_END
	DECQ        R11
	JNZ         q4group
	AFFINE_EPILOGUE

// func q8RowAVX2(packed *byte, xperm, scales, biases, gsum unsafe.Pointer, groups, gs int) float32
// As q4RowAVX2 for 8-bit codes; x is in natural order.
TEXT ·q8RowAVX2(SB), NOSPLIT, $0-60
	AFFINE_PROLOGUE

q8group:
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	MOVQ   R12, CX

q8step:
	ROW_PREFETCH
	VPMOVZXBD   (SI), Y4
	VPMOVZXBD   8(SI), Y5
	VPMOVZXBD   16(SI), Y12
	VPMOVZXBD   24(SI), Y13
	VCVTDQ2PS   Y4, Y4
	VCVTDQ2PS   Y5, Y5
	VCVTDQ2PS   Y12, Y12
	VCVTDQ2PS   Y13, Y13
	VFMADD231PS (DI), Y4, Y1
	VFMADD231PS 32(DI), Y5, Y2
	VFMADD231PS 64(DI), Y12, Y9
	VFMADD231PS 96(DI), Y13, Y10
	ADDQ        $32, SI
	ADDQ        $128, DI
	DECQ        CX
	JNZ         q8step
	VADDPS      Y2, Y1, Y1
	VADDPS      Y10, Y9, Y9
	VADDPS      Y9, Y1, Y1
	AFFINE_GROUP_END
	DECQ        R11
	JNZ         q8group
	AFFINE_EPILOGUE

// func q2RowAVX2(packed *byte, xperm, scales, biases, gsum unsafe.Pointer, groups, gs int) float32
// As q4RowAVX2 for 2-bit codes; xperm is x permuted per 32 elements so that
// entry 8k+j is x[4j+k] (code k of byte j).
TEXT ·q2RowAVX2(SB), NOSPLIT, $0-60
	AFFINE_PROLOGUE
	MOVL         $3, AX
	VMOVD        AX, X15
	VPBROADCASTD X15, Y15

q2group:
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	MOVQ   R12, CX

q2step:
	ROW_PREFETCH
	VPMOVZXBD   (SI), Y3
	VPAND       Y15, Y3, Y4
	VPSRLD      $2, Y3, Y5
	VPAND       Y15, Y5, Y5
	VPSRLD      $4, Y3, Y12
	VPAND       Y15, Y12, Y12
	VPSRLD      $6, Y3, Y13
	VCVTDQ2PS   Y4, Y4
	VCVTDQ2PS   Y5, Y5
	VCVTDQ2PS   Y12, Y12
	VCVTDQ2PS   Y13, Y13
	VFMADD231PS (DI), Y4, Y1
	VFMADD231PS 32(DI), Y5, Y2
	VFMADD231PS 64(DI), Y12, Y9
	VFMADD231PS 96(DI), Y13, Y10
	ADDQ        $8, SI
	ADDQ        $128, DI
	DECQ        CX
	JNZ         q2step
	VADDPS      Y2, Y1, Y1
	VADDPS      Y10, Y9, Y9
	VADDPS      Y9, Y1, Y1
	AFFINE_GROUP_END
	DECQ        R11
	JNZ         q2group
	AFFINE_EPILOGUE

// func axpyAVX2(y, x *float32, n int, a float32)
// y[i] += a·x[i]; n is a multiple of 16.
TEXT ·axpyAVX2(SB), NOSPLIT, $0-28
	MOVQ         y+0(FP), DI
	MOVQ         x+8(FP), SI
	MOVQ         n+16(FP), CX
	VBROADCASTSS a+24(FP), Y0
	SHRQ         $4, CX
	JZ           axpydone

axpyloop:
	VMOVUPS     (DI), Y1
	VMOVUPS     32(DI), Y2
	VFMADD231PS (SI), Y0, Y1
	VFMADD231PS 32(SI), Y0, Y2
	VMOVUPS     Y1, (DI)
	VMOVUPS     Y2, 32(DI)
	ADDQ        $64, SI
	ADDQ        $64, DI
	DECQ        CX
	JNZ         axpyloop

axpydone:
	VZEROUPPER
	RET

// func decayReadAVX2(s, mem *float32, n int, alpha, k float32)
// s[i] *= alpha; mem[i] += s[i]·k — the GatedDeltaNet decay fused with the
// memory read of one state row. n is a multiple of 8.
TEXT ·decayReadAVX2(SB), NOSPLIT, $0-32
	MOVQ         s+0(FP), DI
	MOVQ         mem+8(FP), SI
	MOVQ         n+16(FP), CX
	VBROADCASTSS alpha+24(FP), Y0
	VBROADCASTSS k+28(FP), Y1
	SHRQ         $3, CX
	JZ           decaydone

decayloop:
	VMULPS      (DI), Y0, Y2
	VMOVUPS     Y2, (DI)
	VMOVUPS     (SI), Y3
	VFMADD231PS Y2, Y1, Y3
	VMOVUPS     Y3, (SI)
	ADDQ        $32, SI
	ADDQ        $32, DI
	DECQ        CX
	JNZ         decayloop

decaydone:
	VZEROUPPER
	RET

// func updateReadAVX2(s, delta, o *float32, n int, k, q float32)
// s[i] += k·delta[i]; o[i] += s[i]·q — the delta-rule update fused with the
// read-out of one state row. n is a multiple of 8.
TEXT ·updateReadAVX2(SB), NOSPLIT, $0-40
	MOVQ         s+0(FP), DI
	MOVQ         delta+8(FP), SI
	MOVQ         o+16(FP), DX
	MOVQ         n+24(FP), CX
	VBROADCASTSS k+32(FP), Y0
	VBROADCASTSS q+36(FP), Y1
	SHRQ         $3, CX
	JZ           updatedone

updateloop:
	VMOVUPS     (DI), Y2
	VFMADD231PS (SI), Y0, Y2
	VMOVUPS     Y2, (DI)
	VMOVUPS     (DX), Y3
	VFMADD231PS Y2, Y1, Y3
	VMOVUPS     Y3, (DX)
	ADDQ        $32, SI
	ADDQ        $32, DI
	ADDQ        $32, DX
	DECQ        CX
	JNZ         updateloop

updatedone:
	VZEROUPPER
	RET

// func q4Row4AVX2(packed *byte, xp unsafe.Pointer, xstride int, scales, biases, gsum4, out unsafe.Pointer, groups, gs int)
// One row of a 4-bit affine matrix dotted with four tokens' permuted x (token
// t at xp + t·xstride bytes), decoding each block of codes once. gsum4 holds
// the group sums interleaved [group][token]; out receives the four results.
// gs is a multiple of 16.
TEXT ·q4Row4AVX2(SB), NOSPLIT, $0-72
	ROW4_PROLOGUE
	MOVL         $15, DX
	VMOVD        DX, X15
	VPBROADCASTD X15, Y15

q4x4group:
	ROW4_GROUP_START

q4x4step:
	VPMOVZXBD   (SI), Y8
	VPAND       Y15, Y8, Y9
	VPSRLD      $4, Y8, Y8
	VCVTDQ2PS   Y9, Y9
	VCVTDQ2PS   Y8, Y8
	VFMADD231PS (DI)(AX*1), Y9, Y0
	VFMADD231PS 32(DI)(AX*1), Y8, Y10
	VFMADD231PS (R12)(AX*1), Y9, Y1
	VFMADD231PS 32(R12)(AX*1), Y8, Y11
	VFMADD231PS (R13)(AX*1), Y9, Y2
	VFMADD231PS 32(R13)(AX*1), Y8, Y13
	VFMADD231PS (R14)(AX*1), Y9, Y3
	VFMADD231PS 32(R14)(AX*1), Y8, Y14
	ADDQ        $8, SI
	ADDQ        $64, AX
	DECQ        CX
	JNZ         q4x4step
	ROW4_GROUP_END
	DECQ        R11
	JNZ         q4x4group
	ROW4_FINISH

// func q8Row4AVX2(packed *byte, xp unsafe.Pointer, xstride int, scales, biases, gsum4, out unsafe.Pointer, groups, gs int)
// As q4Row4AVX2 for 8-bit codes (x in natural order); gs is a multiple of 16.
TEXT ·q8Row4AVX2(SB), NOSPLIT, $0-72
	ROW4_PROLOGUE

q8x4group:
	ROW4_GROUP_START

q8x4step:
	VPMOVZXBD   (SI), Y8
	VPMOVZXBD   8(SI), Y9
	VCVTDQ2PS   Y8, Y8
	VCVTDQ2PS   Y9, Y9
	VFMADD231PS (DI)(AX*1), Y8, Y0
	VFMADD231PS 32(DI)(AX*1), Y9, Y10
	VFMADD231PS (R12)(AX*1), Y8, Y1
	VFMADD231PS 32(R12)(AX*1), Y9, Y11
	VFMADD231PS (R13)(AX*1), Y8, Y2
	VFMADD231PS 32(R13)(AX*1), Y9, Y13
	VFMADD231PS (R14)(AX*1), Y8, Y3
	VFMADD231PS 32(R14)(AX*1), Y9, Y14
	ADDQ        $16, SI
	ADDQ        $64, AX
	DECQ        CX
	JNZ         q8x4step
	ROW4_GROUP_END
	DECQ        R11
	JNZ         q8x4group
	ROW4_FINISH

// func bf16Row4AVX2(w *uint16, xp unsafe.Pointer, xstride int, out unsafe.Pointer, n int)
// One bf16 row dotted with four tokens' x (token t at xp + t·xstride bytes),
// converting each block of weights once. n is a multiple of 16.
TEXT ·bf16Row4AVX2(SB), NOSPLIT, $0-40
	MOVQ   w+0(FP), SI
	MOVQ   xp+8(FP), DI
	MOVQ   xstride+16(FP), BX
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

bf16x4step:
	VPMOVZXWD   (SI), Y8
	VPMOVZXWD   16(SI), Y9
	VPSLLD      $16, Y8, Y8
	VPSLLD      $16, Y9, Y9
	VFMADD231PS (DI)(AX*1), Y8, Y0
	VFMADD231PS 32(DI)(AX*1), Y9, Y4
	VFMADD231PS (R12)(AX*1), Y8, Y1
	VFMADD231PS 32(R12)(AX*1), Y9, Y5
	VFMADD231PS (R13)(AX*1), Y8, Y2
	VFMADD231PS 32(R13)(AX*1), Y9, Y6
	VFMADD231PS (R14)(AX*1), Y8, Y3
	VFMADD231PS 32(R14)(AX*1), Y9, Y7
	ADDQ        $32, SI
	ADDQ        $64, AX
	DECQ        CX
	JNZ         bf16x4step

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

// Per-lane shifts that spread 8 three-bit codes of a 24-bit word over 8 lanes.
DATA shift3<>+0(SB)/4, $0
DATA shift3<>+4(SB)/4, $3
DATA shift3<>+8(SB)/4, $6
DATA shift3<>+12(SB)/4, $9
DATA shift3<>+16(SB)/4, $12
DATA shift3<>+20(SB)/4, $15
DATA shift3<>+24(SB)/4, $18
DATA shift3<>+28(SB)/4, $21
GLOBL shift3<>(SB), RODATA|NOPTR, $32

// func q3RowAVX2(packed *byte, xperm, scales, biases, gsum unsafe.Pointer, groups, gs int) float32
// As q4RowAVX2 for 3-bit codes, x in natural order: each 8 codes are 3 bytes,
// loaded as a broadcast 32-bit word (one byte past the block is read, so the
// caller keeps the last block of the data away from the end of its buffer)
// and spread over the lanes with per-lane shifts. gs is a multiple of 32.
TEXT ·q3RowAVX2(SB), NOSPLIT, $0-60
	AFFINE_PROLOGUE
	MOVL         $7, AX
	VMOVD        AX, X15
	VPBROADCASTD X15, Y15
	VMOVDQU      shift3<>(SB), Y14

q3group:
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	MOVQ   R12, CX

q3step:
	ROW_PREFETCH
	VPBROADCASTD (SI), Y4
	VPBROADCASTD 3(SI), Y5
	VPBROADCASTD 6(SI), Y12
	VPBROADCASTD 9(SI), Y13
	VPSRLVD      Y14, Y4, Y4
	VPSRLVD      Y14, Y5, Y5
	VPSRLVD      Y14, Y12, Y12
	VPSRLVD      Y14, Y13, Y13
	VPAND        Y15, Y4, Y4
	VPAND        Y15, Y5, Y5
	VPAND        Y15, Y12, Y12
	VPAND        Y15, Y13, Y13
	VCVTDQ2PS    Y4, Y4
	VCVTDQ2PS    Y5, Y5
	VCVTDQ2PS    Y12, Y12
	VCVTDQ2PS    Y13, Y13
	VFMADD231PS  (DI), Y4, Y1
	VFMADD231PS  32(DI), Y5, Y2
	VFMADD231PS  64(DI), Y12, Y9
	VFMADD231PS  96(DI), Y13, Y10
	ADDQ         $12, SI
	ADDQ         $128, DI
	DECQ         CX
	JNZ          q3step
	VADDPS       Y2, Y1, Y1
	VADDPS       Y10, Y9, Y9
	VADDPS       Y9, Y1, Y1
	AFFINE_GROUP_END
	DECQ         R11
	JNZ          q3group
	AFFINE_EPILOGUE

// func readSumAVX2(p *byte, n int) uint64
// As readSumAVX512 with YMM loads; n is a multiple of 128.
TEXT ·readSumAVX2(SB), NOSPLIT, $0-24
	MOVQ   p+0(FP), SI
	MOVQ   n+8(FP), CX
	VPXOR  Y0, Y0, Y0
	VPXOR  Y1, Y1, Y1
	VPXOR  Y2, Y2, Y2
	VPXOR  Y3, Y3, Y3
	SHRQ   $7, CX
	JZ     readdone

readloop:
	VPADDQ (SI), Y0, Y0
	VPADDQ 32(SI), Y1, Y1
	VPADDQ 64(SI), Y2, Y2
	VPADDQ 96(SI), Y3, Y3
	ADDQ   $128, SI
	DECQ   CX
	JNZ    readloop

readdone:
	VPADDQ       Y1, Y0, Y0
	VPADDQ       Y3, Y2, Y2
	VPADDQ       Y2, Y0, Y0
	VEXTRACTI128 $1, Y0, X1
	VPADDQ       X1, X0, X0
	VPSHUFD      $0x4e, X0, X1
	VPADDQ       X1, X0, X0
	VMOVQ        X0, AX
	MOVQ         AX, ret+16(FP)
	VZEROUPPER
	RET

// func scaledMulAVX2(dst, x, w *float32, n int, s float32)
// dst[i] = x[i]·s·w[i], rounded after each product as Go rounds
// x[i] * s * w[i] (n a multiple of 16; dst may be x): RMSNorm's scaling.
TEXT ·scaledMulAVX2(SB), NOSPLIT, $0-36
	MOVQ         dst+0(FP), DI
	MOVQ         x+8(FP), SI
	MOVQ         w+16(FP), DX
	MOVQ         n+24(FP), CX
	VBROADCASTSS s+32(FP), Y0
	SHRQ         $4, CX
	JZ           scaledmuldone

scaledmulstep:
	VMULPS  (SI), Y0, Y1
	VMULPS  32(SI), Y0, Y2
	VMULPS  (DX), Y1, Y1
	VMULPS  32(DX), Y2, Y2
	VMOVUPS Y1, (DI)
	VMOVUPS Y2, 32(DI)
	ADDQ    $64, SI
	ADDQ    $64, DX
	ADDQ    $64, DI
	DECQ    CX
	JNZ     scaledmulstep

scaledmuldone:
	VZEROUPPER
	RET
