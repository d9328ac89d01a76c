// attention.cu: causal grouped-query softmax attention over the KV cache.

// attend: block (h, t): query row t (position pos0 + t) of head h against keys
// and values 0 … pos0+t of KV head h / (nH/nKV). Scores q·k·scale go to shared
// memory (dynamic: (D + pos0 + T + np·D) floats, np = blockDim.x / D), then the
// two-pass softmax (max
// subtracted, float32 exp, float64 sum, probabilities rounded to float32 as
// cpu.SoftmaxF32 does), then Σ p·v, then the optional sigmoid output gate.
// q, gate and o are [T, ldq]; kc, vc are [positions, ldkv].
extern "C" __global__ void __launch_bounds__(512) attend(float* o, const float* q, const float* gate, const float* kc, const float* vc, int nH,
                                  int nKV, int D, int pos0, int ldq, int ldkv, float scale, int gated) {
    extern __shared__ float sm[];
    __shared__ double scratchd[32];
    __shared__ float scratchf[32];
    const int h = blockIdx.x, t = blockIdx.y;
    const int g = h / (nH / nKV);
    const int n = pos0 + t + 1;
    float* qs = sm;
    float* sc = sm + D;
    const float* qr = q + (long)t * ldq + (long)h * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) qs[i] = qr[i] * scale;
    __syncthreads();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    for (int s = warp; s < n; s += nw) {
        const float* kr = kc + (long)s * ldkv + (long)g * D;
        float d = 0.f;
        for (int i = lane; i < D; i += 32) d += qs[i] * kr[i];
        d = warp_sum(d);
        if (lane == 0) sc[s] = d;
    }
    __syncthreads();
    float mx = -3.402823466e38f;
    for (int s = threadIdx.x; s < n; s += blockDim.x) mx = fmaxf(mx, sc[s]);
    mx = block_max(mx, scratchf);
    double sum = 0;
    for (int s = threadIdx.x; s < n; s += blockDim.x) {
        const float e = expf(sc[s] - mx);
        sc[s] = e;
        sum += e;
    }
    sum = block_sum_d(sum, scratchd);
    const float inv = (float)(1.0 / sum);
    for (int s = threadIdx.x; s < n; s += blockDim.x) sc[s] *= inv;
    __syncthreads();
    // Σ p·v: the block's threads are np = blockDim.x / D groups of D, group
    // j summing positions j, j+np, …; the groups' partial sums are then added
    // in group order (a fixed order: the result does not depend on timing).
    // One thread a dimension walking all n positions alone was latency-bound
    // at decode (docs/PERF.md).
    const int np = max(1, (int)blockDim.x / D);
    float* part = sc + n;
    for (int id = threadIdx.x; id < np * D; id += blockDim.x) {
        const int i = id % D, j = id / D;
        const float* vr = vc + (long)g * D + i;
        float acc = 0.f;
        for (int s = j; s < n; s += np) acc += sc[s] * vr[(long)s * ldkv];
        part[j * D + i] = acc;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float acc = part[i];
        for (int j = 1; j < np; j++) acc += part[j * D + i];
        if (gated) acc *= sigmoid_f(gate[(long)t * ldq + (long)h * D + i]);
        o[(long)t * ldq + (long)h * D + i] = acc;
    }
}

// kv_store copies T rows of keys and values ([T, ldin]) into the caches at
// rows pos0 … pos0+T−1 ([positions, ldkv]); n floats per row.
extern "C" __global__ void kv_store(float* kc, float* vc, const float* k, const float* v, int T, int n, int ldin,
                                    int ldkv, int pos0) {
    const int t = blockIdx.y;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        kc[(long)(pos0 + t) * ldkv + i] = k[(long)t * ldin + i];
        vc[(long)(pos0 + t) * ldkv + i] = v[(long)t * ldin + i];
    }
}

