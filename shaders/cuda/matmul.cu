// matmul.cu: y[t, r] (+)= Σ_c W[r, c]·x[t, c] for T tokens, with the weight's
// dequantization fused into the product. At batch 1 this is memory-bound. One
// warp streams one weight row in "units" (4-bit: one 32-bit word of 8 codes;
// 8-bit: 8 bytes; bf16/f16: 16 bytes = 8 values; f32: 16 bytes; 2-bit: a word
// of 16 codes; 3-bit: 3 words = 32 codes), lanes on consecutive units, so each
// weight load instruction of the warp reads one contiguous span. A unit is
// small on purpose: lane l needs the x values of its unit's columns, and with
// 8 columns per unit the warp's x loads are 32-byte strided (8 cache lines per
// instruction) instead of 128-byte strided (32 lines), which is what limited
// the first version (one 32-column chunk per lane: 0.13 of the copy
// bandwidth at 4 bits, docs/PERF.md). Several units per lane are loaded before
// they are used, and a decoded unit serves up to MM_TOK tokens, so a prefill
// chunk of T tokens reads the weights ⌈T/MM_TOK⌉ times instead of T times.
//
// Fast kernels need cols % 32 == 0, group size % 32 == 0 (a unit never
// straddles two groups), 16-byte aligned weight rows and x rows; the Go side
// checks and otherwise launches mm_generic, which decodes element by element.

#define MM_TOK 8
#define MM_WARPS 4

// Format number of affine matrices in the generic kernels (backend.Affine).
#define FMT_AFFINE 4

// code returns code i of a chunk's little-endian, LSB-first bit stream.
template <int BITS>
__device__ __forceinline__ float code(const u32* wd, int i) {
    const int bit = i * BITS, w = bit >> 5, sh = bit & 31;
    u32 v = wd[w] >> sh;
    if (sh + BITS > 32) v |= wd[w + 1] << (32 - sh);
    return (float)(v & ((1u << BITS) - 1u));
}

// Unit<KIND>: UB bytes of a row hold UE elements; UNR units per lane are in
// flight at once (UNR·UE = 32 decoded values in registers).
template <int KIND> struct Unit;
template <> struct Unit<FMT_F32> { static const int UE = 4, UNR = 8; };
template <> struct Unit<FMT_BF16> { static const int UE = 8, UNR = 4; };
template <> struct Unit<FMT_F16> { static const int UE = 8, UNR = 4; };
template <> struct Unit<102> { static const int UE = 16, UNR = 2; };
template <> struct Unit<103> { static const int UE = 32, UNR = 1; };
template <> struct Unit<104> { static const int UE = 8, UNR = 4; };
template <> struct Unit<108> { static const int UE = 8, UNR = 4; };

// load_unit decodes unit u of a row into w[0 … UE).
template <int KIND>
__device__ __forceinline__ void load_unit(const u8* __restrict__ row, int u, float* w) {
    if constexpr (KIND == FMT_F32) {
        float4 v = ((const float4*)row)[u];
        w[0] = v.x; w[1] = v.y; w[2] = v.z; w[3] = v.w;
    } else if constexpr (KIND == FMT_BF16 || KIND == FMT_F16) {
        uint4 v = ((const uint4*)row)[u];
        u32 a[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int m = 0; m < 4; m++) {
            if constexpr (KIND == FMT_BF16) {
                w[2 * m] = __uint_as_float(a[m] << 16);
                w[2 * m + 1] = __uint_as_float(a[m] & 0xffff0000u);
            } else {
                w[2 * m] = f16_to_f32(a[m] & 0xffffu);
                w[2 * m + 1] = f16_to_f32(a[m] >> 16);
            }
        }
    } else {
        constexpr int BITS = KIND - 100;
        constexpr int WORDS = Unit<KIND>::UE * BITS / 32;
        u32 wd[WORDS];
        if constexpr (WORDS == 2) {
            uint2 v = ((const uint2*)row)[u];
            wd[0] = v.x; wd[1] = v.y;
        } else {
#pragma unroll
            for (int i = 0; i < WORDS; i++) wd[i] = ((const u32*)row)[(long)u * WORDS + i];
        }
#pragma unroll
        for (int i = 0; i < Unit<KIND>::UE; i++) w[i] = code<BITS>(wd, i);
    }
}

// MMArgs is every matmul kernel's argument list. Token t of the launch reads
// x row xrows[t] (row t when xrows is null). Modes: MM_STORE y = W·x, MM_ACCUM
// y += W·x, MM_SWIGLU y = silu(W·x) ⊙ (W2·x) with a second matrix of the same
// format (gate and up in one pass over x). With yrows, row t of the result is
// added, times ywt[t], to y row yrows[t] (the MoE combine as the epilogue of
// the expert's down projection).
#define MM_STORE 0
#define MM_ACCUM 1
#define MM_SWIGLU 2

// RowArgs carries the rows and weights of a launch of at most MM_TOK tokens by
// value (n > 0), so a decode step's expert products need no staging copy:
// token t reads x row x[t] and adds w[t]·result to y row y[t].
struct RowArgs {
    int n;
    int x[MM_TOK], y[MM_TOK];
    float w[MM_TOK];
};

