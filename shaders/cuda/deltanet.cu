// deltanet.cu: the GatedDeltaNet mixer's causal conv and its delta rule
// (reference-math.md §3.2), token by token.

#define CONV_MAXK 9

// conv_silu: causal depthwise conv of kernel width kc over T rows of x ([T,
// ldx], channels 0 … cc−1), continuing from state ([kc−1, cc], the last kc−1
// inputs, oldest first), then SiLU, in place; the state advances by T rows.
// One thread per channel, tokens in order.
extern "C" __global__ void conv_silu(float* x, float* state, const float* w, int T, int cc, int kc, int ldx) {
    const int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= cc) return;
    float st[CONV_MAXK - 1], wk[CONV_MAXK];
#pragma unroll
    for (int j = 0; j < CONV_MAXK - 1; j++) st[j] = j < kc - 1 ? state[(long)j * cc + ch] : 0.f;
#pragma unroll
    for (int j = 0; j < CONV_MAXK; j++) wk[j] = j < kc ? w[(long)ch * kc + j] : 0.f;
    for (int t = 0; t < T; t++) {
        const float xt = x[(long)t * ldx + ch];
        float acc = 0.f, wl = 0.f;
#pragma unroll
        for (int j = 0; j < CONV_MAXK - 1; j++)
            if (j < kc - 1) acc += wk[j] * st[j];
#pragma unroll
        for (int j = 0; j < CONV_MAXK; j++)
            if (j == kc - 1) wl = wk[j];
        acc += wl * xt;
#pragma unroll
        for (int j = 0; j < CONV_MAXK - 2; j++)
            if (j < kc - 2) st[j] = st[j + 1];
#pragma unroll
        for (int j = 0; j < CONV_MAXK - 1; j++)
            if (j == kc - 2) st[j] = xt;
        x[(long)t * ldx + ch] = silu_f(acc);
    }
#pragma unroll
    for (int j = 0; j < CONV_MAXK - 1; j++)
        if (j < kc - 1) state[(long)j * cc + ch] = st[j];
}

// The delta rule for value head j = blockIdx.x (key head j / (nv/nk)), thread
// c = column c of its state S_j [dk × dv]. Per token: β = σ(b), g = −A·softplus(a
// + dt_bias), α = eᵍ; S ← αS; m = Sᵀk; δ = β(v − m); S += kδᵀ; o = Sᵀq; then
// the gated RMSNorm o / rms(o) · w · silu(z) over the head. Every column is
// independent, so the only reduction is the norm's. q̂, k̂ (already normalized)
// and v come from the conv output rows qkv [T, ldqkv]: q at i·dk, k at kd + i·dk,
// v at 2·kd + j·dv. b, a are [T, ldba], z and core [T, ldz].
// DR_REG columns stay in registers for dk ≤ DR_REG; larger dk uses the state
// in global memory.
#define DR_REG 128

template <bool REG>
__device__ __forceinline__ void delta_rule_body(float* core, float* S, const float* qkv, const float* b,
                                                const float* a, const float* z, const float* negA,
                                                const float* dtBias, const float* normW, int T, int nk, int nv,
                                                int dk, int dv, int ldqkv, int ldba, int ldz, double eps,
                                                float* qk) {
    __shared__ double scratch[32];
    const int j = blockIdx.x, c = threadIdx.x;
    const int i = j / (nv / nk), kd = nk * dk;
    const bool act = c < dv;
    float* Sj = S + (long)j * dk * dv;
    float s[REG ? DR_REG : 1];
    if (REG) {
#pragma unroll
        for (int r = 0; r < DR_REG; r++)
            if (r < dk && act) s[r] = Sj[(long)r * dv + c];
    }
    const float* kk = qk + dk;
    for (int t = 0; t < T; t++) {
        const float* row = qkv + (long)t * ldqkv;
        __syncthreads();
        for (int e = threadIdx.x; e < dk; e += blockDim.x) {
            qk[e] = row[(long)i * dk + e];
            qk[dk + e] = row[(long)kd + (long)i * dk + e];
        }
        __syncthreads();
        const float beta = sigmoid_f(b[(long)t * ldba + j]);
        const float g = negA[j] * softplus_f(a[(long)t * ldba + j] + dtBias[j]);
        const float alpha = (float)exp((double)g);
        float o = 0.f;
        if (act) {
            float mem = 0.f;
            if (REG) {
#pragma unroll
                for (int r = 0; r < DR_REG; r++)
                    if (r < dk) {
                        s[r] *= alpha;
                        mem += s[r] * kk[r];
                    }
            } else {
                for (int r = 0; r < dk; r++) {
                    float v = Sj[(long)r * dv + c] * alpha;
                    Sj[(long)r * dv + c] = v;
                    mem += v * kk[r];
                }
            }
            const float delta = (row[2L * kd + (long)j * dv + c] - mem) * beta;
            if (REG) {
#pragma unroll
                for (int r = 0; r < DR_REG; r++)
                    if (r < dk) {
                        s[r] += kk[r] * delta;
                        o += s[r] * qk[r];
                    }
            } else {
                for (int r = 0; r < dk; r++) {
                    float v = Sj[(long)r * dv + c] + kk[r] * delta;
                    Sj[(long)r * dv + c] = v;
                    o += v * qk[r];
                }
            }
        }
        const double ss = block_sum_d(act ? (double)o * (double)o : 0.0, scratch);
        const float inv = (float)(1.0 / sqrt((double)(float)(ss / dv) + eps));
        if (act) {
            const long zi = (long)t * ldz + (long)j * dv + c;
            core[zi] = o * inv * normW[c] * silu_f(z[zi]);
        }
    }
    if (REG) {
#pragma unroll
        for (int r = 0; r < DR_REG; r++)
            if (r < dk && act) Sj[(long)r * dv + c] = s[r];
    }
}

extern "C" __global__ void delta_rule(float* core, float* S, const float* qkv, const float* b, const float* a,
                                      const float* z, const float* negA, const float* dtBias, const float* normW,
                                      int T, int nk, int nv, int dk, int dv, int ldqkv, int ldba, int ldz,
                                      double eps) {
    extern __shared__ float qk[];  // 2·dk floats
    if (dk <= DR_REG)
        delta_rule_body<true>(core, S, qkv, b, a, z, negA, dtBias, normW, T, nk, nv, dk, dv, ldqkv, ldba, ldz, eps, qk);
    else
        delta_rule_body<false>(core, S, qkv, b, a, z, negA, dtBias, normW, T, nk, nv, dk, dv, ldqkv, ldba, ldz, eps,
                               qk);
}