// ---------------------------------------------------------------------------
// Decode attention split over the positions (flash-decoding). attend gives
// one block to each (head, token): at decode that is nH blocks, each walking
// every position, latency-bound on a quarter of the GPU (57 µs at position
// 512, docs/PERF.md). attend_split gives block (h, t, j) the positions
// j·chunk … (j+1)·chunk−1 of query row t of head h and writes a partial
// result: the chunk's score maximum m_j, its sum l_j = Σ exp(s − m_j)
// (float64, stored rounded) and a_j = Σ exp(s − m_j)·v. The last block of a
// (head, token) to finish — a counter per (head, token), back to zero
// afterwards — combines the partials in split order (so the result does not
// depend on timing): M = max m_j, w_j = exp(m_j − M), o = Σ w_j·a_j / Σ w_j·l_j,
// then the optional sigmoid gate. Against cpu.SoftmaxF32's two passes
// (exponentials in float32 from the global maximum, float64 sum, float32
// probabilities) this rescales each split's exponentials once more: float32
// rounding, far inside the conformance tolerance.
//
// part holds gridDim.z·(D+2) floats per (head, token); cnt one counter per
// (head, token), zero before the launch. Dynamic shared memory: chunk +
// gridDim.z floats. blockDim.x is a multiple of 32; D ≤ 32·AS_KPL.
#define AS_KPL 8
#define AS_POS 8 // positions a warp scores at once (loads in flight): 4 warps, a split of 32 in one round trip
#define AS_VB 32 // positions a thread sums at once for Σ p·v: a split of 32 in one round trip

extern "C" __global__ void __launch_bounds__(256) attend_split(float* o, const float* q, const float* gate, const float* kc,
                                                                const float* vc, float* part, u32* cnt, int nH, int nKV,
                                                                int D, int pos0, int ldq, int ldkv, float scale, int gated,
                                                                int chunk) {
    extern __shared__ float sm[];
    __shared__ double scratchd[32];
    __shared__ float scratchf[32];
    __shared__ int last;
    const int h = blockIdx.x, t = blockIdx.y, sp = blockIdx.z, T = gridDim.y, S = gridDim.z;
    const int g = h / (nH / nKV);
    const int n = pos0 + t + 1;
    const int s0 = sp * chunk, s1 = min(n, s0 + chunk);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    float* sc = sm;
    float* wsh = sm + chunk;
    const float* qr = q + (long)t * ldq + (long)h * D;
    float qv[AS_KPL];
#pragma unroll
    for (int j = 0; j < AS_KPL; j++) {
        const int i = lane + 32 * j;
        qv[j] = i < D ? qr[i] * scale : 0.f;
    }
    // Scores: a warp takes AS_POS consecutive positions at a time, every
    // key's loads issued before the first dot product is reduced.
    for (int s = s0 + warp * AS_POS; s < s1; s += nw * AS_POS) {
        float kv[AS_POS][AS_KPL];
#pragma unroll
        for (int u = 0; u < AS_POS; u++) {
            const float* kr = kc + (long)(s + u) * ldkv + (long)g * D;
#pragma unroll
            for (int j = 0; j < AS_KPL; j++) {
                const int i = lane + 32 * j;
                kv[u][j] = (s + u < s1 && i < D) ? kr[i] : 0.f;
            }
        }
#pragma unroll
        for (int u = 0; u < AS_POS; u++) {
            float d = 0.f;
#pragma unroll
            for (int j = 0; j < AS_KPL; j++) d += qv[j] * kv[u][j];
            d = warp_sum(d);
            if (lane == 0 && s + u < s1) sc[s + u - s0] = d;
        }
    }
    __syncthreads();
    float mx = -3.402823466e38f;
    for (int s = s0 + (int)threadIdx.x; s < s1; s += blockDim.x) mx = fmaxf(mx, sc[s - s0]);
    mx = block_max(mx, scratchf);
    double sum = 0;
    for (int s = s0 + (int)threadIdx.x; s < s1; s += blockDim.x) {
        const float e = expf(sc[s - s0] - mx);
        sc[s - s0] = e;
        sum += e;
    }
    sum = block_sum_d(sum, scratchd); // ends with a barrier: sc is complete
    float* pp = part + ((long)(h * T + t) * S + sp) * (D + 2);
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        const float* vr = vc + (long)g * D + i;
        float acc = 0.f;
        for (int s = s0; s < s1; s += AS_VB) {
            float vv[AS_VB];
#pragma unroll
            for (int u = 0; u < AS_VB; u++) vv[u] = s + u < s1 ? vr[(long)(s + u) * ldkv] : 0.f;
#pragma unroll
            for (int u = 0; u < AS_VB; u++)
                if (s + u < s1) acc += sc[s + u - s0] * vv[u];
        }
        pp[2 + i] = acc;
    }
    if (threadIdx.x == 0) {
        pp[0] = mx;
        pp[1] = (float)sum; // 0 for a split past this row's last position
    }
    // The last block of (h, t) combines. The fence makes this block's
    // partials visible before its count; the last block's fence orders its
    // reads after every count.
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(cnt + h * T + t, 1u) == (u32)(S - 1);
    __syncthreads();
    if (!last) return;
    __threadfence();
    const volatile float* base = part + (long)(h * T + t) * S * (D + 2);
    float M = -3.402823466e38f;
    for (int j = threadIdx.x; j < S; j += blockDim.x)
        if (base[(long)j * (D + 2) + 1] > 0.f) M = fmaxf(M, base[(long)j * (D + 2)]);
    M = block_max(M, scratchf);
    double L = 0;
    for (int j = threadIdx.x; j < S; j += blockDim.x) {
        const float l = base[(long)j * (D + 2) + 1];
        const float w = l > 0.f ? expf(base[(long)j * (D + 2)] - M) : 0.f;
        wsh[j] = w;
        L += (double)l * (double)w;
    }
    L = block_sum_d(L, scratchd); // ends with a barrier: wsh is complete
    const float inv = (float)(1.0 / L);
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float acc = 0.f;
        for (int j = 0; j < S; j++) acc += wsh[j] * base[(long)j * (D + 2) + 2 + i];
        acc *= inv;
        if (gated) acc *= sigmoid_f(gate[(long)t * ldq + (long)h * D + i]);
        o[(long)t * ldq + (long)h * D + i] = acc;
    }
    if (threadIdx.x == 0) cnt[h * T + t] = 0;
}

