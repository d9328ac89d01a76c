//go:build !noasm

#include "textflag.h"
#include "rowprefetch_amd64.h"

// AVX-512 kernels (AVX512F; the 3-bit one also AVX512VBMI). The affine ones
// dequantize through a 16-entry table: for each group, T[i] = s·(i mod 2^bits) + b
// is built in one ZMM register, and VPERMPS, which uses only the low four bits
// of each index lane, turns a lane holding the code (plus higher bits of the
// same byte) straight into its dequantized float32 weight. No AND, no integer
// to float conversion, and no per-group reduction: Σ w·x accumulates across
// the whole row. The tables are replicated so that the stray bits above a 2- or
// 3-bit code select the same entry.

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

// The multi-row affine kernels walk rows consecutive rows (their codes,
// scales and biases are contiguous) and store row r's dot product at y[r],
// prefetching ahead of their weights (ROW_PREFETCH, rowprefetch_amd64.h).

#define ROW_PROLOGUE \
	MOVQ packed+0(FP), SI \
	MOVQ scales+16(FP), R8 \
	MOVQ biases+24(FP), R9 \
	MOVQ y+32(FP), DX \
	MOVQ rows+40(FP), R13 \
	MOVQ reps+56(FP), R12

// ROW_START resets x and the accumulators at the start of each row.
#define ROW_START \
	MOVQ x+8(FP), DI \
	MOVQ groups+48(FP), R11 \
	ZERO4

// TABLE builds the group's dequantization table in Z4 from iota in Z15 and
// advances the scale and bias pointers.
#define TABLE \
	VBROADCASTSS (R8), Z4 \
	VBROADCASTSS (R9), Z5 \
	VFMADD213PS  Z5, Z15, Z4 \
	ADDQ         $4, R8 \
	ADDQ         $4, R9

// ROW_END stores the row's sum and loops to label l while rows remain.
#define ROW_END(l) \
	HSUM4_Z0 \
	VMOVSS X0, (DX) \
	ADDQ   $4, DX \
	DECQ   R13 \
	JNZ    l \
	VZEROUPPER \
	RET

// Four-token kernels: one row against four tokens (token t's x at
// xp + t·xstride bytes), decoding each block of weights once. Z0..Z3 and
// Z16..Z19 accumulate (two chains per token); the results go to out[0..3].

#define ROW4Z_PROLOGUE \
	MOVQ   xp+8(FP), DI \
	MOVQ   xstride+16(FP), BX \
	LEAQ   (DI)(BX*1), R12 \
	LEAQ   (DI)(BX*2), R13 \
	LEAQ   (R12)(BX*2), R14 \
	XORQ   AX, AX \
	ZERO4 \
	VPXORD Z16, Z16, Z16 \
	VPXORD Z17, Z17, Z17 \
	VPXORD Z18, Z18, Z18 \
	VPXORD Z19, Z19, Z19

// ROW4Z_FINISH reduces the accumulators to four floats at out (in DX).
#define ROW4Z_FINISH \
	ROW4Z_REDUCE \
	VZEROUPPER \
	RET

// ROW4Z_REDUCE is ROW4Z_FINISH without the return.
#define ROW4Z_REDUCE \
	VADDPS        Z16, Z0, Z0 \
	VADDPS        Z17, Z1, Z1 \
	VADDPS        Z18, Z2, Z2 \
	VADDPS        Z19, Z3, Z3 \
	VEXTRACTF64X4 $1, Z0, Y8 \
	VADDPS        Y8, Y0, Y0 \
	VEXTRACTF64X4 $1, Z1, Y8 \
	VADDPS        Y8, Y1, Y1 \
	VEXTRACTF64X4 $1, Z2, Y8 \
	VADDPS        Y8, Y2, Y2 \
	VEXTRACTF64X4 $1, Z3, Y8 \
	VADDPS        Y8, Y3, Y3 \
	VEXTRACTF128  $1, Y0, X8 \
	VADDPS        X8, X0, X0 \
	VEXTRACTF128  $1, Y1, X8 \
	VADDPS        X8, X1, X1 \
	VEXTRACTF128  $1, Y2, X8 \
	VADDPS        X8, X2, X2 \
	VEXTRACTF128  $1, Y3, X8 \
	VADDPS        X8, X3, X3 \
	VHADDPS       X1, X0, X0 \
	VHADDPS       X3, X2, X2 \
	VHADDPS       X2, X0, X0 \
	VMOVUPS       X0, (DX)

// ROW_FMA_TOKEN feeds the four decoded vectors Z6..Z9 (64 weights) to the
// token whose block is at P+AX: vector k meets its 16 floats at byte offset
// 64k, vectors 0 and 2 accumulating into A, 1 and 3 into B.
#define ROW_FMA_TOKEN(P, A, B) \
	VFMADD231PS (P)(AX*1), Z6, A \
	VFMADD231PS 64(P)(AX*1), Z7, B \
	VFMADD231PS 128(P)(AX*1), Z8, A \
	VFMADD231PS 192(P)(AX*1), Z9, B

