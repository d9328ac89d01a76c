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
