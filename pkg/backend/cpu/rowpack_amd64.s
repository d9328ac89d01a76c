//go:build !noasm

#include "textflag.h"

// Row-interleaved 4-bit kernels for int8 mode (AVX512BW + AVX512-VNNI); the
// layout is rowpack.go's. A 64-byte step holds 16 rows × 8 columns: the low
// nibbles (masked) meet a broadcast dword of x, the high nibbles (shifted
// and masked) the next one, each one VPDPBUSD into the 16 rows' int32 sums.
// After a group: convert, × (scale·sx), + bias·Σx, lane by lane, 16 rows at
// once; after a block the 16 results are one store.

// RP_STEP: step at off(SI) against x dwords at xoff(DI), xoff+4(DI).
#define RP_STEP(off, xoff, alo, ahi) \
	VPSRLW        $4, off(SI), Z17 \
	VPANDD        off(SI), Z31, Z16 \
	VPANDD        Z31, Z17, Z17 \
	VPDPBUSD.BCST xoff(DI), Z16, alo \
	VPDPBUSD.BCST xoff+4(DI), Z17, ahi

// RP_ZERO8: eight vector registers zeroed.
#define RP_ZERO8(a, b, c, d, e, f, g, h) \
	VPXORD a, a, a \
	VPXORD b, b, b \
	VPXORD c, c, c \
	VPXORD d, d, d \
	VPXORD e, e, e \
	VPXORD f, f, f \
	VPXORD g, g, g \
	VPXORD h, h, h

// RP1_GROUP_END: a group's int32 sums (Z2..Z5, Z8..Z11) into the float accumulators
// Z0 (×scale·sx) and Z1 (bias·Σx); SI past the group's steps, at its scales.
#define RP1_GROUP_END \
	VPADDD           Z3, Z2, Z2 \
	VPADDD           Z5, Z4, Z4 \
	VPADDD           Z9, Z8, Z8 \
	VPADDD           Z11, Z10, Z10 \
	VPADDD           Z4, Z2, Z2 \
	VPADDD           Z10, Z8, Z8 \
	VPADDD           Z8, Z2, Z2 \
	VCVTDQ2PS        Z2, Z2 \
	VPMOVZXWD        (SI), Z6 \
	VPSLLD           $16, Z6, Z6 \
	VMULPS.BCST      (R10), Z6, Z6 \
	VFMADD231PS      Z6, Z2, Z0 \
	VPMOVZXWD        32(SI), Z7 \
	VPSLLD           $16, Z7, Z7 \
	VFMADD231PS.BCST (BX), Z7, Z1 \
	ADDQ             $64, SI \
	ADDQ             $4, R10 \
	ADDQ             $4, BX

// RP1_BLOCK_START: x, sx, Σx and the group count from the arguments, the
// float accumulators zeroed.
#define RP1_BLOCK_START \
	MOVQ   xq+8(FP), DI \
	MOVQ   sx+16(FP), R10 \
	MOVQ   gsum+24(FP), BX \
	MOVQ   groups+48(FP), R11 \
	VPXORD Z0, Z0, Z0 \
	VPXORD Z1, Z1, Z1

// RP1_GROUP_START: the int32 sums zeroed (eight chains, so that the
// VPDPBUSD latency never stalls the loop), CX the group's quads of steps.
#define RP1_GROUP_START \
	RP_ZERO8(Z2, Z3, Z4, Z5, Z8, Z9, Z10, Z11) \
	MOVQ quads+56(FP), CX

// RP_START: the multi-token kernels' registers from their arguments
// (packed, y, blocks, ystride); RP_START_8/4/2/3 add each width's masks:
// 0x0f per byte in Z31 for 4-bit codes, 0x03 in Z30 for 2- and 3-bit, 0x04
// in Z29 for 3-bit.
#define RP_START \
	MOVQ packed+0(FP), SI \
	MOVQ y+32(FP), DX \
	MOVQ blocks+40(FP), R13 \
	MOVQ ystride+64(FP), R9 \
	MOVQ ahead+72(FP), R12

