// norm.cu: RMSNorm over rows, the attention's per-head q/k RMSNorm fused with
// partial NeoX RoPE (and the output-gate split), and the GatedDeltaNet's
// per-head L2 normalization. Sums of squares are accumulated in float64 and
// rounded like the CPU backend's (cpu.RMSNorm, cpu.L2Normalize).

// rmsnorm: dst[r] = x[r] / sqrt(mean(x[r]²) + eps) · w for blockIdx.x = r.
// dst may alias x.
extern "C" __global__ void rmsnorm(float* dst, const float* x, const float* w, int n, int ldd, int ldx, double eps) {
    __shared__ double scratch[32];
    const float* xr = x + (long)blockIdx.x * ldx;
    float* dr = dst + (long)blockIdx.x * ldd;
    double ss = 0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) ss += (double)xr[i] * (double)xr[i];
    ss = block_sum_d(ss, scratch);
    const float inv = (float)(1.0 / sqrt((double)(float)(ss / n) + eps));
    for (int i = threadIdx.x; i < n; i += blockDim.x) dr[i] = xr[i] * inv * w[i];
}

// qk_norm_rope: block (h, t). Heads h < nH are query heads, read from qp row t
// at h·D (h·2D when gated: [q_h | gate_h]) and written to qout row t at h·D,
// the gate half copied to gout; heads nH ≤ h < nH+nKV are key heads, read from
// kp and written to kout. Each is RMSNormed with its weight, then its first
// rotDim elements are rotated NeoX style (i with i + rotDim/2) for position
// pos0 + t: angle = pos·inv_freq in float32, cos and sin rounded from float64.
// With vp not null, the key heads' blocks also copy the values of their head
// (vp row t, stride ldvp) to vout row t (stride ldk): the value cache's append
// without a launch of its own.
extern "C" __global__ void qk_norm_rope(float* qout, float* gout, float* kout, const float* qp, const float* kp,
                                        const float* qnw, const float* knw, const float* inv_freq, int nH, int nKV,
                                        int D, int rotDim, int gated, int ldqp, int ldkp, int ldq, int ldk, int pos0,
                                        double eps, float* vout, const float* vp, int ldvp) {
    __shared__ float hv[1024];
    __shared__ double scratch[32];
    const int h = blockIdx.x, t = blockIdx.y;
    const float* src;
    const float* w;
    float* dst;
    if (h < nH) {
        src = qp + (long)t * ldqp + (long)h * (gated ? 2 * D : D);
        dst = qout + (long)t * ldq + (long)h * D;
        w = qnw;
        if (gated)
            for (int i = threadIdx.x; i < D; i += blockDim.x) gout[(long)t * ldq + (long)h * D + i] = src[D + i];
    } else {
        src = kp + (long)t * ldkp + (long)(h - nH) * D;
        dst = kout + (long)t * ldk + (long)(h - nH) * D;
        w = knw;
        if (vp)
            for (int i = threadIdx.x; i < D; i += blockDim.x)
                vout[(long)t * ldk + (long)(h - nH) * D + i] = vp[(long)t * ldvp + (long)(h - nH) * D + i];
    }
    double ss = 0;
    for (int i = threadIdx.x; i < D; i += blockDim.x) ss += (double)src[i] * (double)src[i];
    ss = block_sum_d(ss, scratch);
    const float inv = (float)(1.0 / sqrt((double)(float)(ss / D) + eps));
    for (int i = threadIdx.x; i < D; i += blockDim.x) hv[i] = src[i] * inv * w[i];
    __syncthreads();
    const int half = rotDim / 2;
    const float p = (float)(pos0 + t);
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float v;
        if (i < rotDim) {
            const int j = i < half ? i : i - half;
            const float a = p * inv_freq[j];
            const float c = (float)cos((double)a), s = (float)sin((double)a);
            if (i < half) v = __fsub_rn(__fmul_rn(hv[i], c), __fmul_rn(hv[i + half], s));
            else v = __fadd_rn(__fmul_rn(hv[i], c), __fmul_rn(hv[j], s));
        } else {
            v = hv[i];
        }
        dst[i] = v;
    }
}

// l2norm_heads: block (h, t) over the 2·nk q and k heads of row t of x (q heads
// at h·dk, k heads at kd + (h−nk)·dk): x / sqrt(Σx² + 1e-6) · scale, with scale
// qscale for q heads and 1 for k heads (transformers' l2norm, eps on the sum).
extern "C" __global__ void l2norm_heads(float* x, int nk, int dk, int kd, int ldx, float qscale) {
    __shared__ double scratch[32];
    const int h = blockIdx.x, t = blockIdx.y;
    float* v = x + (long)t * ldx + (h < nk ? (long)h * dk : (long)kd + (long)(h - nk) * dk);
    const float scale = h < nk ? qscale : 1.f;
    double ss = 0;
    for (int i = threadIdx.x; i < dk; i += blockDim.x) ss += (double)v[i] * (double)v[i];
    ss = block_sum_d(ss, scratch);
    const float inv = (float)(1.0 / sqrt((double)(float)ss + 1e-6));
    for (int i = threadIdx.x; i < dk; i += blockDim.x) v[i] = v[i] * inv * scale;
}

// add_rmsnorm: for row r = blockIdx.x, optionally h[r] += a[r] first (a not
// null; h written back, as add does), then dst[r] = h[r] / sqrt(mean(h[r]²) +
// eps) · w — the residual add and the next RMSNorm in one launch — and, with
// mark not null, atomicMin(mark, markBase | r) when the row (after the add)
// holds a NaN or an infinity (first_nonfinite's contract, fused): see
// add_rmsnorm_row (elementwise.cu). dst may alias h.
extern "C" __global__ void __launch_bounds__(512) add_rmsnorm(float* h, const float* a, float* dst, const float* w, int n,
                                                                int ldh, int lda, int ldd, double eps, int* mark,
                                                                int markBase) {
    __shared__ double scratch[32];
    add_rmsnorm_row<false>(h + (long)blockIdx.x * ldh, a ? a + (long)blockIdx.x * lda : nullptr,
                           dst + (long)blockIdx.x * ldd, w, n, eps, mark, markBase, blockIdx.x, scratch);
}