// ---------------------------------------------------------------------------
// Prefill attention in tiles of query rows. attend gives every (head, row)
// its own block, each reading all of its keys and values from L2: at a
// 512-token prefill that is ~4 GB of L2 reads a layer (816 µs, docs/PERF.md).
// attend_tiled gives block (h, j) the R = AT_RW·warps query rows
// t0 = R·j' … t0+R−1 of head h (j' = gridDim.y−1−j: the longest tiles, the
// last rows, start first) and stages each tile of AT_KT keys, then values,
// in shared memory once for all R rows.
//
// Why one query head a block, not the nH/nKV heads of a KV head: the block's
// score rows in shared memory (below), R·sc floats, are what bounds R;
// grouping G heads would take G times that for the same rows, or G times
// fewer rows. The K/V traffic left after tiling is small against the
// arithmetic: at T = 512, 32 heads of 128, tiles of 32 rows read ~0.14 GB
// from L2 (~20 µs) for ~1.1 G multiply-adds — the arithmetic, not L2, sets
// the time.
//
// Numerics: those of attend, exactly. Scores (q·scale)·k in float32 go to
// the block's score rows S [R × sc] in shared memory; per row, as attend and
// cpu.SoftmaxF32: the maximum over its causal keys 0 … pos0+t,
// e = expf(s − max) in float32, their sum in float64, p = e·(float)(1/sum)
// in float32; then o = Σ p·v in float32 over the same keys (the order of the
// sum differs from attend's: float32 rounding), then the optional sigmoid
// gate. No online (rescaled) softmax. Keys past a row's causal limit get
// p = 0 and are skipped in Σ p·v, so a later row's value never reaches an
// earlier row.
//
// When the block's keys (those of its last row, nEnd) fit a score row
// (nEnd ≤ sc), one pass: scores, softmax, Σ p·v. Otherwise the keys go in
// chunks of sc (a multiple of AT_KT) and the scores are recomputed in three
// passes: the maximum, the sum, then p and Σ p·v chunk by chunk. Every score
// is the same computation in every pass, and lane l handles the keys
// ≡ l (mod 32) of every row in every pass (chunks and tiles start at
// multiples of 32), so the float64 sums and the probabilities are those of
// the one-pass case bit for bit.
//
// Thread layout: warp w owns rows r0 = AT_RW·w … r0+AT_RW−1 throughout. For
// scores, lane c takes key c of the tile (AT_KT = 32) against the warp's
// AT_RW query rows (q loads are broadcasts; keys are read as float4 from rows
// padded to D+4 floats, conflict-free). For the softmax the warp walks its own
// rows, lane l the entries l, l+32, … (the ones it scored). For Σ p·v lane l
// takes dimensions l, l+32, … (D/32 ≤ AT_DPL of them) of the warp's rows.
//
// Requirements (checked by the host, pkg/backend/cuda attendTiledShape):
// blockDim.x a multiple of 32 (≤ 256), D a multiple of 32 and ≤ 32·AT_DPL,
// nH a multiple of nKV, sc a positive multiple of AT_KT. Dynamic shared
// memory: (R + AT_KT)·(D+4) + R·sc floats. q, gate and o are [T, ldq];
// kc, vc are [positions, ldkv].
#define AT_KT 32 // keys (values) a staged tile: one a lane
#define AT_RW 4  // query rows a warp
#define AT_DPL 8 // dimensions a lane in Σ p·v at most: D ≤ 256