// ROW4Z_FMA16 feeds Z6..Z9 to the four tokens at DI, R12, R13 and R14.
#define ROW4Z_FMA16 \
	ROW_FMA_TOKEN(DI, Z0, Z16) \
	ROW_FMA_TOKEN(R12, Z1, Z17) \
	ROW_FMA_TOKEN(R13, Z2, Z18) \
	ROW_FMA_TOKEN(R14, Z3, Z19)

#define ROW4Z_ARGS \
	MOVQ packed+0(FP), SI \
	MOVQ scales+24(FP), R8 \
	MOVQ biases+32(FP), R9 \
	MOVQ out+40(FP), DX \
	MOVQ groups+48(FP), R11 \
	MOVQ reps+56(FP), R15

// ROW4Z_PART_START(l): the accumulators loaded from acc (R10) when flags
// (CX) has bit 0 set (l: a label past the loads). Each kernel loads R10 and
// CX from its own frame first.
#define ROW4Z_PART_START(l) \
	TESTQ   $1, CX \
	JZ      l \
	VMOVUPS (R10), Z0 \
	VMOVUPS 64(R10), Z1 \
	VMOVUPS 128(R10), Z2 \
	VMOVUPS 192(R10), Z3 \
	VMOVUPS 256(R10), Z16 \
	VMOVUPS 320(R10), Z17 \
	VMOVUPS 384(R10), Z18 \
	VMOVUPS 448(R10), Z19

// ROW4Z_PART_END(l): the accumulators reduced into out when flags (CX,
// reloaded by the kernel) has bit 1 set, else stored back to acc (R10); l: a
// label for the reduction.
#define ROW4Z_PART_END(l) \
	TESTQ   $2, CX \
	JNZ     l \
	VMOVUPS Z0, (R10) \
	VMOVUPS Z1, 64(R10) \
	VMOVUPS Z2, 128(R10) \
	VMOVUPS Z3, 192(R10) \
	VMOVUPS Z16, 256(R10) \
	VMOVUPS Z17, 320(R10) \
	VMOVUPS Z18, 384(R10) \
	VMOVUPS Z19, 448(R10) \
	VZEROUPPER \
	RET \
l: \
	ROW4Z_FINISH

// Q4_COUNTS loads the per-lane shift counts of the four 4-bit decode steps
// into Z10..Z13 (clobbers Z14).
#define Q4_COUNTS \
	VMOVDQU32    q4shift<>(SB), Z10 \
	VPBROADCASTD q4eight<>(SB), Z14 \
	VPADDD       Z14, Z10, Z11 \
	VPADDD       Z14, Z11, Z12 \
	VPADDD       Z14, Z12, Z13

// Q4_DECODE64 turns the 32 bytes of codes at SI into 64 weights in Z6..Z9
// through the table in Z4.
#define Q4_DECODE64 \
	VBROADCASTI64X4 (SI), Z5 \
	VPSRLVD         Z10, Z5, Z6 \
	VPSRLVD         Z11, Z5, Z7 \
	VPSRLVD         Z12, Z5, Z8 \
	VPSRLVD         Z13, Z5, Z9 \
	VPERMPS         Z4, Z6, Z6 \
	VPERMPS         Z4, Z7, Z7 \
	VPERMPS         Z4, Z8, Z8 \
	VPERMPS         Z4, Z9, Z9

// func q4RowsAVX512(packed *byte, x, scales, biases, y unsafe.Pointer, rows, groups, reps int)
// Consecutive 4-bit affine rows, each dotted with x. Each 32 bytes of codes
// (64 codes) are broadcast to both halves of a ZMM register; VPSRLVD by
// (0|4), (8|12), (16|20), (24|28) bits per half brings codes 8j+2k (lanes
// j < 8) and 8j+2k+1 (lanes j ≥ 8) of the 32-bit word j to the low nibble,
// so x is permuted per 64 elements as entry 16k+j = x[8j+2k] (j < 8),
// x[8(j−8)+2k+1] (j ≥ 8) (permuteX(…, 4, 16)). This measured 1.37× the
// VPMOVZXBD form (25.4 vs 18.5 GB/s, one core, L2-resident). reps is
// GroupSize/64.
TEXT ·q4RowsAVX512(SB), NOSPLIT, $0-64
	ROW_PROLOGUE
	VMOVUPS iota4<>(SB), Z15
	Q4_COUNTS

q4zrow:
	ROW_START

q4zgroup:
	TABLE
	MOVQ R12, CX

