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