#define MM_PARAMS                                                                                              \
    float *y, const u8 *w, const u8 *sc, const u8 *bi, const u8 *w2, const u8 *sc2, const u8 *bi2, const float *x, \
        const int *xrows, const int *yrows, const float *ywt, int rows, int cols, int T, int ldx, int ldy, int gs,   \
        int sfmt, int mode, RowArgs ra
#define MM_ARGS y, w, sc, bi, w2, sc2, bi2, x, xrows, yrows, ywt, rows, cols, T, ldx, ldy, gs, sfmt, mode, ra

// mm_units adds units u0, u0+32, … (UNR of them, those < nunits) of one
// weight row times the nt tokens' x to acc: every unit's weights (and scale
// and bias) are loaded before the first is used.
template <int KIND>
__device__ __forceinline__ void mm_units(const u8* __restrict__ row, const u8* __restrict__ sc,
                                         const u8* __restrict__ bi, long g0, int gs, int sfmt, int u0, int nunits,
                                         const float* const* xr, int nt, float* acc) {
    constexpr int UE = Unit<KIND>::UE, UNR = Unit<KIND>::UNR;
    float wv[UNR][UE];
    float s[UNR], b[UNR];
#pragma unroll
    for (int j = 0; j < UNR; j++) {
        const int u = u0 + 32 * j;
        if (u < nunits) {
            load_unit<KIND>(row, u, wv[j]);
            if constexpr (KIND >= 100) {
                const long gi = g0 + (u * UE) / gs;
                s[j] = load_float(sc, gi, sfmt);
                b[j] = load_float(bi, gi, sfmt);
            }
        }
    }
#pragma unroll
    for (int j = 0; j < UNR; j++) {
        const int u = u0 + 32 * j;
        if (u < nunits) {
#pragma unroll
            for (int t = 0; t < MM_TOK; t++) {
                if (t < nt) {
                    const float4* xp = (const float4*)(xr[t] + u * UE);
                    float d = 0.f, sx = 0.f;
#pragma unroll
                    for (int k = 0; k < UE / 4; k++) {
                        float4 v = xp[k];
                        d += wv[j][4 * k] * v.x + wv[j][4 * k + 1] * v.y + wv[j][4 * k + 2] * v.z + wv[j][4 * k + 3] * v.w;
                        if constexpr (KIND >= 100) sx += (v.x + v.y) + (v.z + v.w);
                    }
                    if constexpr (KIND >= 100) acc[t] += s[j] * d + b[j] * sx;
                    else acc[t] += d;
                }
            }
        }
    }
}

// mm_out finishes a row: the warp's partial sums, then the epilogue.
__device__ __forceinline__ void mm_out(float* acc, float* acc2, bool pair, float* y, const int* yrows,
                                       const float* ywt, int t0, int nt, int r, int ldy, int mode,
                                       const RowArgs& ra) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int t = 0; t < MM_TOK; t++) {
        if (t < nt) {
            float v = warp_sum(acc[t]);
            if (pair) v = silu_f(v) * warp_sum(acc2[t]);
            if (lane == 0) {
                if (yrows) {
                    y[(long)yrows[t0 + t] * ldy + r] += ywt[t0 + t] * v;
                } else if (ra.n > 0 && ra.y[t] >= 0) {
                    y[(long)ra.y[t] * ldy + r] += ra.w[t] * v;
                } else {
                    long o = (long)(t0 + t) * ldy + r;
                    y[o] = mode == MM_ACCUM ? y[o] + v : v;
                }
            }
        }
    }
}

// KIND: FMT_F32, FMT_BF16, FMT_F16 for float rows; 100+bits for affine rows.
template <int KIND, bool PAIR>
__device__ __forceinline__ void mm_fast(MM_PARAMS) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int r = blockIdx.x * MM_WARPS + warp;
    if (r >= rows) return;
    const int t0 = blockIdx.y * MM_TOK;
    const int nt = min(MM_TOK, T - t0);
    const float* xr[MM_TOK];
#pragma unroll
    for (int t = 0; t < MM_TOK; t++) {
        const int tt = t < nt ? t0 + t : t0;
        xr[t] = x + (long)(xrows ? xrows[tt] : ra.n > 0 ? ra.x[t] : tt) * ldx;
    }
    long rowBytes;
    if constexpr (KIND >= 100) rowBytes = (long)cols * (KIND - 100) / 8;
    else rowBytes = (long)cols * (KIND == FMT_F32 ? 4 : 2);
    const u8* row = w + (long)r * rowBytes;
    const u8* row2 = PAIR ? w2 + (long)r * rowBytes : row;
    float acc[MM_TOK], acc2[MM_TOK];