q4zstep:
	ROW_PREFETCH
	Q4_DECODE64
	VFMADD231PS (DI), Z6, Z0
	VFMADD231PS 64(DI), Z7, Z1
	VFMADD231PS 128(DI), Z8, Z2
	VFMADD231PS 192(DI), Z9, Z3
	ADDQ        $32, SI
	ADDQ        $256, DI
	DECQ        CX
	JNZ         q4zstep
	DECQ        R11
	JNZ         q4zgroup
	ROW_END(q4zrow)

// func q2RowsAVX512(packed *byte, x, scales, biases, y unsafe.Pointer, rows, groups, reps int)
// As q4RowAVX512 for 2-bit codes; x permuted per 64 elements so that entry
// 16k+j is x[4j+k] (code k of byte j). reps is GroupSize/64 (16 bytes each).
TEXT ·q2RowsAVX512(SB), NOSPLIT, $0-64
	ROW_PROLOGUE
	VMOVUPS iota2<>(SB), Z15

q2zrow:
	ROW_START

q2zgroup:
	TABLE
	MOVQ R12, CX

q2zstep:
	ROW_PREFETCH
	VPMOVZXBD   (SI), Z6
	VPSRLD      $2, Z6, Z7
	VPSRLD      $4, Z6, Z8
	VPSRLD      $6, Z6, Z9
	VPERMPS     Z4, Z6, Z6
	VPERMPS     Z4, Z7, Z7
	VPERMPS     Z4, Z8, Z8
	VPERMPS     Z4, Z9, Z9
	VFMADD231PS (DI), Z6, Z0
	VFMADD231PS 64(DI), Z7, Z1
	VFMADD231PS 128(DI), Z8, Z2
	VFMADD231PS 192(DI), Z9, Z3
	ADDQ        $16, SI
	ADDQ        $256, DI
	DECQ        CX
	JNZ         q2zstep
	DECQ        R11
	JNZ         q2zgroup
	ROW_END(q2zrow)

// func q8RowsAVX512(packed *byte, x, scales, biases, y unsafe.Pointer, rows, groups, reps int)
// As q4RowAVX512 for byte codes, x in natural order: w = s·float(q) + b.
// reps is GroupSize/64 (64 bytes each).
TEXT ·q8RowsAVX512(SB), NOSPLIT, $0-64
	ROW_PROLOGUE

q8zrow:
	ROW_START

q8zgroup:
	VBROADCASTSS (R8), Z4
	VBROADCASTSS (R9), Z5
	ADDQ         $4, R8
	ADDQ         $4, R9
	MOVQ         R12, CX

q8zstep:
	ROW_PREFETCH
	VPMOVZXBD   (SI), Z6
	VPMOVZXBD   16(SI), Z7
	VPMOVZXBD   32(SI), Z8
	VPMOVZXBD   48(SI), Z9
	VCVTDQ2PS   Z6, Z6
	VCVTDQ2PS   Z7, Z7
	VCVTDQ2PS   Z8, Z8
	VCVTDQ2PS   Z9, Z9
	VFMADD213PS Z5, Z4, Z6
	VFMADD213PS Z5, Z4, Z7
	VFMADD213PS Z5, Z4, Z8
	VFMADD213PS Z5, Z4, Z9
	VFMADD231PS (DI), Z6, Z0
	VFMADD231PS 64(DI), Z7, Z1
	VFMADD231PS 128(DI), Z8, Z2
	VFMADD231PS 192(DI), Z9, Z3
	ADDQ        $64, SI
	ADDQ        $256, DI
	DECQ        CX
	JNZ         q8zstep
	DECQ        R11
	JNZ         q8zgroup
	ROW_END(q8zrow)

// func q3RowsAVX512(packed *byte, x, scales, biases, y unsafe.Pointer, rows, groups, reps int)
// As q4RowAVX512 for 3-bit codes, x in natural order. Each 64 codes are 24
// bytes, loaded as 32 (so 8 bytes past the block are read: the caller keeps
// the last row of the data away from the end of its buffer); VPERMB gathers
// the four bytes around each code into its lane and VPSRLVD aligns it.
// reps is GroupSize/64. Needs AVX512VBMI.
TEXT ·q3RowsAVX512(SB), NOSPLIT, $0-64
	ROW_PROLOGUE
	VMOVUPS iota3<>(SB), Z15
	VMOVDQU64 gather3s0<>(SB), Z20
	VMOVDQU64 gather3s1<>(SB), Z21
	VMOVDQU64 gather3s2<>(SB), Z22
	VMOVDQU64 gather3s3<>(SB), Z23
	VMOVDQU64 shift3z<>(SB), Z24

q3zrow:
	ROW_START

q3zgroup:
	TABLE
	MOVQ R12, CX