// at_stage stages the tile of AT_KT cache rows s0 … of KV head g (rows at
// or past nEnd as zeros) in kv [AT_KT][ld], between two barriers: the first
// lets the previous tile's readers of kv finish, the second publishes it.
__device__ __forceinline__ void at_stage(float* kv, const float* cache, int s0, int nEnd, int ld, int D, int g, int ldkv) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    __syncthreads();
    for (int c = warp; c < AT_KT; c += nw) {
        const float* cr = cache + (long)(s0 + c) * ldkv + (long)g * D;
        const bool in = s0 + c < nEnd;
        for (int i = lane; i < D; i += 32) kv[c * ld + i] = in ? cr[i] : 0.f;
    }
    __syncthreads();
}

// at_scores writes the scores of keys c0 … c1−1 (tiles of AT_KT from c0, a
// multiple of 32; keys at or past nEnd read as zero) of the warp's rows to
// S[r][s − c0]. Each tile: barrier (the previous tile's readers of kv are
// done), stage, barrier, use. Lane l writes the entries ≡ l (mod 32).
__device__ __forceinline__ void at_scores(float* S, float* kv, const float* qs, const float* kc, int c0, int c1, int nEnd,
                                          int sc, int ld, int D, int g, int ldkv) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    const int r0 = warp * AT_RW;
    for (int s0 = c0; s0 < c1; s0 += AT_KT) {
        at_stage(kv, kc, s0, nEnd, ld, D, g, ldkv);
        float acc[AT_RW];
#pragma unroll
        for (int k = 0; k < AT_RW; k++) acc[k] = 0.f;
        const float4* kr4 = (const float4*)(kv + lane * ld);
        for (int i4 = 0; i4 < (D >> 2); i4++) {
            const float4 kk = kr4[i4];
#pragma unroll
            for (int k = 0; k < AT_RW; k++) {
                const float4 qq = ((const float4*)(qs + (r0 + k) * ld))[i4];
                acc[k] += qq.x * kk.x;
                acc[k] += qq.y * kk.y;
                acc[k] += qq.z * kk.z;
                acc[k] += qq.w * kk.w;
            }
        }
#pragma unroll
        for (int k = 0; k < AT_RW; k++) S[(r0 + k) * sc + s0 - c0 + lane] = acc[k];
    }
}