#pragma unroll
    for (int t = 0; t < MM_TOK; t++) acc[t] = acc2[t] = 0.f;
    constexpr int UE = Unit<KIND>::UE, UNR = Unit<KIND>::UNR;
    const int nunits = cols / UE;
    const long g0 = KIND >= 100 ? (long)r * (cols / gs) : 0;
    for (int u0 = lane; u0 < nunits; u0 += 32 * UNR) {
        mm_units<KIND>(row, sc, bi, g0, gs, sfmt, u0, nunits, xr, nt, acc);
        if (PAIR) mm_units<KIND>(row2, sc2, bi2, g0, gs, sfmt, u0, nunits, xr, nt, acc2);
    }
    mm_out(acc, acc2, PAIR, y, yrows, ywt, t0, nt, r, ldy, mode, ra);
}

#define MM_KERNEL(name, name2, KIND)                                                                \
    extern "C" __global__ void __launch_bounds__(MM_WARPS * 32) name(MM_PARAMS) {                  \
        mm_fast<KIND, false>(MM_ARGS);                                                              \
    }                                                                                               \
    extern "C" __global__ void __launch_bounds__(MM_WARPS * 32) name2(MM_PARAMS) {                 \
        mm_fast<KIND, true>(MM_ARGS);                                                               \
    }

MM_KERNEL(mm_f32, mm2_f32, FMT_F32)
MM_KERNEL(mm_bf16, mm2_bf16, FMT_BF16)
MM_KERNEL(mm_f16, mm2_f16, FMT_F16)
MM_KERNEL(mm_q2, mm2_q2, 102)
MM_KERNEL(mm_q3, mm2_q3, 103)
MM_KERNEL(mm_q4, mm2_q4, 104)
MM_KERNEL(mm_q8, mm2_q8, 108)

// ExpertJob is one routed expert of a batch (decode: up to MM_TOK rows each):
// its gate, up and down matrices and the rows and weights routed to it.
struct ExpertJob {
    const u8 *gw, *gs, *gb, *uw, *us, *ub, *dw, *ds, *db;
    int n;
    int rows[MM_TOK];
    float wt[MM_TOK];
};

// mm_experts runs one phase for every job of a batch, job = blockIdx.z:
// phase 0: h_j = silu(gate·x[rows]) ⊙ (up·x[rows])   (h_j: MM_TOK rows of I)
// phase 1: y_j = down·h_j                              (y_j: MM_TOK rows of H)
// The weighted sum into the output is expert_combine, in job order, so the
// result does not depend on which block finishes first.
template <int KIND>
__device__ __forceinline__ void mm_experts(const ExpertJob* jobs, float* h, const float* x, float* yout, int I, int H,
                                           int gs, int sfmt, int phase) {
    const ExpertJob& j = jobs[blockIdx.z];
    RowArgs ra;
    ra.n = j.n;
#pragma unroll
    for (int t = 0; t < MM_TOK; t++) {
        ra.x[t] = phase == 0 ? j.rows[t] : t;
        ra.y[t] = -1;
        ra.w[t] = 0.f;
    }
    float* hj = h + (long)blockIdx.z * MM_TOK * I;
    if (phase == 0)
        mm_fast<KIND, true>(hj, j.gw, j.gs, j.gb, j.uw, j.us, j.ub, x, nullptr, nullptr, nullptr, I, H, j.n, H, I, gs,
                            sfmt, MM_SWIGLU, ra);
    else
        mm_fast<KIND, false>(yout + (long)blockIdx.z * MM_TOK * H, j.dw, j.ds, j.db, nullptr, nullptr, nullptr, hj,
                             nullptr, nullptr, nullptr, H, I, j.n, I, H, gs, sfmt, MM_STORE, ra);
}

#define MMX_KERNEL(name, KIND)                                                                                   \
    extern "C" __global__ void __launch_bounds__(MM_WARPS * 32)                                                  \
        name(const ExpertJob* jobs, float* h, const float* x, float* yout, int I, int H, int gs, int sfmt, int phase) { \
        mm_experts<KIND>(jobs, h, x, yout, I, H, gs, sfmt, phase);                                               \
    }

MMX_KERNEL(mmx_f32, FMT_F32)
MMX_KERNEL(mmx_bf16, FMT_BF16)
MMX_KERNEL(mmx_f16, FMT_F16)
MMX_KERNEL(mmx_q2, 102)
MMX_KERNEL(mmx_q3, 103)
MMX_KERNEL(mmx_q4, 104)
MMX_KERNEL(mmx_q8, 108)

// expert_combine: out[rows_j[t]] += wt_j[t]·y_j[t] for every job j in order
// and its tokens; one thread per column, so no two threads touch one element.
extern "C" __global__ void expert_combine(float* out, const float* yout, const ExpertJob* jobs, int njobs, int H) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= H) return;
    for (int jb = 0; jb < njobs; jb++) {
        const ExpertJob& j = jobs[jb];
        for (int t = 0; t < j.n; t++)
            out[(long)j.rows[t] * H + c] += j.wt[t] * yout[((long)jb * MM_TOK + t) * H + c];
    }
}