q3zstep:
	ROW_PREFETCH
	VMOVDQU     (SI), Y10
	VPERMB      Z10, Z20, Z6
	VPERMB      Z10, Z21, Z7
	VPERMB      Z10, Z22, Z8
	VPERMB      Z10, Z23, Z9
	VPSRLVD     Z24, Z6, Z6
	VPSRLVD     Z24, Z7, Z7
	VPSRLVD     Z24, Z8, Z8
	VPSRLVD     Z24, Z9, Z9
	VPERMPS     Z4, Z6, Z6
	VPERMPS     Z4, Z7, Z7
	VPERMPS     Z4, Z8, Z8
	VPERMPS     Z4, Z9, Z9
	VFMADD231PS (DI), Z6, Z0
	VFMADD231PS 64(DI), Z7, Z1
	VFMADD231PS 128(DI), Z8, Z2
	VFMADD231PS 192(DI), Z9, Z3
	ADDQ        $24, SI
	ADDQ        $256, DI
	DECQ        CX
	JNZ         q3zstep
	DECQ        R11
	JNZ         q3zgroup
	ROW_END(q3zrow)

// func dotF32AVX512(a, b *float32, n int) float32
// n is a multiple of 64.
TEXT ·dotF32AVX512(SB), NOSPLIT, $0-28
	MOVQ a+0(FP), SI
	MOVQ b+8(FP), DI
	MOVQ n+16(FP), CX
	ZERO4
	SHRQ $6, CX
	JZ   dotf32zdone

dotf32zloop:
	VMOVUPS     (SI), Z4
	VMOVUPS     64(SI), Z5
	VMOVUPS     128(SI), Z6
	VMOVUPS     192(SI), Z7
	VFMADD231PS (DI), Z4, Z0
	VFMADD231PS 64(DI), Z5, Z1
	VFMADD231PS 128(DI), Z6, Z2
	VFMADD231PS 192(DI), Z7, Z3
	ADDQ        $256, SI
	ADDQ        $256, DI
	DECQ        CX
	JNZ         dotf32zloop

dotf32zdone:
	HSUM4_Z0
	VMOVSS X0, ret+24(FP)
	VZEROUPPER
	RET

// func dotBF16AVX512(w *uint16, x *float32, n int) float32
// n is a multiple of 64.
TEXT ·dotBF16AVX512(SB), NOSPLIT, $0-28
	MOVQ w+0(FP), SI
	MOVQ x+8(FP), DI
	MOVQ n+16(FP), CX
	ZERO4
	SHRQ $6, CX
	JZ   dotbf16zdone

dotbf16zloop:
	ROW_PREFETCH
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
	JNZ         dotbf16zloop

dotbf16zdone:
	HSUM4_Z0
	VMOVSS X0, ret+24(FP)
	VZEROUPPER
	RET

// The four-token kernels (q4Row4AVX512 and its 8-, 2- and 3-bit twins) are
// resumable: a call walks some of a row's groups. With flags bit 0 the eight
// accumulators start from the 512 bytes at acc (else from zero); with bit 1
// they are reduced into out[0..3] at the end (else stored back to acc). A
// row walked in parts meets every FMA of a one-call walk in the same order,
// so the results are the same bit for bit; the caller then keeps each part's
// x (four tokens' columns of the part) in L1 across rows, where a whole row
// of 4096 columns (64 KB of x) did not fit (affineRows4Split). A whole row:
// acc nil, flags 2 (affineRow4Wide).

// func q4Row4AVX512(packed *byte, xp unsafe.Pointer, xstride int, scales, biases, out unsafe.Pointer, groups, reps int, acc unsafe.Pointer, flags int)
// x permuted as for q4RowsAVX512; reps is GroupSize/64 (32 bytes each).
TEXT ·q4Row4AVX512(SB), NOSPLIT, $0-80
	ROW4Z_PROLOGUE
	ROW4Z_ARGS
	MOVQ acc+64(FP), R10
	MOVQ flags+72(FP), CX
	ROW4Z_PART_START(q4x4zstart)

q4x4zstart:
	VMOVUPS iota4<>(SB), Z15
	Q4_COUNTS

q4x4zgroup:
	TABLE
	MOVQ R15, CX

q4x4zstep:
	Q4_DECODE64
	ROW4Z_FMA16
	ADDQ $32, SI
	ADDQ $256, AX
	DECQ CX
	JNZ  q4x4zstep
	DECQ R11
	JNZ  q4x4zgroup
	MOVQ flags+72(FP), CX
	ROW4Z_PART_END(q4x4zreduce)

