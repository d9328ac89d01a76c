// gemm.cu: the tiled matrix product for prefill, y[t, r] (+)= Σ_c W[r, c]·x[t, c]
// for T tokens at once. mm_fast (matmul.cu) decodes each weight unit once per
// MM_TOK = 8 tokens, so a 512-token chunk reads every weight 64 times; here a
// block owns a tile of GM_BM weight rows × BN tokens, and each K-step of GM_BK
// columns dequantizes the block's weights ONCE into shared memory, stages the
// BN tokens' x values beside them, and every thread accumulates a GM_TM × GM_TN
// register tile of float32 FMAs from the two. A weight is then read once per
// BN tokens (and the product is compute-bound, not memory-bound, at T ≥ ~16).
//
// Numerics: the weight is dequantized exactly as the reference writes it
// (w = s·q + b, one fused rounding to float32), products accumulate in
// float32 in column order, one accumulator per output: the same result
// whichever block finishes first. No tensor cores (they would round x to
// tf32/bf16).
//
// Same argument semantics as mm_fast (MM_PARAMS): token t reads x row
// xrows[t] (row t without xrows); modes MM_STORE, MM_ACCUM, MM_SWIGLU (gate
// and up in one pass, two accumulators); with yrows the result is added,
// times ywt[t], to y row yrows[t] (rows never collide within one launch).
// Needs what the fast kernels need (the Go side checks): cols % 32 == 0,
// group size % 32 == 0 (a K-step lies in one group), 16-byte aligned rows.
//
// This file comes before matmul.cu in the translation unit (files are
// concatenated in name order), so it uses only 00common.cu. The mode numbers
// are matmul.cu's; an identical redefinition is legal, a different one is a
// compile error, which keeps the two files in step.
#define MM_STORE 0
#define MM_ACCUM 1
#define MM_SWIGLU 2
// MM_PART (the tiled kernels only): split K. Block z of the grid sums
// columns [z·kchunk, (z+1)·kchunk) and stores its raw sums (gate's then, for
// pairs, up's at an offset of gridDim.z·T·rows) to y[(z·T + t)·rows + r];
// gemm_reduce then adds the splits in order z = 0, 1, … and applies the
// launch's real mode. A grid of fewer blocks than multiprocessors otherwise
// waits on one block's whole K loop (k_proj at T = 512: 32 blocks).
#define MM_PART 3

#define GM_BM 128 // weight rows (output columns) per block
#define GM_BK 32  // columns per K-step: one piece of 32 columns per row
#define GM_TM 8   // rows per thread
#define GM_TN 4   // tokens per thread

// gm_code returns code i (0 … 31) of 32 BITS-bit codes packed LSB first in wd.
template <int BITS>
__device__ __forceinline__ u32 gm_code(const u32* wd, int i) {
    const int bit = i * BITS, w = bit >> 5, sh = bit & 31;
    u32 v = wd[w] >> sh;
    if (sh + BITS > 32) v |= wd[w + 1] << (32 - sh);
    return v & ((1u << BITS) - 1u);
}