// generic_elem decodes element c of row r of any stored matrix.
__device__ __forceinline__ float generic_elem(const u8* w, const u8* sc, const u8* bi, int r, int c, int cols,
                                              int gs, int sfmt, int fmt, int bits) {
    if (fmt == FMT_AFFINE) {
        const u8* row = w + (long)r * ((long)cols * bits / 8);
        long bit = (long)c * bits;
        long by = bit >> 3;
        int sh = (int)(bit & 7);
        u32 v = row[by];
        if (sh + bits > 8) v |= (u32)row[by + 1] << 8;
        float q = (float)((v >> sh) & ((1u << bits) - 1u));
        long gi = (long)r * (cols / gs) + c / gs;
        return load_float(sc, gi, sfmt) * q + load_float(bi, gi, sfmt);
    }
    const u8* row = w + (long)r * ((long)cols * (fmt == FMT_F32 ? 4 : 2));
    return load_float(row, c, fmt);
}

// mm_generic is the any-shape fallback: one element at a time, any bits 1…8,
// any group size, no alignment needs. Same grid and modes as the fast kernels.
extern "C" __global__ void __launch_bounds__(MM_WARPS * 32) mm_generic(MM_PARAMS, int fmt, int bits) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int r = blockIdx.x * MM_WARPS + warp;
    if (r >= rows) return;
    const int t0 = blockIdx.y * MM_TOK;
    const int nt = min(MM_TOK, T - t0);
    const bool pair = mode == MM_SWIGLU;
    const float* xr[MM_TOK];
#pragma unroll
    for (int t = 0; t < MM_TOK; t++) {
        const int tt = t < nt ? t0 + t : t0;
        xr[t] = x + (long)(xrows ? xrows[tt] : ra.n > 0 ? ra.x[t] : tt) * ldx;
    }
    float acc[MM_TOK], acc2[MM_TOK];
#pragma unroll
    for (int t = 0; t < MM_TOK; t++) acc[t] = acc2[t] = 0.f;
    for (int c = lane; c < cols; c += 32) {
        const float wv = generic_elem(w, sc, bi, r, c, cols, gs, sfmt, fmt, bits);
        const float wv2 = pair ? generic_elem(w2, sc2, bi2, r, c, cols, gs, sfmt, fmt, bits) : 0.f;
#pragma unroll
        for (int t = 0; t < MM_TOK; t++)
            if (t < nt) {
                acc[t] += wv * xr[t][c];
                acc2[t] += wv2 * xr[t][c];
            }
    }
    mm_out(acc, acc2, pair, y, yrows, ywt, t0, nt, r, ldy, mode, ra);
}

// embed_rows: dst row t = row ids[t] of a stored matrix, dequantized.
extern "C" __global__ void embed_rows(float* dst, const u8* w, const u8* sc, const u8* bi, const int* ids, int cols,
                                      int gs, int sfmt, int fmt, int bits) {
    const int t = blockIdx.y;
    const int r = ids[t];
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += gridDim.x * blockDim.x)
        dst[(long)t * cols + c] = generic_elem(w, sc, bi, r, c, cols, gs, sfmt, fmt, bits);
}

// ---------------------------------------------------------------------------
// Decode GEMV (one token) for 4- and 8-bit affine rows and bf16 rows of any
// width (columns a multiple of 32). mm_fast gives each lane 4- or 8-byte units and reads x
// from global memory per unit: at T = 1 that kept too few weight bytes in
// flight and spent the load units on x (0.11 of the copy bandwidth at 4 bits,
// docs/PERF.md). Here a block first stages x in dynamic shared memory (16-byte
// loads, all of a thread's issued before the first store, so staging costs one
// memory round trip; padded so that the lanes' 16-byte reads below hit
// distinct banks), then walks the columns in tiles of MV<BITS>::TC chunks a
// lane: each lane keeps the x values of its 16-byte weight chunks (32 columns
// at 4 bits, 16 at 8) in registers for the tile, and each warp streams its R
// rows with every row's chunks (16-byte loads) and scales issued before the
// first is used. Codes become floats by the exponent trick (0x4b000000 | q is
// 2^23 + q), two integer ops and a subtraction instead of a conversion. Same
// arguments and epilogues as mm_fast with T = 1.

#define MV_WARPS 4

// BITS: 4 or 8 (affine codes) or 16 (bf16 rows, no scales).
template <int BITS> struct MV {
    static const int CC = 128 / BITS; // columns per 16-byte chunk
    // chunks per lane in a tile: 2048 columns at 4 bits, 1024 at 8 and at
    // bf16 (4 chunks a row a lane: the registers of R rows' loads in flight)
    static const int TC = BITS == 16 ? 4 : 64 / CC;
    static const int PAD = CC + 4; // shared-memory floats per chunk
};