// func q4Row8AVX512(packed *byte, xp unsafe.Pointer, xstride int, scales, biases, out unsafe.Pointer, groups, reps int)
// q4Row4AVX512 for eight tokens (out[0..7]): each block of 64 weights is
// decoded once for all eight. Tokens 0–3 accumulate exactly as in
// q4Row4AVX512 (Z0..Z3, Z16..Z19) and tokens 4–7 the same way in Z20..Z23,
// Z24..Z27, and each group of four is reduced by the same code, so every
// result is q4Row4AVX512's bit for bit. Tokens 4–7 are addressed from R10,
// R15, DX and BX, which the four-token kernel keeps for reps, out and the
// stride: reps and out are reloaded from the arguments instead.
TEXT ·q4Row8AVX512(SB), NOSPLIT, $0-64
	ROW4Z_PROLOGUE
	VPXORD Z20, Z20, Z20
	VPXORD Z21, Z21, Z21
	VPXORD Z22, Z22, Z22
	VPXORD Z23, Z23, Z23
	VPXORD Z24, Z24, Z24
	VPXORD Z25, Z25, Z25
	VPXORD Z26, Z26, Z26
	VPXORD Z27, Z27, Z27
	LEAQ   (DI)(BX*4), R10
	LEAQ   (R10)(BX*1), R15
	LEAQ   (R10)(BX*2), DX
	LEAQ   (R15)(BX*2), BX
	MOVQ   packed+0(FP), SI
	MOVQ   scales+24(FP), R8
	MOVQ   biases+32(FP), R9
	MOVQ   groups+48(FP), R11
	VMOVUPS iota4<>(SB), Z15
	Q4_COUNTS

q4x8zgroup:
	TABLE
	MOVQ reps+56(FP), CX

q4x8zstep:
	Q4_DECODE64
	ROW4Z_FMA16
	ROW_FMA_TOKEN(R10, Z20, Z24)
	ROW_FMA_TOKEN(R15, Z21, Z25)
	ROW_FMA_TOKEN(DX, Z22, Z26)
	ROW_FMA_TOKEN(BX, Z23, Z27)
	ADDQ        $32, SI
	ADDQ        $256, AX
	DECQ        CX
	JNZ         q4x8zstep
	DECQ        R11
	JNZ         q4x8zgroup
	MOVQ        out+40(FP), DX
	ROW4Z_REDUCE
	VMOVAPS     Z20, Z0
	VMOVAPS     Z21, Z1
	VMOVAPS     Z22, Z2
	VMOVAPS     Z23, Z3
	VMOVAPS     Z24, Z16
	VMOVAPS     Z25, Z17
	VMOVAPS     Z26, Z18
	VMOVAPS     Z27, Z19
	ADDQ        $16, DX
	ROW4Z_REDUCE
	VZEROUPPER
	RET

// func q8Row4AVX512(packed *byte, xp unsafe.Pointer, xstride int, scales, biases, out unsafe.Pointer, groups, reps int, acc unsafe.Pointer, flags int)
// x in natural order; reps is GroupSize/32 (32 bytes each).
TEXT ·q8Row4AVX512(SB), NOSPLIT, $0-80
	ROW4Z_PROLOGUE
	ROW4Z_ARGS
	MOVQ acc+64(FP), R10
	MOVQ flags+72(FP), CX
	ROW4Z_PART_START(q8x4zstart)

q8x4zstart:

q8x4zgroup:
	VBROADCASTSS (R8), Z4
	VBROADCASTSS (R9), Z5
	ADDQ         $4, R8
	ADDQ         $4, R9
	MOVQ         R15, CX

q8x4zstep:
	VPMOVZXBD   (SI), Z9
	VPMOVZXBD   16(SI), Z10
	VCVTDQ2PS   Z9, Z9
	VCVTDQ2PS   Z10, Z10
	VFMADD213PS Z5, Z4, Z9
	VFMADD213PS Z5, Z4, Z10
	VFMADD231PS (DI)(AX*1), Z9, Z0
	VFMADD231PS 64(DI)(AX*1), Z10, Z16
	VFMADD231PS (R12)(AX*1), Z9, Z1
	VFMADD231PS 64(R12)(AX*1), Z10, Z17
	VFMADD231PS (R13)(AX*1), Z9, Z2
	VFMADD231PS 64(R13)(AX*1), Z10, Z18
	VFMADD231PS (R14)(AX*1), Z9, Z3
	VFMADD231PS 64(R14)(AX*1), Z10, Z19
	ADDQ        $32, SI
	ADDQ        $128, AX
	DECQ        CX
	JNZ         q8x4zstep
	DECQ        R11
	JNZ         q8x4zgroup
	MOVQ flags+72(FP), CX
	ROW4Z_PART_END(q8x4zreduce)