// NOPF, PF64, PF128, PF192: a multi-token step's prefetch of the bytes
// ahead (R12) of its 64, 128 or 192 bytes of codes into L2, or none. The
// PF kernels (rowpack_amd64.go, rowPackMulti) make a row chunk's first
// eight-token pass, which streams it from DRAM, and fetch the next chunk
// meanwhile: left to the hardware's prefetchers, a one-pass product of 8
// tokens ran at 0.8 of the rate of 64 tokens' (BenchmarkRowPackPrefetchAB:
// 472 → 560 GOPS with PF).
#define NOPF
#define PF64 PREFETCHT1 (SI)(R12*1)
#define PF128 \
	PF64 \
	PREFETCHT1 64(SI)(R12*1)
#define PF192 \
	PF128 \
	PREFETCHT1 128(SI)(R12*1)

#define RP_START_8 RP_START

#define RP_START_4 \
	RP_START \
	MOVL         $0x0f0f0f0f, AX \
	VPBROADCASTD AX, Z31

#define RP_START_2 \
	RP_START \
	MOVL         $0x03030303, AX \
	VPBROADCASTD AX, Z30

#define RP_START_3 \
	RP_START_2 \
	MOVL         $0x04040404, AX \
	VPBROADCASTD AX, Z29

// RP1_BLOCK_END: the block's 16 results stored.
#define RP1_BLOCK_END \
	VADDPS  Z1, Z0, Z0 \
	VMOVUPS Z0, (DX) \
	ADDQ    $64, DX

// RP8_BLOCK_START: x, sx, Σx and the group count from the arguments, the
// float accumulators zeroed.
#define RP8_BLOCK_START \
	MOVQ   x8+8(FP), DI \
	MOVQ   sx8+16(FP), R10 \
	MOVQ   gs8+24(FP), BX \
	MOVQ   groups+48(FP), R11 \
	RP_ZERO8(Z8, Z9, Z10, Z11, Z12, Z13, Z14, Z15)

// RP8_GROUP_START: the int32 sums zeroed, CX the group's steps.
#define RP8_GROUP_START \
	RP_ZERO8(Z0, Z1, Z2, Z3, Z4, Z5, Z6, Z7) \
	MOVQ steps+56(FP), CX

// RP1_LOOP(STEPS, stride): the one-token kernels' loops over blocks, groups
// and quads of steps (STEPS: one quad's instructions, stride its bytes).
// Labels are per function, so each kernel expands it once.
#define RP1_LOOP(STEPS, stride) \
rp1block: \
	RP1_BLOCK_START \
rp1group: \
	RP1_GROUP_START \
rp1step: \
	STEPS \
	ADDQ stride, SI \
	ADDQ $32, DI \
	DECQ CX \
	JNZ  rp1step \
	RP1_GROUP_END \
	DECQ R11 \
	JNZ  rp1group \
	RP1_BLOCK_END \
	DECQ R13 \
	JNZ  rp1block \
	VZEROUPPER \
	RET

#define RP1_STEPS_4 \
	RP_STEP(0, 0, Z2, Z3) \
	RP_STEP(64, 8, Z4, Z5) \
	RP_STEP(128, 16, Z8, Z9) \
	RP_STEP(192, 24, Z10, Z11)

// func rowPack1VNNI(packed *byte, xq *int8, sx, gsum, y *float32, blocks, groups, quads int)
// quads: steps per group / 4 (GroupSize / 32).
TEXT ·rowPack1VNNI(SB), NOSPLIT, $0-64
	MOVQ         packed+0(FP), SI
	MOVQ         y+32(FP), DX
	MOVQ         blocks+40(FP), R13
	MOVL         $0x0f0f0f0f, AX
	VPBROADCASTD AX, Z31

	RP1_LOOP(RP1_STEPS_4, $256)

// RP_STEP8: an 8-bit step at off(SI): two vectors, columns 8k..8k+3 and
// 8k+4..8k+7 of the 16 rows, against x dwords at xoff(DI), xoff+4(DI).
#define RP_STEP8(off, xoff, alo, ahi) \
	VMOVDQU32     off(SI), Z16 \
	VMOVDQU32     off+64(SI), Z17 \
	VPDPBUSD.BCST xoff(DI), Z16, alo \
	VPDPBUSD.BCST xoff+4(DI), Z17, ahi