// mv_stage copies nx rows of cols floats (row i at xrow + i·ldx; 16-byte
// aligned, cols % CC == 0) to xs in the padded chunk layout, row after row;
// the caller synchronizes.
template <int BITS>
__device__ __forceinline__ void mv_stage(float* xs, const float* __restrict__ xrow, int cols, int nx = 1,
                                         long ldx = 0) {
    constexpr int CC = MV<BITS>::CC, PAD = MV<BITS>::PAD, U = 16; // 16 loads a thread in flight: one warp stages 2048
    const int r4 = cols / 4, n4 = nx * r4, nch = cols / CC;
    for (int f0 = threadIdx.x; f0 < n4; f0 += U * blockDim.x) {
        float4 v[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int f = f0 + u * blockDim.x;
            // One row: no division (it would delay the first load).
            const int row = nx == 1 ? 0 : f / r4, c = 4 * (f - row * r4);
            if (f < n4) v[u] = *(const float4*)(xrow + row * ldx + c);
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int f = f0 + u * blockDim.x;
            const int row = nx == 1 ? 0 : f / r4, c = 4 * (f - row * r4);
            if (f < n4) *(float4*)(xs + (row * nch + c / CC) * PAD + c % CC) = v[u];
        }
    }
}

// mv_dot returns Σ_i q_i·x_i over one 16-byte chunk of codes (BITS 4 or 8),
// or Σ_i w_i·x_i over one chunk of 8 bf16 weights (BITS 16: no scales).
template <int BITS>
__device__ __forceinline__ float mv_dot(uint4 v, const float* xv) {
    const u32 wd[4] = {v.x, v.y, v.z, v.w};
    float d0 = 0.f, d1 = 0.f;
    if constexpr (BITS == 16) {
#pragma unroll
        for (int m = 0; m < 4; m++) {
            d0 = fmaf(__uint_as_float(wd[m] << 16), xv[2 * m], d0);
            d1 = fmaf(__uint_as_float(wd[m] & 0xffff0000u), xv[2 * m + 1], d1);
        }
    } else {
        constexpr int PER = 32 / BITS, MASK = (1 << BITS) - 1;
#pragma unroll
        for (int m = 0; m < 4; m++) {
#pragma unroll
            for (int k = 0; k < PER; k++) {
                const float q = __uint_as_float(0x4b000000u | ((wd[m] >> (BITS * k)) & MASK)) - 8388608.f;
                if (k & 1) d1 = fmaf(q, xv[m * PER + k], d1);
                else d0 = fmaf(q, xv[m * PER + k], d0);
            }
        }
    }
    return d0 + d1;
}

// mv_xtile loads the lane's x chunks of the tile from chunk c0 on.
template <int BITS>
__device__ __forceinline__ void mv_xtile(const float* xs, int c0, int nch, float (*xv)[MV<BITS>::CC], float* xsum) {
    constexpr int CC = MV<BITS>::CC, TC = MV<BITS>::TC, PAD = MV<BITS>::PAD;
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int j = 0; j < TC; j++) {
        const int ch = c0 + lane + 32 * j;
        xsum[j] = 0.f;
        if (ch < nch) {
#pragma unroll
            for (int k = 0; k < CC / 4; k++) {
                const float4 v = ((const float4*)(xs + ch * PAD))[k];
                xv[j][4 * k] = v.x; xv[j][4 * k + 1] = v.y; xv[j][4 * k + 2] = v.z; xv[j][4 * k + 3] = v.w;
                xsum[j] += (v.x + v.y) + (v.z + v.w);
            }
        }
    }
}

// mv_rows adds rows r0 … r0+R−1 of w (and of w2 when PAIR) times the lane's x
// chunks of the tile from chunk c0 on to acc[i] (acc2[i]).
template <int BITS, bool PAIR, int R>
__device__ __forceinline__ void mv_rows(const u8* __restrict__ w, const u8* __restrict__ sc, const u8* __restrict__ bi,
                                        const u8* __restrict__ w2, const u8* __restrict__ sc2,
                                        const u8* __restrict__ bi2, int r0, int rows, int cols, int gs, int sfmt, int c0,
                                        const float (*xv)[MV<BITS>::CC], const float* xsum, float* acc, float* acc2) {
    constexpr int CC = MV<BITS>::CC, TC = MV<BITS>::TC;
    const int lane = threadIdx.x & 31, nch = cols / CC, ngr = BITS == 16 ? 0 : cols / gs;
    const long rowBytes = (long)cols * BITS / 8;
    uint4 wv[R][TC], wv2[PAIR ? R : 1][TC];
    float s[R][TC], b[R][TC], s2[PAIR ? R : 1][TC], b2[PAIR ? R : 1][TC];
#pragma unroll
    for (int i = 0; i < R; i++) {
        const int r = r0 + i;
#pragma unroll
        for (int j = 0; j < TC; j++) {
            const int ch = c0 + lane + 32 * j;
            if (r < rows && ch < nch) {
                wv[i][j] = ((const uint4*)(w + (long)r * rowBytes))[ch];
                if constexpr (PAIR) wv2[i][j] = ((const uint4*)(w2 + (long)r * rowBytes))[ch];
                if constexpr (BITS != 16) {
                    const long gi = (long)r * ngr + (ch * CC) / gs;
                    s[i][j] = load_float(sc, gi, sfmt);
                    b[i][j] = load_float(bi, gi, sfmt);
                    if constexpr (PAIR) {
                        s2[i][j] = load_float(sc2, gi, sfmt);
                        b2[i][j] = load_float(bi2, gi, sfmt);
                    }
                }
            }
        }
    }
#pragma unroll
    for (int i = 0; i < R; i++) {
#pragma unroll
        for (int j = 0; j < TC; j++) {
            const int ch = c0 + lane + 32 * j;
            if (r0 + i < rows && ch < nch) {
                if constexpr (BITS == 16) {
                    acc[i] += mv_dot<BITS>(wv[i][j], xv[j]);
                    if constexpr (PAIR) acc2[i] += mv_dot<BITS>(wv2[i][j], xv[j]);
                } else {
                    acc[i] += s[i][j] * mv_dot<BITS>(wv[i][j], xv[j]) + b[i][j] * xsum[j];
                    if constexpr (PAIR) acc2[i] += s2[i][j] * mv_dot<BITS>(wv2[i][j], xv[j]) + b2[i][j] * xsum[j];
                }
            }
        }
    }
}