// func q2Row4AVX512(packed *byte, xp unsafe.Pointer, xstride int, scales, biases, out unsafe.Pointer, groups, reps int, acc unsafe.Pointer, flags int)
// x permuted as for q2RowsAVX512; reps is GroupSize/64 (16 bytes each).
TEXT ·q2Row4AVX512(SB), NOSPLIT, $0-80
	ROW4Z_PROLOGUE
	ROW4Z_ARGS
	MOVQ acc+64(FP), R10
	MOVQ flags+72(FP), CX
	ROW4Z_PART_START(q2x4zstart)

q2x4zstart:
	VMOVUPS iota2<>(SB), Z15

q2x4zgroup:
	TABLE
	MOVQ R15, CX

q2x4zstep:
	VPMOVZXBD (SI), Z6
	VPSRLD    $2, Z6, Z7
	VPSRLD    $4, Z6, Z8
	VPSRLD    $6, Z6, Z9
	VPERMPS   Z4, Z6, Z6
	VPERMPS   Z4, Z7, Z7
	VPERMPS   Z4, Z8, Z8
	VPERMPS   Z4, Z9, Z9
	ROW4Z_FMA16
	ADDQ      $16, SI
	ADDQ      $256, AX
	DECQ      CX
	JNZ       q2x4zstep
	DECQ      R11
	JNZ       q2x4zgroup
	MOVQ flags+72(FP), CX
	ROW4Z_PART_END(q2x4zreduce)

// func q3Row4AVX512(packed *byte, xp unsafe.Pointer, xstride int, scales, biases, out unsafe.Pointer, groups, reps int, acc unsafe.Pointer, flags int)
// x in natural order; reps is GroupSize/64 (24 bytes each, read as 32: the
// caller keeps the matrix's last row away). Needs AVX512VBMI.
TEXT ·q3Row4AVX512(SB), NOSPLIT, $0-80
	ROW4Z_PROLOGUE
	ROW4Z_ARGS
	MOVQ acc+64(FP), R10
	MOVQ flags+72(FP), CX
	ROW4Z_PART_START(q3x4zstart)

q3x4zstart:
	VMOVUPS   iota3<>(SB), Z15
	VMOVDQU64 gather3s0<>(SB), Z20
	VMOVDQU64 gather3s1<>(SB), Z21
	VMOVDQU64 gather3s2<>(SB), Z22
	VMOVDQU64 gather3s3<>(SB), Z23
	VMOVDQU64 shift3z<>(SB), Z24

q3x4zgroup:
	TABLE
	MOVQ R15, CX

q3x4zstep:
	VMOVDQU (SI), Y10
	VPERMB  Z10, Z20, Z6
	VPERMB  Z10, Z21, Z7
	VPERMB  Z10, Z22, Z8
	VPERMB  Z10, Z23, Z9
	VPSRLVD Z24, Z6, Z6
	VPSRLVD Z24, Z7, Z7
	VPSRLVD Z24, Z8, Z8
	VPSRLVD Z24, Z9, Z9
	VPERMPS Z4, Z6, Z6
	VPERMPS Z4, Z7, Z7
	VPERMPS Z4, Z8, Z8
	VPERMPS Z4, Z9, Z9
	ROW4Z_FMA16
	ADDQ    $24, SI
	ADDQ    $256, AX
	DECQ    CX
	JNZ     q3x4zstep
	DECQ    R11
	JNZ     q3x4zgroup
	MOVQ flags+72(FP), CX
	ROW4Z_PART_END(q3x4zreduce)

// func bf16Row4AVX512(w *uint16, xp unsafe.Pointer, xstride int, out unsafe.Pointer, n int, acc unsafe.Pointer, flags int)
// n is a multiple of 32. Resumable as the quantized four-token kernels are.
TEXT ·bf16Row4AVX512(SB), NOSPLIT, $0-56
	ROW4Z_PROLOGUE
	MOVQ acc+40(FP), R10
	MOVQ flags+48(FP), CX
	ROW4Z_PART_START(bf16x4zstart)

bf16x4zstart:
	MOVQ w+0(FP), SI
	MOVQ out+24(FP), DX
	MOVQ n+32(FP), CX
	SHRQ $5, CX

bf16x4zstep:
	VPMOVZXWD   (SI), Z9
	VPMOVZXWD   32(SI), Z10
	VPSLLD      $16, Z9, Z9
	VPSLLD      $16, Z10, Z10
	VFMADD231PS (DI)(AX*1), Z9, Z0
	VFMADD231PS 64(DI)(AX*1), Z10, Z16
	VFMADD231PS (R12)(AX*1), Z9, Z1
	VFMADD231PS 64(R12)(AX*1), Z10, Z17
	VFMADD231PS (R13)(AX*1), Z9, Z2
	VFMADD231PS 64(R13)(AX*1), Z10, Z18
	VFMADD231PS (R14)(AX*1), Z9, Z3
	VFMADD231PS 64(R14)(AX*1), Z10, Z19
	ADDQ        $64, SI
	ADDQ        $128, AX
	DECQ        CX
	JNZ         bf16x4zstep
	MOVQ flags+48(FP), CX
	ROW4Z_PART_END(bf16x4zreduce)