// attend_tiled_body is the kernel for heads of at most 32·DPL dimensions
// (registers for Σ p·v sized at compile time; attend_tiled picks DPL).
template <int DPL>
__device__ __forceinline__ void attend_tiled_body(float* sm, float* o, const float* q, const float* gate, const float* kc,
                                                  const float* vc, int nH, int nKV, int D, int T, int pos0, int ldq,
                                                  int ldkv, float scale, int gated, int sc) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    const int R = AT_RW * nw;
    const int ld = D + 4;       // padded row of q and k/v tiles (D % 4 == 0: rows 16-byte aligned)
    float* qs = sm;             // [R][ld] q·scale
    float* kv = qs + R * ld;    // [AT_KT][ld] the key, then value, tile
    float* S = kv + AT_KT * ld; // [R][sc] scores, then probabilities
    const int h = blockIdx.x;
    const int t0 = ((int)gridDim.y - 1 - (int)blockIdx.y) * R;
    const int rows = min(R, T - t0); // ≥ 1: the host launches ceil(T/R) tiles
    const int g = h / (nH / nKV);
    const int nEnd = pos0 + t0 + rows; // keys of the block's last row: every key the block reads is below
    const int nChunks = (nEnd + sc - 1) / sc;
    const int r0 = warp * AT_RW;
    const int nd = D >> 5;

    // q·scale; the first tile's leading barrier orders it before its use.
    for (int r = warp; r < R; r += nw) {
        const float* qr = q + (long)(t0 + r) * ldq + (long)h * D;
        for (int i = lane; i < D; i += 32) qs[r * ld + i] = r < rows ? qr[i] * scale : 0.f;
    }
    // nr[k]: the keys row r0+k sees (0 for a row past T: it takes no part).
    int nr[AT_RW];
#pragma unroll
    for (int k = 0; k < AT_RW; k++) nr[k] = r0 + k < rows ? pos0 + t0 + r0 + k + 1 : 0;

    // The maximum and 1/sum of each of the warp's rows (uniform in the warp).
    float mx[AT_RW], inv[AT_RW];
    if (nChunks == 1) {
        // One pass: the scores stay; S holds e = expf(s − max) afterwards.
        at_scores(S, kv, qs, kc, 0, nEnd, nEnd, sc, ld, D, g, ldkv);
#pragma unroll
        for (int k = 0; k < AT_RW; k++) {
            const int n = nr[k];
            float* sr = S + (r0 + k) * sc;
            float m = -3.402823466e38f;
            for (int s = lane; s < n; s += 32) m = fmaxf(m, sr[s]);
            m = warp_max(m);
            double sum = 0;
            for (int s = lane; s < n; s += 32) {
                const float e = expf(sr[s] - m);
                sr[s] = e;
                sum += e;
            }
            sum = warp_sum_d(sum);
            mx[k] = m;
            inv[k] = n > 0 ? (float)(1.0 / sum) : 0.f;
        }
    } else {
        // Pass 0: the maxima; pass 1: the sums of expf(s − max).
        float m[AT_RW];
        double sum[AT_RW];
#pragma unroll
        for (int k = 0; k < AT_RW; k++) {
            m[k] = -3.402823466e38f;
            sum[k] = 0;
        }
        for (int pass = 0; pass < 2; pass++) {
            for (int c0 = 0; c0 < nEnd; c0 += sc) {
                const int c1 = min(c0 + sc, nEnd);
                at_scores(S, kv, qs, kc, c0, c1, nEnd, sc, ld, D, g, ldkv);
#pragma unroll
                for (int k = 0; k < AT_RW; k++) {
                    const float* sr = S + (r0 + k) * sc;
                    for (int s = c0 + lane; s < min(nr[k], c1); s += 32) {
                        if (pass == 0)
                            m[k] = fmaxf(m[k], sr[s - c0]);
                        else
                            sum[k] += expf(sr[s - c0] - mx[k]);
                    }
                }
            }
            if (pass == 0) {
#pragma unroll
                for (int k = 0; k < AT_RW; k++) mx[k] = warp_max(m[k]);
            }
        }
#pragma unroll
        for (int k = 0; k < AT_RW; k++) {
            const double t = warp_sum_d(sum[k]);
            inv[k] = nr[k] > 0 ? (float)(1.0 / t) : 0.f;
        }
    }

    // Σ p·v chunk by chunk: the chunk's probabilities (recomputed from the
    // scores where there are several chunks), zero past each row's limit;
    // then its value tiles: barrier (the previous readers of kv are done —
    // at the first, the scores' readers), stage, barrier, use.
    float acc[AT_RW][DPL];