// gm_piece decodes columns k0 … k0+31 of row r of a stored matrix into
// column c of a shared tile laid out [GM_BK][LD] (ws[k·LD + c]): a warp's
// threads take consecutive c, so each store instruction hits 32 banks. With
// RAW (the tensor-core kernels), affine rows keep their codes q as floats and
// the group's scale and bias go to sb[c] and sb[GM_BM + c]; float rows are
// stored as they are either way.
template <int KIND, int LD, bool RAW>
__device__ __forceinline__ void gm_piece(float* ws, int c, const u8* __restrict__ w, const u8* __restrict__ sc,
                                         const u8* __restrict__ bi, int r, int cols, int k0, int gs, int sfmt,
                                         float* sb) {
    if constexpr (KIND == FMT_F32) {
        const float4* p = (const float4*)(w + ((long)r * cols + k0) * 4);
#pragma unroll
        for (int m = 0; m < 8; m++) {
            const float4 v = p[m];
            ws[(4 * m) * LD + c] = v.x;
            ws[(4 * m + 1) * LD + c] = v.y;
            ws[(4 * m + 2) * LD + c] = v.z;
            ws[(4 * m + 3) * LD + c] = v.w;
        }
    } else if constexpr (KIND == FMT_BF16 || KIND == FMT_F16) {
        const uint4* p = (const uint4*)(w + ((long)r * cols + k0) * 2);
#pragma unroll
        for (int m = 0; m < 4; m++) {
            const uint4 v = p[m];
            const u32 a[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int q = 0; q < 4; q++) {
                const int k = 8 * m + 2 * q;
                if constexpr (KIND == FMT_BF16) {
                    ws[k * LD + c] = __uint_as_float(a[q] << 16);
                    ws[(k + 1) * LD + c] = __uint_as_float(a[q] & 0xffff0000u);
                } else {
                    ws[k * LD + c] = f16_to_f32(a[q] & 0xffffu);
                    ws[(k + 1) * LD + c] = f16_to_f32(a[q] >> 16);
                }
            }
        }
    } else {
        constexpr int BITS = KIND - 100; // 32 codes take BITS words
        const u8* p = w + (long)r * ((long)cols * BITS / 8) + (long)k0 * BITS / 8;
        u32 wd[BITS];
        if constexpr (BITS == 4 || BITS == 8) {
#pragma unroll
            for (int m = 0; m < BITS / 4; m++) {
                const uint4 v = ((const uint4*)p)[m];
                wd[4 * m] = v.x; wd[4 * m + 1] = v.y; wd[4 * m + 2] = v.z; wd[4 * m + 3] = v.w;
            }
        } else if constexpr (BITS == 2) {
            const uint2 v = *(const uint2*)p;
            wd[0] = v.x; wd[1] = v.y;
        } else {
#pragma unroll
            for (int m = 0; m < BITS; m++) wd[m] = ((const u32*)p)[m];
        }
        const long gi = (long)r * (cols / gs) + k0 / gs;
        const float s = load_float(sc, gi, sfmt), b = load_float(bi, gi, sfmt);
        if constexpr (RAW) {
            sb[c] = s;
            sb[GM_BM + c] = b;
#pragma unroll
            for (int i = 0; i < 32; i++) ws[i * LD + c] = (float)gm_code<BITS>(wd, i);
        } else {
#pragma unroll
            for (int i = 0; i < 32; i++) ws[i * LD + c] = fmaf(s, (float)gm_code<BITS>(wd, i), b);
        }
    }
}

// gm_stage_w decodes the block's K-step k0 of rows row0 … row0+GM_BM−1 of w
// (and of w2 for NP = 2) into shared tiles [GM_BK][LD] at ws, GM_BK·LD
// floats apart, with NT threads; rows ≥ rows are zeros. RAW: see gm_piece
// (scales and biases to sb, 2·GM_BM floats a matrix).
template <int KIND, int LD, bool RAW, int NP, int NT>
__device__ __forceinline__ void gm_stage_w(float* ws, float* sb, const u8* w, const u8* sc, const u8* bi,
                                           const u8* w2, const u8* sc2, const u8* bi2, int row0, int rows, int cols,
                                           int k0, int gs, int sfmt) {
    for (int p = threadIdx.x; p < NP * GM_BM; p += NT) {
        const int c = p % GM_BM, m = p / GM_BM, r = row0 + c;
        float* wm = ws + m * (GM_BK * LD);
        float* sbm = RAW ? sb + m * 2 * GM_BM : nullptr;
        if (r < rows) {
            if (m == 0) gm_piece<KIND, LD, RAW>(wm, c, w, sc, bi, r, cols, k0, gs, sfmt, sbm);
            else gm_piece<KIND, LD, RAW>(wm, c, w2, sc2, bi2, r, cols, k0, gs, sfmt, sbm);
        } else {
#pragma unroll
            for (int k = 0; k < GM_BK; k++) wm[k * LD + c] = 0.f;
            if constexpr (RAW) sbm[c] = sbm[GM_BM + c] = 0.f;
        }
    }
}