#define RP1_STEPS_8 \
	RP_STEP8(0, 0, Z2, Z3) \
	RP_STEP8(128, 8, Z4, Z5) \
	RP_STEP8(256, 16, Z8, Z9) \
	RP_STEP8(384, 24, Z10, Z11)

// func rowPack1VNNI8(packed *byte, xq *int8, sx, gsum, y *float32, blocks, groups, quads int)
// rowPack1VNNI for 8-bit codes (unsigned bytes, no nibble split).
TEXT ·rowPack1VNNI8(SB), NOSPLIT, $0-64
	MOVQ packed+0(FP), SI
	MOVQ y+32(FP), DX
	MOVQ blocks+40(FP), R13

	RP1_LOOP(RP1_STEPS_8, $512)

// RP8_TOK: token t's share of a step: its x dwords at 8t(DI), 8t+4(DI).
#define RP8_TOK(xoff, acc) \
	VPDPBUSD.BCST xoff(DI), Z16, acc \
	VPDPBUSD.BCST xoff+4(DI), Z17, acc

// RP8_END: token t's share of a group's epilogue: int sums in acc, float
// accumulator f, its sx and Σx at off(R10), off(BX).
#define RP8_END(off, acc, f) \
	VCVTDQ2PS        acc, acc \
	VMULPS.BCST      off(R10), Z18, Z20 \
	VFMADD231PS      Z20, acc, f \
	VFMADD231PS.BCST off(BX), Z19, f

// RP_SCALES: a group's 16 scales and 16 biases (bf16 at SI) as float32 in
// Z18 and Z19.
#define RP_SCALES \
	VPMOVZXWD (SI), Z18 \
	VPSLLD    $16, Z18, Z18 \
	VPMOVZXWD 32(SI), Z19 \
	VPSLLD    $16, Z19, Z19

// RP4_ENDS: tokens 0–3's share of a group's epilogue (RP_SCALES loaded).
#define RP4_ENDS \
	RP8_END(0, Z0, Z8) \
	RP8_END(4, Z1, Z9) \
	RP8_END(8, Z2, Z10) \
	RP8_END(12, Z3, Z11)

// RP_STORE4(a, b, c, d): four tokens' 16 results at R8, R8+ystride, …
// (ystride in R9; R8 is left at the last).
#define RP_STORE4(a, b, c, d) \
	VMOVUPS a, (R8) \
	ADDQ    R9, R8 \
	VMOVUPS b, (R8) \
	ADDQ    R9, R8 \
	VMOVUPS c, (R8) \
	ADDQ    R9, R8 \
	VMOVUPS d, (R8)

// RP8_GROUP_END: the eight tokens' int32 sums of a group into their float
// accumulators; SI past the group's steps, at its scales.
#define RP8_GROUP_END \
	RP_SCALES \
	RP4_ENDS \
	RP8_END(16, Z4, Z12) \
	RP8_END(20, Z5, Z13) \
	RP8_END(24, Z6, Z14) \
	RP8_END(28, Z7, Z15) \
	ADDQ $64, SI \
	ADDQ $32, R10 \
	ADDQ $32, BX

// RP8_STORE: the eight tokens' 16 results of a block, ystride (R9) apart.
#define RP8_STORE \
	MOVQ DX, R8 \
	RP_STORE4(Z8, Z9, Z10, Z11) \
	ADDQ R9, R8 \
	RP_STORE4(Z12, Z13, Z14, Z15)

// RP4_TOKS: the decoded step (Z16, Z17) against tokens 0–3.
#define RP4_TOKS \
	RP8_TOK(0, Z0) \
	RP8_TOK(8, Z1) \
	RP8_TOK(16, Z2) \
	RP8_TOK(24, Z3)