// mv_fast: the block's rows from row0 on (R a warp, blockDim.x / 32 warps: 4,
// or fewer for small matrices: gemvWarps in decode.go), one token (x row xrow).
// Dynamic shared memory: (cols / CC)·PAD floats.
// (Variants that looped over row groups with the registers carried across, or
// issued the weight loads before staging x, measured slower: docs/PERF.md.)
// With ym not null (mode MM_STORE, no pair), each output is also written to
// ym (mapped host memory: matVecDownload).
template <int BITS, bool PAIR, int R>
__device__ __forceinline__ void mv_fast(float* y, const u8* w, const u8* sc, const u8* bi, const u8* w2, const u8* sc2,
                                        const u8* bi2, const float* xrow, int rows, int cols, int gs, int sfmt,
                                        const int* yrows, const float* ywt, int ldy, int mode, const RowArgs& ra,
                                        int row0, float* ym = nullptr) {
    constexpr int CC = MV<BITS>::CC, TC = MV<BITS>::TC;
    extern __shared__ float4 mv_smem[];
    float* xs = (float*)mv_smem;
    mv_stage<BITS>(xs, xrow, cols);
    __syncthreads();
    const int warp = threadIdx.x >> 5, nch = cols / CC;
    const int r0 = row0 + warp * R;
    if (r0 < rows) { // no early return: a row epilogue may follow (row_epilogue's barriers)
        float acc[R], acc2[R];
#pragma unroll
        for (int i = 0; i < R; i++) acc[i] = acc2[i] = 0.f;
        for (int c0 = 0; c0 < nch; c0 += 32 * TC) {
            float xv[TC][CC], xsum[TC];
            mv_xtile<BITS>(xs, c0, nch, xv, xsum);
            mv_rows<BITS, PAIR, R>(w, sc, bi, w2, sc2, bi2, r0, rows, cols, gs, sfmt, c0, xv, xsum, acc, acc2);
        }
#pragma unroll
        for (int i = 0; i < R; i++) {
            if (r0 + i >= rows) break;
            if (!PAIR && ym) {
                const float v = warp_sum(acc[i]);
                if ((threadIdx.x & 31) == 0) y[r0 + i] = ym[r0 + i] = v;
                continue;
            }
            float a[MM_TOK], a2[MM_TOK];
            a[0] = acc[i];
            a2[0] = PAIR ? acc2[i] : 0.f;
            mm_out(a, a2, PAIR, y, yrows, ywt, 0, 1, r0 + i, ldy, mode, ra);
        }
    }
}

// RowEpi is a row epilogue of a one-token product whose output y is one row
// of n floats (on = 0: none): h += y, the non-finite mark of the result
// (mark not null: atomicMin(mark, markBase | 0)), then dst = rmsnorm(h)·w
// (dst not null) — the residual add, its check and the next RMSNorm, which
// otherwise cost a launch of their own (add_rmsnorm) after the product. The
// last block of the launch to finish runs it (cnt: a counter that is 0 before
// and after the launch), after every block's output is visible.
struct RowEpi {
    float* h;
    float* dst;
    const float* w;
    int* mark;
    u32* cnt;
    double eps;
    int n, markBase, on;
};

// row_epilogue: called by every thread of every block after its outputs are
// written (no thread may have returned).
__device__ __forceinline__ void row_epilogue(const RowEpi& e, const float* y) {
    __shared__ double scratch[32];
    __shared__ int last;
    if (!e.on) return;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(e.cnt, 1u) == gridDim.x * gridDim.y * gridDim.z - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    add_rmsnorm_row<true>(e.h, y, e.dst, e.w, e.n, e.eps, e.mark, e.markBase, 0, scratch);
    if (threadIdx.x == 0) *e.cnt = 0;
}

// Rows per warp: 4, or 2 for gate+up pairs (twice the registers a row).
#define MV_R 4
#define MV_R2 2

// At least MV_MINB blocks a multiprocessor: at most 128 registers a thread.
// The first GEMV compiled to 127 registers (4 blocks) and streamed 0.28 of
// the copy ceiling; the tiled one without this bound 0.21, likely from one
// block fewer (docs/PERF.md, round three).
#define MV_MINB 4