// gm_stage_x copies float4 number q = xq, xq+XQ, … of K-step k0 of x row xr
// (zeros without one) transposed into xs[k·LD + xn], and returns their sum.
template <int LD, int XQ>
__device__ __forceinline__ float gm_stage_x(float* xs, const float* xr, int k0, int xn, int xq) {
    float s = 0.f;
#pragma unroll
    for (int q = xq; q < GM_BK / 4; q += XQ) {
        float4 v;
        if (xr) v = ((const float4*)(xr + k0))[q];
        else v.x = v.y = v.z = v.w = 0.f;
        xs[(4 * q) * LD + xn] = v.x;
        xs[(4 * q + 1) * LD + xn] = v.y;
        xs[(4 * q + 2) * LD + xn] = v.z;
        xs[(4 * q + 3) * LD + xn] = v.w;
        s += (v.x + v.y) + (v.z + v.w);
    }
    return s;
}

// gm_out applies a launch's mode to one output (token t, row r): a holds the
// sums, a2 the up matrix's for pairs; MM_PART stores both raw.
template <bool PAIR>
__device__ __forceinline__ void gm_out(float* y, float a, float a2, int t, int r, int T, int rows, int ldy, int mode,
                                       const int* yrows, const float* ywt) {
    if (mode == MM_PART) {
        const long o = ((long)blockIdx.z * T + t) * rows + r;
        y[o] = a;
        if constexpr (PAIR) y[(long)gridDim.z * T * rows + o] = a2;
        return;
    }
    float v = a;
    if constexpr (PAIR) v = silu_f(a) * a2;
    if (yrows) {
        y[(long)yrows[t] * ldy + r] += ywt[t] * v;
    } else {
        const long o = (long)t * ldy + r;
        y[o] = mode == MM_ACCUM ? y[o] + v : v;
    }
}

// Shared floats of a SIMT tile: weights (gate and up for pairs), then x.
#define GS_SMEM(NP, BN) ((NP) * GM_BK * GM_BM + GM_BK * (BN))

// gemm_tile computes the tile of rows row0 … row0+GM_BM−1 and tokens
// t0 … t0+BN−1 (those < rows, < T) with (GM_BM/GM_TM)·(BN/GM_TN) threads.
// smem holds GS_SMEM(PAIR ? 2 : 1, BN) floats.
template <int KIND, bool PAIR, int BN>
__device__ __forceinline__ void gemm_tile(float* y, const u8* w, const u8* sc, const u8* bi, const u8* w2,
                                          const u8* sc2, const u8* bi2, const float* x, const int* xrows,
                                          const int* yrows, const float* ywt, int rows, int cols, int T, int ldx,
                                          int ldy, int gs, int sfmt, int mode, int row0, int t0, int kb, int ke,
                                          float* smem) {
    constexpr int TX = BN / GM_TN, NT = (GM_BM / GM_TM) * TX, NP = PAIR ? 2 : 1;
    float* ws = smem;                     // [NP][GM_BK][GM_BM]
    float* xs = smem + NP * GM_BK * GM_BM; // [GM_BK][BN]
    constexpr int XQ = NT / BN; // threads per staged token (NT is 4·BN)
    static_assert(NT % BN == 0 && (GM_BK / 4) % XQ == 0, "x staging layout");
    const int tid = threadIdx.x;
    const int tx = tid % TX, ty = tid / TX;
    // x staging: this thread copies float4 number xq, xq+XQ, … of token xn's
    // K-step, transposed into xs[k·BN + xn] (consecutive threads, consecutive
    // tokens: each store instruction hits 32 banks).
    const int xn = tid % BN, xq = tid / BN, xt = t0 + xn;
    const float* xr = xt < T ? x + (long)(xrows ? xrows[xt] : xt) * ldx : nullptr;

    float acc[GM_TM][GM_TN], acc2[PAIR ? GM_TM : 1][GM_TN];
#pragma unroll
    for (int i = 0; i < GM_TM; i++)
#pragma unroll
        for (int j = 0; j < GM_TN; j++) {
            acc[i][j] = 0.f;
            if constexpr (PAIR) acc2[i][j] = 0.f;
        }

    for (int k0 = kb; k0 < ke; k0 += GM_BK) {
        gm_stage_w<KIND, GM_BM, false, NP, NT>(ws, nullptr, w, sc, bi, w2, sc2, bi2, row0, rows, cols, k0, gs, sfmt);
        gm_stage_x<BN, XQ>(xs, xr, k0, xn, xq);
        __syncthreads();
#pragma unroll 8
        for (int k = 0; k < GM_BK; k++) {
            const float4 a0 = *(const float4*)(ws + k * GM_BM + ty * GM_TM);
            const float4 a1 = *(const float4*)(ws + k * GM_BM + ty * GM_TM + 4);
            const float4 bx = *(const float4*)(xs + k * BN + tx * GM_TN);
            const float a[GM_TM] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
            const float b[GM_TN] = {bx.x, bx.y, bx.z, bx.w};
#pragma unroll
            for (int i = 0; i < GM_TM; i++)
#pragma unroll
                for (int j = 0; j < GM_TN; j++) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
            if constexpr (PAIR) {
                const float4 c0 = *(const float4*)(ws + GM_BK * GM_BM + k * GM_BM + ty * GM_TM);
                const float4 c1 = *(const float4*)(ws + GM_BK * GM_BM + k * GM_BM + ty * GM_TM + 4);
                const float a2[GM_TM] = {c0.x, c0.y, c0.z, c0.w, c1.x, c1.y, c1.z, c1.w};
#pragma unroll
                for (int i = 0; i < GM_TM; i++)
#pragma unroll
                    for (int j = 0; j < GM_TN; j++) acc2[i][j] = fmaf(a2[i], b[j], acc2[i][j]);
            }
        }
        __syncthreads();
    }

#pragma unroll
    for (int j = 0; j < GM_TN; j++) {
        const int t = t0 + tx * GM_TN + j;
        if (t >= T) break;
#pragma unroll
        for (int i = 0; i < GM_TM; i++) {
            const int r = row0 + ty * GM_TM + i;
            if (r >= rows) break;
            gm_out<PAIR>(y, acc[i][j], PAIR ? acc2[PAIR ? i : 0][j] : 0.f, t, r, T, rows, ldy, mode, yrows, ywt);
        }
    }
}