// RP8_TOKS: the decoded step (Z16, Z17) against the eight tokens.
#define RP8_TOKS \
	RP4_TOKS \
	RP8_TOK(32, Z4) \
	RP8_TOK(40, Z5) \
	RP8_TOK(48, Z6) \
	RP8_TOK(56, Z7)

// RPN_LOOP(STEP, GROUP_END, STORE): the multi-token kernels' loops over
// blocks, groups and steps (STEP: one step's instructions, advancing SI and
// DI; GROUP_END and STORE for the kernel's token count). Labels are per
// function, so each kernel expands it once.
#define RPN_LOOP(STEP, GROUP_END, STORE) \
rpnblock: \
	RP8_BLOCK_START \
rpngroup: \
	RP8_GROUP_START \
rpnstep: \
	STEP \
	DECQ CX \
	JNZ  rpnstep \
	GROUP_END \
	DECQ R11 \
	JNZ  rpngroup \
	STORE \
	ADDQ $64, DX \
	DECQ R13 \
	JNZ  rpnblock \
	VZEROUPPER \
	RET

// RP8_LOOP(STEP): the eight-token kernels' loops.
#define RP8_LOOP(STEP) RPN_LOOP(STEP, RP8_GROUP_END, RP8_STORE)

// RP_NIBBLES: a 4-bit step at SI split into its low (Z16) and high (Z17)
// nibbles as bytes (Z31: the 0x0f mask).
#define RP_NIBBLES \
	VPSRLW $4, (SI), Z17 \
	VPANDD (SI), Z31, Z16 \
	VPANDD Z31, Z17, Z17

// RPN_STEP_4(TOKS, xstep, PF): a 4-bit step against the tokens TOKS
// names, their x xstep bytes a step; PF its prefetch.
#define RPN_STEP_4(TOKS, xstep, PF) \
	PF \
	RP_NIBBLES \
	TOKS \
	ADDQ $64, SI \
	ADDQ xstep, DI

// func rowPack8VNNI(packed *byte, x8 *int8, sx8, gs8, y *float32, blocks, groups, steps, ystride, ahead int)
// Eight tokens at once (x8, sx8, gs8 as rowPackX8 lays them out): each
// step is decoded once and meets the eight tokens' x; token t's results go
// to y + t·ystride bytes. Z0..Z7 the tokens' int32 sums, Z8..Z15 their float
// accumulators. ahead is ignored (rowPack8VNNIPF's).
TEXT ·rowPack8VNNI(SB), NOSPLIT, $0-80
	RP_START_4
	RP8_LOOP(RPN_STEP_4(RP8_TOKS, $64, NOPF))

// func rowPack8VNNIPF(packed *byte, x8 *int8, sx8, gs8, y *float32, blocks, groups, steps, ystride, ahead int)
// rowPack8VNNI prefetching ahead bytes ahead (NOPF, PF64…).
TEXT ·rowPack8VNNIPF(SB), NOSPLIT, $0-80
	RP_START_4
	RP8_LOOP(RPN_STEP_4(RP8_TOKS, $64, PF64))

// RPN_STEP_8(TOKS, xstep, PF): an 8-bit step, two plain vectors.
#define RPN_STEP_8(TOKS, xstep, PF) \
	PF \
	VMOVDQU32 (SI), Z16 \
	VMOVDQU32 64(SI), Z17 \
	TOKS \
	ADDQ      $128, SI \
	ADDQ      xstep, DI

// func rowPack8VNNI8(packed *byte, x8 *int8, sx8, gs8, y *float32, blocks, groups, steps, ystride, ahead int)
// rowPack8VNNI for 8-bit codes: a step is two plain vectors.
TEXT ·rowPack8VNNI8(SB), NOSPLIT, $0-80
	RP_START_8
	RP8_LOOP(RPN_STEP_8(RP8_TOKS, $64, NOPF))

TEXT ·rowPack8VNNI8PF(SB), NOSPLIT, $0-80
	RP_START_8
	RP8_LOOP(RPN_STEP_8(RP8_TOKS, $64, PF128))