#define MV_KERNEL(name, name2, BITS)                                                                          \
    extern "C" __global__ void __launch_bounds__(MV_WARPS * 32, MV_MINB) name(MM_PARAMS) {                   \
        const float* xr = x + (long)(xrows ? xrows[0] : ra.n > 0 ? ra.x[0] : 0) * ldx;                         \
        mv_fast<BITS, false, MV_R>(y, w, sc, bi, w2, sc2, bi2, xr, rows, cols, gs, sfmt, yrows, ywt, ldy, mode, ra, \
                                   blockIdx.x * (blockDim.x >> 5) * MV_R);                                     \
    }                                                                                                         \
    extern "C" __global__ void __launch_bounds__(MV_WARPS * 32, MV_MINB) name2(MM_PARAMS) {                  \
        const float* xr = x + (long)(xrows ? xrows[0] : ra.n > 0 ? ra.x[0] : 0) * ldx;                         \
        mv_fast<BITS, true, MV_R2>(y, w, sc, bi, w2, sc2, bi2, xr, rows, cols, gs, sfmt, yrows, ywt, ldy, mode, ra, \
                                   blockIdx.x * (blockDim.x >> 5) * MV_R2);                                    \
    }

MV_KERNEL(mv_q4, mv2_q4, 4)
MV_KERNEL(mv_q8, mv2_q8, 8)
MV_KERNEL(mv_bf16, mv2_bf16, 16)

// ExpertJobs is a decode batch's jobs passed by value (no staging copy): at
// most MVX_MAXJ, each with one token.
#define MVX_MAXJ 16
struct ExpertJobs {
    ExpertJob j[MVX_MAXJ];
};

// mvx_up: gate and up of job blockIdx.z (MV_R2 rows a warp) for its one token,
// h_j = silu(gate·x) ⊙ (up·x), h_j at h + blockIdx.z·MM_TOK·I (the layout
// mm_experts uses).
template <int BITS>
__device__ __forceinline__ void mvx_up(const ExpertJobs& jobs, float* h, const float* x, int I, int H, int gs,
                                       int sfmt) {
    const ExpertJob& j = jobs.j[blockIdx.z];
    RowArgs ra;
    ra.n = 0;
    float* hj = h + (long)blockIdx.z * MM_TOK * I;
    mv_fast<BITS, true, MV_R2>(hj, j.gw, j.gs, j.gb, j.uw, j.us, j.ub, x + (long)j.rows[0] * H, I, H, gs, sfmt, nullptr,
                               nullptr, I, MM_SWIGLU, ra, blockIdx.x * (blockDim.x >> 5) * MV_R2);
}

// mvx_down: the down projections of every job, added to out in job order
// (the combine fused: no y buffer, no third launch). A warp owns one output
// row r = blockIdx.x·warps + warp for all n jobs: it reads out[row_j, r] once,
// adds w_j·(down_j[r]·h_j) job after job — the order expert_combine used, so
// the sum does not depend on timing — and writes it back when the next job's
// token row differs (at decode every job has row 0: one read, one write).
// Jobs go MVX_G at a time with all their chunks' loads issued first. Dynamic
// shared memory: n·(I / CC)·PAD floats (every job's h staged).
#define MVX_G 8
// With zero set (a decode step whose output was just cleared: one row, so
// every job has row 0 and every element is written) the sum starts from 0
// instead of reading out, which replaces the clear.
template <int BITS>
__device__ __forceinline__ void mvx_down(const ExpertJobs& jobs, int n, const float* h, float* out, int I, int H, int gs,
                                         int sfmt, int zero) {
    constexpr int CC = MV<BITS>::CC, PAD = MV<BITS>::PAD;
    extern __shared__ float4 mv_smem[];
    float* xs = (float*)mv_smem;
    const int nch = I / CC, ngr = BITS == 16 ? 0 : I / gs;
    mv_stage<BITS>(xs, h, I, n, (long)MM_TOK * I);
    __syncthreads();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int r = blockIdx.x * (blockDim.x >> 5) + warp;
    const long rowBytes = (long)I * BITS / 8;
    float tot = 0.f;
    int cur = -1;
    for (int j0 = 0; j0 < (r < H ? n : 0); j0 += MVX_G) { // no early return: the row epilogue's barriers
        float acc[MVX_G];
#pragma unroll
        for (int g = 0; g < MVX_G; g++) acc[g] = 0.f;
        for (int c0 = 0; c0 < nch; c0 += 32) {
            const int ch = c0 + lane;
            uint4 wv[MVX_G];
            float s[MVX_G], b[MVX_G];
#pragma unroll
            for (int g = 0; g < MVX_G; g++) {
                if (j0 + g < n && ch < nch) {
                    const ExpertJob& j = jobs.j[j0 + g];
                    wv[g] = ((const uint4*)(j.dw + (long)r * rowBytes))[ch];
                    if constexpr (BITS != 16) {
                        const long gi = (long)r * ngr + (ch * CC) / gs;
                        s[g] = load_float(j.ds, gi, sfmt);
                        b[g] = load_float(j.db, gi, sfmt);
                    }
                }
            }
#pragma unroll
            for (int g = 0; g < MVX_G; g++) {
                if (j0 + g < n && ch < nch) {
                    const float* xc = xs + ((long)(j0 + g) * nch + ch) * PAD;
                    float xv[CC], xsum = 0.f;
#pragma unroll
                    for (int k = 0; k < CC / 4; k++) {
                        const float4 v = ((const float4*)xc)[k];
                        xv[4 * k] = v.x; xv[4 * k + 1] = v.y; xv[4 * k + 2] = v.z; xv[4 * k + 3] = v.w;
                        xsum += (v.x + v.y) + (v.z + v.w);
                    }
                    if constexpr (BITS == 16) acc[g] += mv_dot<BITS>(wv[g], xv);
                    else acc[g] += s[g] * mv_dot<BITS>(wv[g], xv) + b[g] * xsum;
                }
            }
        }
#pragma unroll
        for (int g = 0; g < MVX_G; g++) {
            if (j0 + g < n) {
                const float v = warp_sum(acc[g]);
                const ExpertJob& j = jobs.j[j0 + g];
                const int row = j.rows[0];
                if (row != cur) {
                    if (cur >= 0 && lane == 0) out[(long)cur * H + r] = tot;
                    cur = row;
                    tot = zero ? 0.f : out[(long)row * H + r];
                }
                tot += j.wt[0] * v;
            }
        }
    }
    if (cur >= 0 && lane == 0) out[(long)cur * H + r] = tot;
}