// ---------------------------------------------------------------------------
// The same tiles on tensor cores (sm_80 and later): mma.sync m16n8k8 with
// tf32 inputs and float32 accumulation. Tf32 keeps 11 significant bits, so
// the product is kept exact enough this way: the weights go in exactly —
// affine codes q (small integers) and bf16/f16 values are tf32 numbers — and x
// is split into x_hi = tf32(x) and x_lo = tf32(x − x_hi), two products whose
// sum misses x by < 2⁻²² relative (float32 itself: 2⁻²⁴). For affine rows each
// K-step (inside one group) gives P = Σ q·x per row and token, folded as
// acc += s·P + b·Σx (what mm_fast computes). Float32 weights stay on the SIMT
// kernels. A warp owns 32 rows × 32 tokens (2 × 4 tiles of 16 × 8); the
// shared tiles are padded by 4 floats a line so that the fragment loads
// (lanes g = lane/4 on rows, t4 = lane%4 on K) hit 32 distinct banks.

#define GT_LDW (GM_BM + 4)

// gm_tf32 rounds x to the nearest tf32 (its bits, low 13 zero).
// Before sm_80 neither instruction exists: the Go side then never launches
// these kernels, and they compile to a trap so that the unit still builds.
__device__ __forceinline__ u32 gm_tf32(float x) {
    u32 r;
#if __CUDA_ARCH__ >= 800
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
#else
    r = 0;
    asm volatile("trap;");
#endif
    return r;
}