// RP8_LO01(src): crumbs 0 and 1 of src into Z16, Z17 (Z30: 0x03 per byte).
#define RP8_LO01(src) \
	VPANDD src, Z30, Z16 \
	VPSRLW $2, src, Z17 \
	VPANDD Z17, Z30, Z17

// RP8_LO23(src): crumbs 2 and 3 of src into Z16, Z17.
#define RP8_LO23(src) \
	VPSRLW $4, src, Z16 \
	VPANDD Z16, Z30, Z16 \
	VPSRLW $6, src, Z17 \
	VPANDD Z17, Z30, Z17

// RP_STEP2: a 2-bit step at off(SI), 16 columns of the 16 rows (byte i of
// lane r: crumbs of columns 16k+i, +4, +8, +12), its four crumb vectors
// against x dwords xoff..xoff+12(DI); Z30 is 0x03 in every byte.
#define RP_STEP2(off, xoff, a0, a1) \
	VMOVDQU32     off(SI), Z21 \
	RP8_LO01(Z21) \
	VPDPBUSD.BCST xoff(DI), Z16, a0 \
	VPDPBUSD.BCST xoff+4(DI), Z17, a1 \
	RP8_LO23(Z21) \
	VPDPBUSD.BCST xoff+8(DI), Z16, a0 \
	VPDPBUSD.BCST xoff+12(DI), Z17, a1

#define RP1_STEPS_2 \
	RP_STEP2(0, 0, Z2, Z3) \
	RP_STEP2(64, 16, Z8, Z9)

// func rowPack1VNNI2(packed *byte, xq *int8, sx, gsum, y *float32, blocks, groups, quads int)
// rowPack1VNNI for 2-bit codes: two 16-column steps per 32 columns.
TEXT ·rowPack1VNNI2(SB), NOSPLIT, $0-64
	MOVQ         packed+0(FP), SI
	MOVQ         y+32(FP), DX
	MOVQ         blocks+40(FP), R13
	MOVL         $0x03030303, AX
	VPBROADCASTD AX, Z30

	RP1_LOOP(RP1_STEPS_2, $128)

// RPN_STEP_2(TOKS, xstep, PF): a 2-bit step against the tokens TOKS names, x's
// 8-column chunks xstep bytes apart (8 bytes a token).
#define RPN_STEP_2(TOKS, xstep, PF) \
	PF \
	VMOVDQU32 (SI), Z21 \
	RP8_LO01(Z21) \
	TOKS \
	ADDQ      xstep, DI \
	RP8_LO23(Z21) \
	TOKS \
	ADDQ      $64, SI \
	ADDQ      xstep, DI

// func rowPack8VNNI2(packed *byte, x8 *int8, sx8, gs8, y *float32, blocks, groups, steps, ystride, ahead int)
// rowPack8VNNI for 2-bit codes: a 16-column step is two of the x layout's
// 8-column chunks, crumbs 0 and 1 against the first, 2 and 3 the second.
TEXT ·rowPack8VNNI2(SB), NOSPLIT, $0-80
	RP_START_2
	RP8_LOOP(RPN_STEP_2(RP8_TOKS, $64, NOPF))

TEXT ·rowPack8VNNI2PF(SB), NOSPLIT, $0-80
	RP_START_2
	RP8_LOOP(RPN_STEP_2(RP8_TOKS, $64, PF64))

// RP_HI3L / RP_HI3R (shift left or right by sh, xoff, acc): the 3-bit layout's high plane (Z23: byte i of lane
// r holds bit 2 of the codes of columns 4q+i, q = 0..7, in bit q) for x
// dword m: bit m of each byte moved to bit 2 (value 4) and masked (Z29 is
// 0x04 in every byte; word shifts move bits across bytes only into the
// masked-off positions), then one VPDPBUSD into acc.
#define RP_HI3L(sh, xoff, acc) \
	VPSLLW        $sh, Z23, Z24 \
	VPANDD        Z24, Z29, Z24 \
	VPDPBUSD.BCST xoff(DI), Z24, acc

#define RP_HI3R(sh, xoff, acc) \
	VPSRLW        $sh, Z23, Z24 \
	VPANDD        Z24, Z29, Z24 \
	VPDPBUSD.BCST xoff(DI), Z24, acc