DATA iota4<>+0(SB)/4, $0x0
DATA iota4<>+4(SB)/4, $0x3f800000
DATA iota4<>+8(SB)/4, $0x40000000
DATA iota4<>+12(SB)/4, $0x40400000
DATA iota4<>+16(SB)/4, $0x40800000
DATA iota4<>+20(SB)/4, $0x40a00000
DATA iota4<>+24(SB)/4, $0x40c00000
DATA iota4<>+28(SB)/4, $0x40e00000
DATA iota4<>+32(SB)/4, $0x41000000
DATA iota4<>+36(SB)/4, $0x41100000
DATA iota4<>+40(SB)/4, $0x41200000
DATA iota4<>+44(SB)/4, $0x41300000
DATA iota4<>+48(SB)/4, $0x41400000
DATA iota4<>+52(SB)/4, $0x41500000
DATA iota4<>+56(SB)/4, $0x41600000
DATA iota4<>+60(SB)/4, $0x41700000
GLOBL iota4<>(SB), RODATA|NOPTR, $64

DATA iota3<>+0(SB)/4, $0x0
DATA iota3<>+4(SB)/4, $0x3f800000
DATA iota3<>+8(SB)/4, $0x40000000
DATA iota3<>+12(SB)/4, $0x40400000
DATA iota3<>+16(SB)/4, $0x40800000
DATA iota3<>+20(SB)/4, $0x40a00000
DATA iota3<>+24(SB)/4, $0x40c00000
DATA iota3<>+28(SB)/4, $0x40e00000
DATA iota3<>+32(SB)/4, $0x0
DATA iota3<>+36(SB)/4, $0x3f800000
DATA iota3<>+40(SB)/4, $0x40000000
DATA iota3<>+44(SB)/4, $0x40400000
DATA iota3<>+48(SB)/4, $0x40800000
DATA iota3<>+52(SB)/4, $0x40a00000
DATA iota3<>+56(SB)/4, $0x40c00000
DATA iota3<>+60(SB)/4, $0x40e00000
GLOBL iota3<>(SB), RODATA|NOPTR, $64

DATA iota2<>+0(SB)/4, $0x0
DATA iota2<>+4(SB)/4, $0x3f800000
DATA iota2<>+8(SB)/4, $0x40000000
DATA iota2<>+12(SB)/4, $0x40400000
DATA iota2<>+16(SB)/4, $0x0
DATA iota2<>+20(SB)/4, $0x3f800000
DATA iota2<>+24(SB)/4, $0x40000000
DATA iota2<>+28(SB)/4, $0x40400000
DATA iota2<>+32(SB)/4, $0x0
DATA iota2<>+36(SB)/4, $0x3f800000
DATA iota2<>+40(SB)/4, $0x40000000
DATA iota2<>+44(SB)/4, $0x40400000
DATA iota2<>+48(SB)/4, $0x0
DATA iota2<>+52(SB)/4, $0x3f800000
DATA iota2<>+56(SB)/4, $0x40000000
DATA iota2<>+60(SB)/4, $0x40400000
GLOBL iota2<>(SB), RODATA|NOPTR, $64

DATA gather3s0<>+0(SB)/8, $0x302010003020100
DATA gather3s0<>+8(SB)/8, $0x403020103020100
DATA gather3s0<>+16(SB)/8, $0x403020104030201
DATA gather3s0<>+24(SB)/8, $0x504030205040302
DATA gather3s0<>+32(SB)/8, $0x605040306050403
DATA gather3s0<>+40(SB)/8, $0x706050406050403
DATA gather3s0<>+48(SB)/8, $0x706050407060504
DATA gather3s0<>+56(SB)/8, $0x807060508070605
GLOBL gather3s0<>(SB), RODATA|NOPTR, $64

DATA gather3s1<>+0(SB)/8, $0x908070609080706
DATA gather3s1<>+8(SB)/8, $0xa09080709080706
DATA gather3s1<>+16(SB)/8, $0xa0908070a090807
DATA gather3s1<>+24(SB)/8, $0xb0a09080b0a0908
DATA gather3s1<>+32(SB)/8, $0xc0b0a090c0b0a09
DATA gather3s1<>+40(SB)/8, $0xd0c0b0a0c0b0a09
DATA gather3s1<>+48(SB)/8, $0xd0c0b0a0d0c0b0a
DATA gather3s1<>+56(SB)/8, $0xe0d0c0b0e0d0c0b
GLOBL gather3s1<>(SB), RODATA|NOPTR, $64