// gm_mma: d += A·B for one 16×8×8 tile (fragments in the PTX layout).
__device__ __forceinline__ void gm_mma(float* d, const u32* a, const u32* b) {
#if __CUDA_ARCH__ < 800
    asm volatile("trap;");
#else
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// gm_zero sets the N floats of a register array to 0.
template <int N>
__device__ __forceinline__ void gm_zero(float* a) {
#pragma unroll
    for (int i = 0; i < N; i++) a[i] = 0.f;
}

// Shared floats of a tensor-core tile: weights, x, scales and biases, Σx.
#define GT_SMEM(NP, BN) ((NP) * GM_BK * GT_LDW + GM_BK * ((BN) + 4) + (NP) * 2 * GM_BM + (BN))

// gemm_tc_tile is gemm_tile on tensor cores: (BN/32)·4 warps, smem holds
// GT_SMEM(PAIR ? 2 : 1, BN) floats.
template <int KIND, bool PAIR, int BN>
__device__ __forceinline__ void gemm_tc_tile(float* y, const u8* w, const u8* sc, const u8* bi, const u8* w2,
                                             const u8* sc2, const u8* bi2, const float* x, const int* xrows,
                                             const int* yrows, const float* ywt, int rows, int cols, int T, int ldx,
                                             int ldy, int gs, int sfmt, int mode, int row0, int t0, int kb, int ke,
                                             float* smem) {
    constexpr bool AFF = KIND >= 100;
    constexpr int NP = PAIR ? 2 : 1, LDX = BN + 4, NT = 4 * BN, XQ = NT / BN;
    float* ws = smem;                       // [NP][GM_BK][GT_LDW]
    float* xs = ws + NP * GM_BK * GT_LDW;   // [GM_BK][LDX]
    float* sb = xs + GM_BK * LDX;           // [NP][2][GM_BM]: scales, biases
    float* xsum = sb + NP * 2 * GM_BM;      // [BN]
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t4 = lane & 3;
    const int wr = (warp & 3) * 32, wt = (warp >> 2) * 32; // the warp's rows and tokens in the tile
    // x staging: the XQ = 4 adjacent threads of token xn copy its K-step's
    // float4s xq, xq+4 (coalesced) and add them up for Σx with two shuffles.
    const int xn = tid / XQ, xq = tid % XQ, xt = t0 + xn;
    const float* xr = xt < T ? x + (long)(xrows ? xrows[xt] : xt) * ldx : nullptr;

    float acc[NP][2][4][4], part[AFF ? NP : 1][2][4][4];
    gm_zero<NP * 32>(&acc[0][0][0][0]);

    for (int k0 = kb; k0 < ke; k0 += GM_BK) {
        gm_stage_w<KIND, GT_LDW, true, NP, NT>(ws, sb, w, sc, bi, w2, sc2, bi2, row0, rows, cols, k0, gs, sfmt);
        float s = gm_stage_x<LDX, XQ>(xs, xr, k0, xn, xq);
        if constexpr (AFF) {
            s += __shfl_xor_sync(0xffffffffu, s, 1);
            s += __shfl_xor_sync(0xffffffffu, s, 2);
            if (xq == 0) xsum[xn] = s;
        }
        __syncthreads();
        if constexpr (AFF) gm_zero<NP * 32>(&part[0][0][0][0]);
#pragma unroll
        for (int ks = 0; ks < GM_BK; ks += 8) {
            u32 bh[4][2], bl[4][2];
#pragma unroll
            for (int j = 0; j < 4; j++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const float v = xs[(ks + t4 + 4 * h) * LDX + wt + j * 8 + g];
                    bh[j][h] = gm_tf32(v);
                    bl[j][h] = gm_tf32(v - __uint_as_float(bh[j][h]));
                }
#pragma unroll
            for (int m = 0; m < NP; m++) {
                const float* wm = ws + m * (GM_BK * GT_LDW);
                u32 a[2][4];
#pragma unroll
                for (int i = 0; i < 2; i++) {
                    const int rr = wr + i * 16 + g;
                    a[i][0] = __float_as_uint(wm[(ks + t4) * GT_LDW + rr]);
                    a[i][1] = __float_as_uint(wm[(ks + t4) * GT_LDW + rr + 8]);
                    a[i][2] = __float_as_uint(wm[(ks + t4 + 4) * GT_LDW + rr]);
                    a[i][3] = __float_as_uint(wm[(ks + t4 + 4) * GT_LDW + rr + 8]);
                }
#pragma unroll
                for (int i = 0; i < 2; i++)
#pragma unroll
                    for (int j = 0; j < 4; j++) {
                        float* d = AFF ? part[AFF ? m : 0][i][j] : acc[m][i][j];
                        gm_mma(d, a[i], bh[j]);
                        gm_mma(d, a[i], bl[j]);
                    }
            }
        }
        if constexpr (AFF) {
            float xv[4][2];
#pragma unroll
            for (int j = 0; j < 4; j++) {
                xv[j][0] = xsum[wt + j * 8 + 2 * t4];
                xv[j][1] = xsum[wt + j * 8 + 2 * t4 + 1];
            }
#pragma unroll
            for (int m = 0; m < NP; m++)
#pragma unroll
                for (int i = 0; i < 2; i++)
#pragma unroll
                    for (int hr = 0; hr < 2; hr++) {
                        const int rr = wr + i * 16 + g + 8 * hr;
                        const float sc_ = sb[m * 2 * GM_BM + rr], bi_ = sb[m * 2 * GM_BM + GM_BM + rr];
#pragma unroll
                        for (int j = 0; j < 4; j++)
#pragma unroll
                            for (int hc = 0; hc < 2; hc++) {
                                float& o = acc[m][i][j][2 * hr + hc];
                                o = fmaf(sc_, part[m][i][j][2 * hr + hc], o);
                                o = fmaf(bi_, xv[j][hc], o);
                            }
                    }
        }
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int q = 0; q < 4; q++) {
                const int r = row0 + wr + i * 16 + g + 8 * (q >> 1);
                const int t = t0 + wt + j * 8 + 2 * t4 + (q & 1);
                if (r >= rows || t >= T) continue;
                gm_out<PAIR>(y, acc[0][i][j][q], acc[PAIR ? 1 : 0][i][j][q], t, r, T, rows, ldy, mode, yrows, ywt);
            }
}

#define GM_PARAMS                                                                                              \
    float *y, const u8 *w, const u8 *sc, const u8 *bi, const u8 *w2, const u8 *sc2, const u8 *bi2, const float *x, \
        const int *xrows, const int *yrows, const float *ywt, int rows, int cols, int T, int ldx, int ldy, int gs,   \
        int sfmt, int mode, int kchunk

// gm_tile runs a tile on tensor cores (TC) or on the SIMT cores; smem holds
// GM_SMEM(TC, PAIR ? 2 : 1, BN) floats.
#define GM_SMEM(TC, NP, BN) ((TC) ? GT_SMEM(NP, BN) : GS_SMEM(NP, BN))

template <int KIND, bool PAIR, int BN, bool TC>
__device__ __forceinline__ void gm_tile(float* y, const u8* w, const u8* sc, const u8* bi, const u8* w2, const u8* sc2,
                                        const u8* bi2, const float* x, const int* xrows, const int* yrows,
                                        const float* ywt, int rows, int cols, int T, int ldx, int ldy, int gs, int sfmt,
                                        int mode, int row0, int t0, int kb, int ke, float* smem) {
    if constexpr (TC)
        gemm_tc_tile<KIND, PAIR, BN>(y, w, sc, bi, w2, sc2, bi2, x, xrows, yrows, ywt, rows, cols, T, ldx, ldy, gs,
                                     sfmt, mode, row0, t0, kb, ke, smem);
    else
        gemm_tile<KIND, PAIR, BN>(y, w, sc, bi, w2, sc2, bi2, x, xrows, yrows, ywt, rows, cols, T, ldx, ldy, gs, sfmt,
                                  mode, row0, t0, kb, ke, smem);
}

// One kernel per format, pairing, token tile and core kind: grid
// (⌈rows/GM_BM⌉, ⌈T/BN⌉, splits of K); both kinds run 4·BN threads.
#define GEMM_KERNEL(name, KIND, PAIR, BN, TC)                                                                     \
    extern "C" __global__ void __launch_bounds__(4 * BN) name(GM_PARAMS) {                                        \
        __shared__ __align__(16) float smem[GM_SMEM(TC, PAIR ? 2 : 1, BN)];                                     \
        const int kb = blockIdx.z * kchunk;                                                                    \
        gm_tile<KIND, PAIR, BN, TC>(y, w, sc, bi, w2, sc2, bi2, x, xrows, yrows, ywt, rows, cols, T, ldx, ldy, gs, \
                                    sfmt, mode, blockIdx.x * GM_BM, blockIdx.y * BN, kb, min(cols, kb + kchunk),   \
                                    smem);                                                                      \
    }

#define GEMM_KERNELS(pfx, sfx, KIND, TC)                       \
    GEMM_KERNEL(pfx##_##sfx##_32, KIND, false, 32, TC)         \
    GEMM_KERNEL(pfx##_##sfx##_64, KIND, false, 64, TC)         \
    GEMM_KERNEL(pfx##2_##sfx##_32, KIND, true, 32, TC)         \
    GEMM_KERNEL(pfx##2_##sfx##_64, KIND, true, 64, TC)

GEMM_KERNELS(gemm, f32, FMT_F32, false)
GEMM_KERNELS(gemm, bf16, FMT_BF16, false)
GEMM_KERNELS(gemm, f16, FMT_F16, false)
GEMM_KERNELS(gemm, q2, 102, false)
GEMM_KERNELS(gemm, q3, 103, false)
GEMM_KERNELS(gemm, q4, 104, false)
GEMM_KERNELS(gemm, q8, 108, false)
GEMM_KERNELS(gemmt, bf16, FMT_BF16, true)
GEMM_KERNELS(gemmt, f16, FMT_F16, true)
GEMM_KERNELS(gemmt, q2, 102, true)
GEMM_KERNELS(gemmt, q3, 103, true)
GEMM_KERNELS(gemmt, q4, 104, true)
GEMM_KERNELS(gemmt, q8, 108, true)

// ---------------------------------------------------------------------------
// The routed experts of a prefill chunk, all in three launches. One launch a
// expert would give each only ⌈I/GM_BM⌉ blocks (6 for 768 rows) on a GPU of
// 132 multiprocessors; here every (expert, token tile) pair is one "item"
// (blockIdx.y) of a grid that spans all the experts:
//   phase 0: h[off+t] = silu(gate·x[rows[off+t]]) ⊙ (up·x[rows[off+t]])
//   phase 1: yo[off+t] = down·h[off+t]
// (t < n of job j, off its first entry in the flat row list), then
// gemm_combine adds wt[a]·yo[a] into each output row for its entries a in
// job order: the order the experts were called in, whichever block
// finishes first, and no float atomics.

#define GMX_BN 32 // tokens per item: a 512-token chunk gives each of 128 experts ~32 rows

// GemmJob: one expert's matrices and its span of the flat row list (80 bytes;
// mirrored by the Go struct GemmJob).
struct GemmJob {
    const u8 *gw, *gsc, *gbi, *uw, *usc, *ubi, *dw, *dsc, *dbi;
    int off, n;
};

template <int KIND, bool TC>
__device__ __forceinline__ void gemm_experts(const GemmJob* jobs, const int* items, const int* rows, float* h,
                                             const float* x, int ldx, float* yo, int I, int H, int gs, int sfmt,
                                             int phase, float* smem) {
    const GemmJob& j = jobs[items[2 * blockIdx.y]];
    const int t0 = items[2 * blockIdx.y + 1];
    if (phase == 0)
        gm_tile<KIND, true, GMX_BN, TC>(h + (long)j.off * I, j.gw, j.gsc, j.gbi, j.uw, j.usc, j.ubi, x, rows + j.off,
                                        nullptr, nullptr, I, H, j.n, ldx, I, gs, sfmt, MM_SWIGLU, blockIdx.x * GM_BM,
                                        t0, 0, H, smem);
    else
        gm_tile<KIND, false, GMX_BN, TC>(yo + (long)j.off * H, j.dw, j.dsc, j.dbi, nullptr, nullptr, nullptr,
                                         h + (long)j.off * I, nullptr, nullptr, nullptr, H, I, j.n, I, H, gs, sfmt,
                                         MM_STORE, blockIdx.x * GM_BM, t0, 0, I, smem);
}

// gemmx_*: SIMT tiles; gemmxt_*: tensor cores (the formats gemmt takes).
#define GEMMX_KERNEL(name, KIND, TC)                                                                              \
    extern "C" __global__ void __launch_bounds__(4 * GMX_BN)                                                      \
        name(const GemmJob* jobs, const int* items, const int* rows, float* h, const float* x, int ldx, float* yo,  \
             int I, int H, int gs, int sfmt, int phase) {                                                         \
        __shared__ __align__(16) float smem[GM_SMEM(TC, 2, GMX_BN)];                                            \
        gemm_experts<KIND, TC>(jobs, items, rows, h, x, ldx, yo, I, H, gs, sfmt, phase, smem);                  \
    }

GEMMX_KERNEL(gemmx_f32, FMT_F32, false)
GEMMX_KERNEL(gemmx_bf16, FMT_BF16, false)
GEMMX_KERNEL(gemmx_f16, FMT_F16, false)
GEMMX_KERNEL(gemmx_q2, 102, false)
GEMMX_KERNEL(gemmx_q3, 103, false)
GEMMX_KERNEL(gemmx_q4, 104, false)
GEMMX_KERNEL(gemmx_q8, 108, false)
GEMMX_KERNEL(gemmxt_bf16, FMT_BF16, true)
GEMMX_KERNEL(gemmxt_f16, FMT_F16, true)
GEMMX_KERNEL(gemmxt_q2, 102, true)
GEMMX_KERNEL(gemmxt_q3, 103, true)
GEMMX_KERNEL(gemmxt_q4, 104, true)
GEMMX_KERNEL(gemmxt_q8, 108, true)

// gemm_reduce finishes a split-K product (MM_PART): for token t =
// blockIdx.y and row r, the S splits' sums in order (and the up matrix's for
// pairs), then the launch's mode as gemm_tile's epilogue applies it.
extern "C" __global__ void gemm_reduce(float* y, const float* part, int S, int T, int rows, int ldy, int mode,
                                       int pair, const int* yrows, const float* ywt) {
    const int t = blockIdx.y, r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    float v = 0.f, v2 = 0.f;
    for (int z = 0; z < S; z++) {
        const long o = ((long)z * T + t) * rows + r;
        v += part[o];
        if (pair) v2 += part[(long)S * T * rows + o];
    }
    if (pair) v = silu_f(v) * v2;
    gm_out<false>(y, v, 0.f, t, r, T, rows, ldy, mode, yrows, ywt);
}

// gemm_combine: out[r] += wt[a]·yo[a] for the entries a = idx[start[r]] …
// idx[start[r+1]−1] of output row r (blockIdx.y), in that (job) order; one
// thread per column.
extern "C" __global__ void gemm_combine(float* out, const float* yo, const float* wt, const int* start, const int* idx,
                                        int H) {
    const int r = blockIdx.y, c = blockIdx.x * blockDim.x + threadIdx.x;
    const int k0 = start[r], k1 = start[r + 1];
    if (c >= H || k0 == k1) return;
    float o = out[(long)r * H + c];
    for (int k = k0; k < k1; k++) {
        const int a = idx[k];
        o += wt[a] * yo[(long)a * H + c];
    }
    out[(long)r * H + c] = o;
}

// gemm_fma_peak measures the float32 FMA ceiling the tiled kernels are
// compared with (cuda.test's measurement): GM_TM·GM_TN independent chains a
// thread, n steps each; the sums go to out only if they are an impossible
// value, so nothing is optimized away and nothing is written.
extern "C" __global__ void __launch_bounds__(256) gemm_fma_peak(float* out, int n, float a, float b) {
    float v[16];
#pragma unroll
    for (int i = 0; i < 16; i++) v[i] = threadIdx.x * 1e-3f + i;
    for (int s = 0; s < n; s++)
#pragma unroll
        for (int i = 0; i < 16; i++) v[i] = fmaf(v[i], a, b);
    float t = 0.f;
#pragma unroll
    for (int i = 0; i < 16; i++) t += v[i];
    if (t == -1.2345e30f) out[blockIdx.x * blockDim.x + threadIdx.x] = t;
}