#define RP1_STEPS_3 \
	RP_STEP2(0, 0, Z2, Z3) \
	RP_STEP2(64, 16, Z8, Z9) \
	VMOVDQU32     128(SI), Z23 \
	RP_HI3L(2, 0, Z4) \
	RP_HI3L(1, 4, Z5) \
	VPANDD        Z23, Z29, Z24 \
	VPDPBUSD.BCST 8(DI), Z24, Z10 \
	RP_HI3R(1, 12, Z11) \
	RP_HI3R(2, 16, Z4) \
	RP_HI3R(3, 20, Z5) \
	RP_HI3R(4, 24, Z10) \
	RP_HI3R(5, 28, Z11)

// func rowPack1VNNI3(packed *byte, xq *int8, sx, gsum, y *float32, blocks, groups, quads int)
// rowPack1VNNI for 3-bit codes: per 32 columns, two 2-bit steps of the
// codes' low bits and one vector of their high bits (192 bytes).
TEXT ·rowPack1VNNI3(SB), NOSPLIT, $0-64
	MOVQ         packed+0(FP), SI
	MOVQ         y+32(FP), DX
	MOVQ         blocks+40(FP), R13
	MOVL         $0x03030303, AX
	VPBROADCASTD AX, Z30
	MOVL         $0x04040404, AX
	VPBROADCASTD AX, Z29

	RP1_LOOP(RP1_STEPS_3, $192)

// RPN_STEP_3(TOKS, xstep, PF): a 3-bit step (32 columns) against the tokens
// TOKS names, x's 8-column chunks xstep bytes apart.
#define RPN_STEP_3(TOKS, xstep, PF) \
	PF \
	VMOVDQU32 (SI), Z21 \
	VMOVDQU32 64(SI), Z22 \
	VMOVDQU32 128(SI), Z23 \
	RP8_LO01(Z21) \
	TOKS \
	VPSLLW    $2, Z23, Z16 \
	VPANDD    Z16, Z29, Z16 \
	VPSLLW    $1, Z23, Z17 \
	VPANDD    Z17, Z29, Z17 \
	TOKS \
	ADDQ      xstep, DI \
	RP8_LO23(Z21) \
	TOKS \
	VPANDD    Z23, Z29, Z16 \
	VPSRLW    $1, Z23, Z17 \
	VPANDD    Z17, Z29, Z17 \
	TOKS \
	ADDQ      xstep, DI \
	RP8_LO01(Z22) \
	TOKS \
	VPSRLW    $2, Z23, Z16 \
	VPANDD    Z16, Z29, Z16 \
	VPSRLW    $3, Z23, Z17 \
	VPANDD    Z17, Z29, Z17 \
	TOKS \
	ADDQ      xstep, DI \
	RP8_LO23(Z22) \
	TOKS \
	VPSRLW    $4, Z23, Z16 \
	VPANDD    Z16, Z29, Z16 \
	VPSRLW    $5, Z23, Z17 \
	VPANDD    Z17, Z29, Z17 \
	TOKS \
	ADDQ      xstep, DI \
	ADDQ      $192, SI

// func rowPack8VNNI3(packed *byte, x8 *int8, sx8, gs8, y *float32, blocks, groups, steps, ystride, ahead int)
// rowPack8VNNI for 3-bit codes; steps = GroupSize/32. Each of x's four
// 8-column chunks of the 32 meets two crumb vectors of the low planes and
// two bit vectors of the high plane.
TEXT ·rowPack8VNNI3(SB), NOSPLIT, $0-80
	RP_START_3
	RP8_LOOP(RPN_STEP_3(RP8_TOKS, $64, NOPF))

TEXT ·rowPack8VNNI3PF(SB), NOSPLIT, $0-80
	RP_START_3
	RP8_LOOP(RPN_STEP_3(RP8_TOKS, $64, PF192))