DATA gather3s2<>+0(SB)/8, $0xf0e0d0c0f0e0d0c
DATA gather3s2<>+8(SB)/8, $0x100f0e0d0f0e0d0c
DATA gather3s2<>+16(SB)/8, $0x100f0e0d100f0e0d
DATA gather3s2<>+24(SB)/8, $0x11100f0e11100f0e
DATA gather3s2<>+32(SB)/8, $0x1211100f1211100f
DATA gather3s2<>+40(SB)/8, $0x131211101211100f
DATA gather3s2<>+48(SB)/8, $0x1312111013121110
DATA gather3s2<>+56(SB)/8, $0x1413121114131211
GLOBL gather3s2<>(SB), RODATA|NOPTR, $64

DATA gather3s3<>+0(SB)/8, $0x1514131215141312
DATA gather3s3<>+8(SB)/8, $0x1615141315141312
DATA gather3s3<>+16(SB)/8, $0x1615141316151413
DATA gather3s3<>+24(SB)/8, $0x1716151417161514
DATA gather3s3<>+32(SB)/8, $0x1817161518171615
DATA gather3s3<>+40(SB)/8, $0x1918171618171615
DATA gather3s3<>+48(SB)/8, $0x1918171619181716
DATA gather3s3<>+56(SB)/8, $0x1a1918171a191817
GLOBL gather3s3<>(SB), RODATA|NOPTR, $64

DATA shift3z<>+0(SB)/4, $0x0
DATA shift3z<>+4(SB)/4, $0x3
DATA shift3z<>+8(SB)/4, $0x6
DATA shift3z<>+12(SB)/4, $0x1
DATA shift3z<>+16(SB)/4, $0x4
DATA shift3z<>+20(SB)/4, $0x7
DATA shift3z<>+24(SB)/4, $0x2
DATA shift3z<>+28(SB)/4, $0x5
DATA shift3z<>+32(SB)/4, $0x0
DATA shift3z<>+36(SB)/4, $0x3
DATA shift3z<>+40(SB)/4, $0x6
DATA shift3z<>+44(SB)/4, $0x1
DATA shift3z<>+48(SB)/4, $0x4
DATA shift3z<>+52(SB)/4, $0x7
DATA shift3z<>+56(SB)/4, $0x2
DATA shift3z<>+60(SB)/4, $0x5
GLOBL shift3z<>(SB), RODATA|NOPTR, $64

// func readSumAVX512(p *byte, n int) uint64
// Σ of the 64-bit words of n bytes (n a multiple of 256): a pure streaming
// read with the widest loads and one-cycle adds, the memory-read ceiling the
// kernel benchmarks compare against.
TEXT ·readSumAVX512(SB), NOSPLIT, $0-24
	MOVQ p+0(FP), SI
	MOVQ n+8(FP), CX
	ZERO4
	SHRQ $8, CX
	JZ   readzdone

readzloop:
	VPADDQ (SI), Z0, Z0
	VPADDQ 64(SI), Z1, Z1
	VPADDQ 128(SI), Z2, Z2
	VPADDQ 192(SI), Z3, Z3
	ADDQ   $256, SI
	DECQ   CX
	JNZ    readzloop

readzdone:
	VPADDQ        Z1, Z0, Z0
	VPADDQ        Z3, Z2, Z2
	VPADDQ        Z2, Z0, Z0
	VEXTRACTI64X4 $1, Z0, Y1
	VPADDQ        Y1, Y0, Y0
	VEXTRACTI128  $1, Y0, X1
	VPADDQ        X1, X0, X0
	VPSHUFD       $0x4e, X0, X1
	VPADDQ        X1, X0, X0
	VMOVQ         X0, AX
	MOVQ          AX, ret+16(FP)
	VZEROUPPER
	RET

DATA q4shift<>+0(SB)/4, $0
DATA q4shift<>+4(SB)/4, $0
DATA q4shift<>+8(SB)/4, $0
DATA q4shift<>+12(SB)/4, $0
DATA q4shift<>+16(SB)/4, $0
DATA q4shift<>+20(SB)/4, $0
DATA q4shift<>+24(SB)/4, $0
DATA q4shift<>+28(SB)/4, $0
DATA q4shift<>+32(SB)/4, $4
DATA q4shift<>+36(SB)/4, $4
DATA q4shift<>+40(SB)/4, $4
DATA q4shift<>+44(SB)/4, $4
DATA q4shift<>+48(SB)/4, $4
DATA q4shift<>+52(SB)/4, $4
DATA q4shift<>+56(SB)/4, $4
DATA q4shift<>+60(SB)/4, $4
GLOBL q4shift<>(SB), RODATA|NOPTR, $64

DATA q4eight<>+0(SB)/4, $8
GLOBL q4eight<>(SB), RODATA|NOPTR, $4