#pragma unroll
    for (int k = 0; k < AT_RW; k++)
#pragma unroll
        for (int j = 0; j < DPL; j++) acc[k][j] = 0.f;
    for (int c0 = 0; c0 < nEnd; c0 += sc) {
        const int c1 = min(c0 + sc, nEnd);
        if (nChunks > 1) at_scores(S, kv, qs, kc, c0, c1, nEnd, sc, ld, D, g, ldkv);
        const int cw = (c1 - c0 + AT_KT - 1) / AT_KT * AT_KT; // the chunk's tiles
#pragma unroll
        for (int k = 0; k < AT_RW; k++) {
            float* sr = S + (r0 + k) * sc;
            for (int s = lane; s < cw; s += 32) {
                float p = 0.f;
                if (c0 + s < nr[k]) p = (nChunks > 1 ? expf(sr[s] - mx[k]) : sr[s]) * inv[k];
                sr[s] = p;
            }
        }
        for (int s0 = c0; s0 < c1; s0 += AT_KT) {
            at_stage(kv, vc, s0, nEnd, ld, D, g, ldkv);
            for (int c = 0; c < AT_KT; c += 4) {
                float4 p[AT_RW];
#pragma unroll
                for (int k = 0; k < AT_RW; k++) p[k] = *(const float4*)(S + (r0 + k) * sc + s0 - c0 + c);
#pragma unroll
                for (int u = 0; u < 4; u++) {
                    const int s = s0 + c + u;
                    float v[DPL];
#pragma unroll
                    for (int j = 0; j < DPL; j++) v[j] = j < nd ? kv[(c + u) * ld + lane + 32 * j] : 0.f;
#pragma unroll
                    for (int k = 0; k < AT_RW; k++) {
                        const float pk = u == 0 ? p[k].x : u == 1 ? p[k].y : u == 2 ? p[k].z : p[k].w;
                        if (s < nr[k]) { // uniform in the warp
#pragma unroll
                            for (int j = 0; j < DPL; j++) acc[k][j] += pk * v[j];
                        }
                    }
                }
            }
        }
    }
#pragma unroll
    for (int k = 0; k < AT_RW; k++) {
        if (nr[k] == 0) continue;
        const long row = (long)(t0 + r0 + k) * ldq + (long)h * D;
#pragma unroll
        for (int j = 0; j < DPL; j++) {
            if (j < nd) {
                const int i = lane + 32 * j;
                float a = acc[k][j];
                if (gated) a *= sigmoid_f(gate[row + i]);
                o[row + i] = a;
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(256) attend_tiled(float* o, const float* q, const float* gate, const float* kc,
                                                                const float* vc, int nH, int nKV, int D, int T, int pos0,
                                                                int ldq, int ldkv, float scale, int gated, int sc) {
    extern __shared__ float4 sm4[]; // float4: 16-byte alignment for the vector loads
    float* sm = (float*)sm4;
    const int nd = D >> 5;
    if (nd <= 1)
        attend_tiled_body<1>(sm, o, q, gate, kc, vc, nH, nKV, D, T, pos0, ldq, ldkv, scale, gated, sc);
    else if (nd <= 2)
        attend_tiled_body<2>(sm, o, q, gate, kc, vc, nH, nKV, D, T, pos0, ldq, ldkv, scale, gated, sc);
    else if (nd <= 4)
        attend_tiled_body<4>(sm, o, q, gate, kc, vc, nH, nKV, D, T, pos0, ldq, ldkv, scale, gated, sc);
    else
        attend_tiled_body<AT_DPL>(sm, o, q, gate, kc, vc, nH, nKV, D, T, pos0, ldq, ldkv, scale, gated, sc);
}