// The packer (packBlocks' AVX-512 path): step k of a group is dword k of
// the group's codes in each of the block's 16 rows — one VPGATHERDD with the
// rows' offsets as indices — with each dword's two 16-bit halves spread to
// the low nibbles of its four bytes (x = (x | x<<8) & 0x00ff00ff, then
// (x | x<<4) & 0x0f0f0f0f) and the high half's shifted up by 4. The 16
// rows' bf16 scales (and biases) of group j are gathered as dwords at
// 2j-2, whose high halves they are (group 0: at 0, the low halves; the
// caller ensures at least two groups, so no dword reaches past a row's end).
DATA rpIota<>+0(SB)/4, $0
DATA rpIota<>+4(SB)/4, $1
DATA rpIota<>+8(SB)/4, $2
DATA rpIota<>+12(SB)/4, $3
DATA rpIota<>+16(SB)/4, $4
DATA rpIota<>+20(SB)/4, $5
DATA rpIota<>+24(SB)/4, $6
DATA rpIota<>+28(SB)/4, $7
DATA rpIota<>+32(SB)/4, $8
DATA rpIota<>+36(SB)/4, $9
DATA rpIota<>+40(SB)/4, $10
DATA rpIota<>+44(SB)/4, $11
DATA rpIota<>+48(SB)/4, $12
DATA rpIota<>+52(SB)/4, $13
DATA rpIota<>+56(SB)/4, $14
DATA rpIota<>+60(SB)/4, $15
GLOBL rpIota<>(SB), RODATA|NOPTR, $64

// RP_SPREAD: Z0's dwords spread as above into Z1 (Z2, Z3 scratch).
#define RP_SPREAD \
	VPANDD  Z0, Z27, Z1 \
	VPSRLD  $16, Z0, Z2 \
	VPSLLD  $8, Z1, Z3 \
	VPORD   Z3, Z1, Z1 \
	VPANDD  Z1, Z26, Z1 \
	VPSLLD  $4, Z1, Z3 \
	VPORD   Z3, Z1, Z1 \
	VPANDD  Z1, Z25, Z1 \
	VPSLLD  $8, Z2, Z3 \
	VPORD   Z3, Z2, Z2 \
	VPANDD  Z2, Z26, Z2 \
	VPSLLD  $4, Z2, Z3 \
	VPORD   Z3, Z2, Z2 \
	VPANDD  Z2, Z25, Z2 \
	VPSLLD  $4, Z2, Z2 \
	VPORD   Z2, Z1, Z1

// func packBlocksAVX512(out, codes *byte, sc, bi *uint16, rb, groups, steps, blocks int)
// codes, sc and bi point at the first block's first row; steps = GroupSize/8.
TEXT ·packBlocksAVX512(SB), NOSPLIT, $0-64
	MOVQ         out+0(FP), DI
	MOVQ         codes+8(FP), SI
	MOVQ         sc+16(FP), R8
	MOVQ         bi+24(FP), R9
	MOVQ         rb+32(FP), R10
	MOVQ         groups+40(FP), R11
	MOVQ         steps+48(FP), R12
	MOVQ         blocks+56(FP), R13
	MOVL         $0xffff, AX
	VPBROADCASTD AX, Z27
	MOVL         $0x00ff00ff, AX
	VPBROADCASTD AX, Z26
	MOVL         $0x0f0f0f0f, AX
	VPBROADCASTD AX, Z25
	VMOVDQU32    rpIota<>(SB), Z24
	VPBROADCASTD R10, Z30
	VPMULLD      Z24, Z30, Z30 // code offsets of the 16 rows
	MOVQ         R11, AX
	SHLQ         $1, AX
	VPBROADCASTD AX, Z29
	VPMULLD      Z24, Z29, Z29 // scale offsets of the 16 rows
	MOVQ         R10, R15
	SHLQ         $4, R15       // 16 rows of codes
	MOVQ         R11, R14
	SHLQ         $5, R14       // 16 rows of scales

pbblock:
	MOVQ SI, BX
	XORQ AX, AX // group

pbgroup:
	MOVQ BX, DX
	MOVQ R12, CX