#define MVX_KERNEL(up, down, BITS)                                                                                \
    extern "C" __global__ void __launch_bounds__(MV_WARPS * 32, MV_MINB)                                         \
        up(ExpertJobs jobs, float* h, const float* x, int I, int H, int gs, int sfmt) {                          \
        mvx_up<BITS>(jobs, h, x, I, H, gs, sfmt);                                                                 \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(256, 2)                                                         \
        down(ExpertJobs jobs, int n, const float* h, float* out, int I, int H, int gs, int sfmt, int zero,       \
             RowEpi epi) {                                                                                        \
        mvx_down<BITS>(jobs, n, h, out, I, H, gs, sfmt, zero);                                                    \
        row_epilogue(epi, out);                                                                                   \
    }

MVX_KERNEL(mvx_up_q4, mvx_down_q4, 4)
MVX_KERNEL(mvx_up_q8, mvx_down_q8, 8)
MVX_KERNEL(mvx_up_bf16, mvx_down_bf16, 16)

// MVBatch is up to MVB_MAX one-token products of one input row by matrices
// of one format and width (an attention layer's q, k and v projections, a
// GatedDeltaNet's qkv, z, b and a), passed by value: matrix m's row groups
// are blocks start[m] … start[m+1]−1 of one launch, so the small ones do not
// each pay a launch and a mostly idle GPU.
#define MVB_MAX 4
// With n = 1, a row epilogue on y[0] may follow (epi), or y[0] is also
// written to ym (mapped host memory) and block 0 copies nm ints from msrc
// to mdst (the non-finite marks, to their mapped host mirror): a small
// product the host downloads next then needs no copy call (matVecDownload).
struct MVBatch {
    const u8 *w[MVB_MAX], *sc[MVB_MAX], *bi[MVB_MAX];
    float* y[MVB_MAX];
    int rows[MVB_MAX];
    int start[MVB_MAX + 1];
    int n;
    float* ym;
    const int* msrc;
    int* mdst;
    int nm;
};

#define MVB_KERNEL(name, BITS)                                                                                   \
    extern "C" __global__ void __launch_bounds__(MV_WARPS * 32, MV_MINB)                                         \
        name(MVBatch b, const float* x, int cols, int gs, int sfmt, RowEpi epi) {                                \
        int m = 0;                                                                                                \
        while (m + 1 < b.n && (int)blockIdx.x >= b.start[m + 1]) m++;                                            \
        if (blockIdx.x == 0 && b.msrc)                                                                            \
            for (int i = threadIdx.x; i < b.nm; i += blockDim.x) b.mdst[i] = b.msrc[i];                          \
        RowArgs ra;                                                                                               \
        ra.n = 0;                                                                                                 \
        mv_fast<BITS, false, MV_R>(b.y[m], b.w[m], b.sc[m], b.bi[m], nullptr, nullptr, nullptr, x, b.rows[m], cols, \
                                   gs, sfmt, nullptr, nullptr, b.rows[m], MM_STORE, ra,                           \
                                   ((int)blockIdx.x - b.start[m]) * (blockDim.x >> 5) * MV_R, m == 0 ? b.ym : nullptr); \
        row_epilogue(epi, b.y[0]);                                                                                \
    }

MVB_KERNEL(mvb_q4, 4)
MVB_KERNEL(mvb_q8, 8)
MVB_KERNEL(mvb_bf16, 16)