pbstep:
	KXNORW     K1, K1, K1
	VPGATHERDD (DX)(Z30*1), K1, Z0
	RP_SPREAD
	VMOVDQU32  Z1, (DI)
	ADDQ       $64, DI
	ADDQ       $4, DX
	DECQ       CX
	JNZ        pbstep

	TESTQ      AX, AX
	JNZ        pbhigh
	KXNORW     K1, K1, K1
	VPGATHERDD (R8)(Z29*1), K1, Z0
	KXNORW     K2, K2, K2
	VPGATHERDD (R9)(Z29*1), K2, Z1
	JMP        pbscales

pbhigh:
	LEAQ       -2(R8)(AX*2), R10
	LEAQ       -2(R9)(AX*2), DX
	KXNORW     K1, K1, K1
	VPGATHERDD (R10)(Z29*1), K1, Z0
	KXNORW     K2, K2, K2
	VPGATHERDD (DX)(Z29*1), K2, Z1
	VPSRLD     $16, Z0, Z0
	VPSRLD     $16, Z1, Z1

pbscales:
	VPMOVDW Z0, (DI)
	VPMOVDW Z1, 32(DI)
	ADDQ    $64, DI
	MOVQ    R12, DX
	SHLQ    $2, DX
	ADDQ    DX, BX  // next group's codes: GroupSize/2 bytes on
	INCQ    AX
	CMPQ    AX, R11
	JLT     pbgroup

	ADDQ R15, SI
	ADDQ R14, R8
	ADDQ R14, R9
	DECQ R13
	JNZ  pbblock
	VZEROUPPER
	RET

// RP4_GROUP_END: RP8_GROUP_END for four tokens (Z0–Z3 into Z8–Z11; their
// sx and Σx 16 bytes a group).
#define RP4_GROUP_END \
	RP_SCALES \
	RP4_ENDS \
	ADDQ $64, SI \
	ADDQ $16, R10 \
	ADDQ $16, BX

// RP4_STORE: the four tokens' 16 results of a block, ystride (R9) apart.
#define RP4_STORE \
	MOVQ DX, R8 \
	RP_STORE4(Z8, Z9, Z10, Z11)

// RP4_LOOP(STEP): the four-token kernels' loops.
#define RP4_LOOP(STEP) RPN_LOOP(STEP, RP4_GROUP_END, RP4_STORE)

// func rowPack4VNNI(packed *byte, x8 *int8, sx8, gs8, y *float32, blocks, groups, steps, ystride, ahead int)
// rowPack8VNNI for four tokens (x, sx and Σx as rowPackXN lays out four: 32
// bytes of x a step): the kernel for the tokens past the eight-token blocks,
// which one-token calls would each stream the rows for.
TEXT ·rowPack4VNNI(SB), NOSPLIT, $0-80
	RP_START_4
	RP4_LOOP(RPN_STEP_4(RP4_TOKS, $32, NOPF))

// func rowPack4VNNI8(packed *byte, x8 *int8, sx8, gs8, y *float32, blocks, groups, steps, ystride, ahead int)
// rowPack4VNNI for 8-bit codes: a step is two plain vectors.
TEXT ·rowPack4VNNI8(SB), NOSPLIT, $0-80
	RP_START_8
	RP4_LOOP(RPN_STEP_8(RP4_TOKS, $32, NOPF))

// func rowPack4VNNI2(packed *byte, x8 *int8, sx8, gs8, y *float32, blocks, groups, steps, ystride, ahead int)
// rowPack4VNNI for 2-bit codes (rowPack8VNNI2's step for four tokens).
TEXT ·rowPack4VNNI2(SB), NOSPLIT, $0-80
	RP_START_2
	RP4_LOOP(RPN_STEP_2(RP4_TOKS, $32, NOPF))

// func rowPack4VNNI3(packed *byte, x8 *int8, sx8, gs8, y *float32, blocks, groups, steps, ystride, ahead int)
// rowPack4VNNI for 3-bit codes (rowPack8VNNI3's step for four tokens).
TEXT ·rowPack4VNNI3(SB), NOSPLIT, $0-80
	RP_START_3
	RP4_LOOP(RPN_STEP_3(RP4_TOKS, $32, NOPF))
