// deltanet.cu: the GatedDeltaNet mixer's causal conv and its delta rule
// (reference-math.md §3.2): token by token (decode, short calls) and chunked
// (prefill, §3.5).

#define CONV_MAXK 9

// conv_silu: causal depthwise conv of kernel width kc over T rows of x ([T,
// ldx], channels 0 … cc−1), continuing from state ([kc−1, cc], the last kc−1
// inputs, oldest first), then SiLU, in place; the state advances by T rows.
// One thread per channel, tokens in order, CONV_AHEAD rows loaded ahead: in
// place, a load could not pass the previous row's store, so every token was
// a full memory round trip in sequence (a row is still read before its own
// write, the result is the same).
#define CONV_AHEAD 8
extern "C" __global__ void conv_silu(float* x, float* state, const float* w, int T, int cc, int kc, int ldx) {
    const int ch = blockIdx.x * blockDim.x + threadIdx.x;
    if (ch >= cc) return;
    float st[CONV_MAXK - 1], wk[CONV_MAXK];
#pragma unroll
    for (int j = 0; j < CONV_MAXK - 1; j++) st[j] = j < kc - 1 ? state[(long)j * cc + ch] : 0.f;
#pragma unroll
    for (int j = 0; j < CONV_MAXK; j++) wk[j] = j < kc ? w[(long)ch * kc + j] : 0.f;
    for (int t0 = 0; t0 < T; t0 += CONV_AHEAD) {
        float xb[CONV_AHEAD];
#pragma unroll
        for (int v = 0; v < CONV_AHEAD; v++) xb[v] = t0 + v < T ? x[(long)(t0 + v) * ldx + ch] : 0.f;
#pragma unroll
        for (int v = 0; v < CONV_AHEAD; v++) {
            const int t = t0 + v;
            if (t >= T) break;
            const float xt = xb[v];
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

// The chunked delta rule (reference-math.md §3.5; pkg/backend/cpu
// chunkedDeltaRule, whose numerics this mirrors): within a chunk of C tokens,
// with γ the in-chunk cumulative g and Γ_ts = exp(γ_t − γ_s) (s ≤ t),
//
//	A  = strictly-lower(diag(β) K Kᵀ ∘ Γ)
//	U  = (I + A)⁻¹ diag(β) V,  W = (I + A)⁻¹ diag(β eᵞ) K   (forward substitution)
//	V' = U − W S
//	O  = diag(eᵞ) Q S + ((Q Kᵀ) ∘ Γ) V'
//	S ← e^{γ_C} S + (diag(e^{γ_C − γ}) K)ᵀ V'
//
// so the state is read and written once a chunk, not twice a token, and a
// chunk's work is matrix-shaped instead of T dependent steps with block
// reductions. γ, Γ and the exponentials are float64, cut to zero below
// DC_TINY like the CPU's tinyDecay.
//
// Block (j, y) = value head j (key head j / (nv/nk)), state columns y·DC_COLS
// … +DC_COLS (every column of V, V', O and S is independent; A, W and QKᵀ are
// recomputed by each column block: it spreads a head over 4 blocks at dv = 128
// so nv = 32 heads fill 128 SMs). It writes the raw o rows into core; the
// gated RMSNorm over the whole head follows in gated_norm_heads.
#define DC_CHUNK 64  // pkg/backend/cpu deltaChunk
#define DC_COLS 32
#define DC_THREADS 256                  // the tilings below assume exactly this block
#define DC_WARPS (DC_THREADS / 32)      // 8
#define DC_TR (DC_CHUNK / DC_WARPS)     // chunk rows a thread owns in the [C × DC_COLS] steps
#define DC_SR 32                        // state rows a thread owns at most: dk ≤ DC_WARPS·DC_SR
#define DC_TINY 1e-30                   // pkg/backend/cpu tinyDecay
#define DC_BLK 10                       // 16×16 blocks of a 64×64 chunk on or below the diagonal

__device__ __forceinline__ float dc_flush(double x) { return x < DC_TINY ? 0.f : (float)x; }

// dc_rows_state sets acc[k] to row w + DC_WARPS·k of X (stride ld) times
// column c of the state slice Ss [dk × DC_COLS], r in order; X rows as float4.
__device__ __forceinline__ void dc_rows_state(float* acc, const float* X, int ld, int w, const float* Ss, int c,
                                              int dk) {
#pragma unroll
    for (int k = 0; k < DC_TR; k++) acc[k] = 0.f;
    for (int r = 0; r < dk; r += 4) {
        const float s0 = Ss[r * DC_COLS + c], s1 = Ss[(r + 1) * DC_COLS + c];
        const float s2 = Ss[(r + 2) * DC_COLS + c], s3 = Ss[(r + 3) * DC_COLS + c];
#pragma unroll
        for (int k = 0; k < DC_TR; k++) {
            const float4 x = *(const float4*)(X + (w + DC_WARPS * k) * ld + r);
            acc[k] += x.x * s0;
            acc[k] += x.y * s1;
            acc[k] += x.z * s2;
            acc[k] += x.w * s3;
        }
    }
}

// Dynamic shared memory (ops.go deltaChunkShared must match), 16-byte
// aligned pieces: doubles α, γ, e^γ [C]; floats β, flush(e^γ),
// flush(e^{γ_C−γ}) [C]; Q, then W, [C × dk+4]; K [C × dk+4]; U, then V',
// [C × DC_COLS]; S [dk × DC_COLS]; P [C × C+4], holding QKᵀ∘Γ in its lower
// triangle (s ≤ t) and −A transposed above it (−A_ts at P[s][t], s < t), so
// that two blocks fit a multiprocessor at dk = 128. The pads keep walks across
// rows off one bank. Needs dk a multiple of 32, at most
// DC_WARPS·DC_SR, and blockDim.x = DC_THREADS.
extern "C" __global__ void __launch_bounds__(DC_THREADS, 2)
    delta_rule_chunked(float* core, float* S, const float* qkv, const float* b, const float* a, const float* negAp,
                       const float* dtBias, int T, int nk, int nv, int dk, int dv, int ldqkv, int ldba, int ldz) {
    extern __shared__ float4 dsm4[];
    const int C = DC_CHUNK, ldk = dk + 4, ldp = DC_CHUNK + 4;
    const int j = blockIdx.x, col0 = blockIdx.y * DC_COLS;
    const int nc = min(DC_COLS, dv - col0);
    // Uniform over the block, so no thread misses a barrier.
    if (nc <= 0 || j >= nv || blockDim.x != DC_THREADS || dk % 32 != 0 || dk > DC_WARPS * DC_SR) return;
    const int i = j / (nv / nk), kd = nk * dk;
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    double* alpha = (double*)dsm4;
    double* gam = alpha + C;
    double* egw = gam + C;
    float* beta = (float*)(egw + C);
    float* eg = beta + C;
    float* ws = eg + C;
    float* QW = ws + C;
    float* Ks = QW + C * ldk;
    float* U = Ks + C * ldk;
    float* Ss = U + C * DC_COLS;
    float* P = Ss + dk * DC_COLS;
    float* Sj = S + (long)j * dk * dv + col0;
    const int rp = dk / DC_WARPS;  // state rows of this thread: w·rp … +rp, a multiple of 4
    for (int e = tid; e < dk * DC_COLS; e += DC_THREADS) {
        const int r = e / DC_COLS, c = e % DC_COLS;
        Ss[e] = c < nc ? Sj[(long)r * dv + c] : 0.f;
    }
    for (int c0 = 0; c0 < T; c0 += C) {
        const int n = min(C, T - c0);
        __syncthreads();  // the previous chunk's readers are done
        for (int e = tid; e < n * dk; e += DC_THREADS) {
            const int t = e / dk, r = e % dk;
            const float* row = qkv + (long)(c0 + t) * ldqkv;
            QW[t * ldk + r] = row[(long)i * dk + r];
            Ks[t * ldk + r] = row[(long)kd + (long)i * dk + r];
        }
        for (int e = tid; e < n * DC_COLS; e += DC_THREADS) {
            const int t = e / DC_COLS, c = e % DC_COLS;
            U[e] = c < nc ? qkv[(long)(c0 + t) * ldqkv + 2L * kd + (long)j * dv + col0 + c] : 0.f;
        }
        for (int t = tid; t < n; t += DC_THREADS) {
            const long bi = (long)(c0 + t) * ldba + j;
            beta[t] = sigmoid_f(b[bi]);
            const float g = negAp[j] * softplus_f(a[bi] + dtBias[j]);
            alpha[t] = exp((double)g);
            gam[t] = (double)g;
        }
        __syncthreads();
        if (tid == 0) {  // γ, the running sum in order as on the CPU
            double acc = 0.0;
            for (int t = 0; t < n; t++) {
                acc += gam[t];
                gam[t] = acc;
            }
        }
        // Q Kᵀ and K Kᵀ, raw, over the 10 of 16 blocks of 16×16 on or below
        // the diagonal: thread (ty, tx) takes entry (16·BT + ty, 16·BS + tx) of
        // each block BS ≤ BT (a warp reads 2 rows of Q and K and 16 of K a
        // step, without bank conflicts); kept where s ≤ t (s < t) < n.
        {
            const int ty = tid >> 4, tx = tid & 15;
            float qk[DC_BLK], kk[DC_BLK];
#pragma unroll
            for (int p = 0; p < DC_BLK; p++) qk[p] = kk[p] = 0.f;
            for (int r = 0; r < dk; r += 4) {
                float4 qv[4], kv[4], sv[4];
#pragma unroll
                for (int x = 0; x < 4; x++) {
                    qv[x] = *(const float4*)(QW + (16 * x + ty) * ldk + r);
                    kv[x] = *(const float4*)(Ks + (16 * x + ty) * ldk + r);
                    sv[x] = *(const float4*)(Ks + (16 * x + tx) * ldk + r);
                }
#pragma unroll
                for (int bt = 0, p = 0; bt < 4; bt++)
#pragma unroll
                    for (int bs = 0; bs <= bt; bs++, p++) {
                        qk[p] += qv[bt].x * sv[bs].x;
                        qk[p] += qv[bt].y * sv[bs].y;
                        qk[p] += qv[bt].z * sv[bs].z;
                        qk[p] += qv[bt].w * sv[bs].w;
                        kk[p] += kv[bt].x * sv[bs].x;
                        kk[p] += kv[bt].y * sv[bs].y;
                        kk[p] += kv[bt].z * sv[bs].z;
                        kk[p] += kv[bt].w * sv[bs].w;
                    }
            }
#pragma unroll
            for (int bt = 0, p = 0; bt < 4; bt++)
#pragma unroll
                for (int bs = 0; bs <= bt; bs++, p++) {
                    const int t = 16 * bt + ty, s = 16 * bs + tx;
                    if (t < n && s <= t) P[t * ldp + s] = qk[p];
                    if (t < n && s < t) P[s * ldp + t] = kk[p];
                }
        }
        __syncthreads();
        // Γ_ts = Π_{s<u≤t} α_u from the diagonal down, one row a thread: one
        // multiply per entry, no under/overflow of e^{±γ}; zero below DC_TINY.
        // The same thread also rounds its row's exponentials.
        for (int t = tid; t < n; t += DC_THREADS) {
            egw[t] = exp(gam[t]);
            eg[t] = dc_flush(egw[t]);
            ws[t] = dc_flush(exp(gam[n - 1] - gam[t]));
            const double bt = (double)beta[t];
            double decay = 1.0;
            for (int s = t; s >= 0; s--) {
                if (decay < DC_TINY) {
                    for (int u = 0; u <= s; u++) P[t * ldp + u] = 0.f;
                    for (int u = 0; u < min(s + 1, t); u++) P[u * ldp + t] = 0.f;
                    break;
                }
                P[t * ldp + s] = (float)((double)P[t * ldp + s] * decay);
                if (s < t) P[s * ldp + t] = -(float)(bt * (double)P[s * ldp + t] * decay);
                decay *= alpha[s];
            }
        }
        __syncthreads();
        // O = diag(e^γ) Q S with the incoming state, in registers: this
        // thread's rows w + DC_WARPS·k, column lane (rows ≥ n are never stored).
        float o[DC_TR];
        dc_rows_state(o, QW, ldk, w, Ss, lane, dk);
#pragma unroll
        for (int k = 0; k < DC_TR; k++) o[k] *= eg[min(w + DC_WARPS * k, n - 1)];
        __syncthreads();  // Q is dead
        // Forward substitution, four columns a thread (a column depends only
        // on itself; a float4 load of W or U and one of −A feed four chains):
        // W in place of Q (column groups g < dk/4), then U.
        for (int g = tid; g < dk / 4 + DC_COLS / 4; g += DC_THREADS) {
            const bool isW = g < dk / 4;
            float* X = isW ? QW + 4 * g : U + 4 * (g - dk / 4);
            const int ld = isW ? ldk : DC_COLS;
            for (int t = 0; t < n; t++) {
                float4 x;
                x.x = x.y = x.z = x.w = 0.f;
                // Row t of W scales as e^{γ_t}; below DC_TINY it is dropped
                // whole, as on the CPU.
                if (!isW || egw[t] >= DC_TINY) {
                    const float bt = isW ? (float)((double)beta[t] * egw[t]) : beta[t];
                    const float4 v = *(const float4*)(isW ? Ks + t * ldk + 4 * g : X + t * ld);
                    x.x = bt * v.x;
                    x.y = bt * v.y;
                    x.z = bt * v.z;
                    x.w = bt * v.w;
                    for (int s = 0; s < t; s++) {
                        const float m = P[s * ldp + t];
                        const float4 y = *(const float4*)(X + s * ld);
                        x.x += m * y.x;
                        x.y += m * y.y;
                        x.z += m * y.z;
                        x.w += m * y.w;
                    }
                }
                *(float4*)(X + t * ld) = x;
            }
        }
        __syncthreads();
        // V' = U − W S, in place of U (each thread its own elements).
        {
            float wsum[DC_TR];
            dc_rows_state(wsum, QW, ldk, w, Ss, lane, dk);
#pragma unroll
            for (int k = 0; k < DC_TR; k++) {
                const int t = w + DC_WARPS * k;
                if (t < n) U[t * DC_COLS + lane] -= wsum[k];
            }
        }
        // K's last use is the state update: scale its rows by e^{γ_C−γ_s}
        // there once (the CPU's kt, rounded alike).
        for (int e = tid; e < n * dk; e += DC_THREADS) {
            const int t = e / dk, r = e % dk;
            Ks[t * ldk + r] *= ws[t];
        }
        __syncthreads();
        // O += (QKᵀ ∘ Γ) V' into core; S ← e^{γ_C} S + Σ_s e^{γ_C−γ_s} k_s V'_sᵀ
        // (the old S was last read above; each thread updates its own rows).
        for (int s0 = 0; s0 < n; s0 += 4) {  // s0 + 3 < C: rows past n are read, never used
            float u[4];
#pragma unroll
            for (int v = 0; v < 4; v++) u[v] = U[(s0 + v) * DC_COLS + lane];
#pragma unroll
            for (int k = 0; k < DC_TR; k++) {
                const int t = w + DC_WARPS * k;
                const float4 pv = *(const float4*)(P + t * ldp + s0);
                if (t < n) {
                    if (s0 <= t) o[k] += pv.x * u[0];
                    if (s0 + 1 <= t) o[k] += pv.y * u[1];
                    if (s0 + 2 <= t) o[k] += pv.z * u[2];
                    if (s0 + 3 <= t) o[k] += pv.w * u[3];
                }
            }
        }
#pragma unroll
        for (int k = 0; k < DC_TR; k++) {
            const int t = w + DC_WARPS * k;
            if (t < n && lane < nc) core[(long)(c0 + t) * ldz + (long)j * dv + col0 + lane] = o[k];
        }
        {
            const float eC = eg[n - 1];
            float acc[DC_SR];
#pragma unroll
            for (int k = 0; k < DC_SR; k++)
                if (k < rp) acc[k] = Ss[(w * rp + k) * DC_COLS + lane] * eC;
            for (int s = 0; s < n; s++) {
                const float u = U[s * DC_COLS + lane];
                const float* ks = Ks + s * ldk + w * rp;
#pragma unroll
                for (int k = 0; k < DC_SR; k += 4)
                    if (k < rp) {
                        const float4 kv = *(const float4*)(ks + k);
                        acc[k] += kv.x * u;
                        acc[k + 1] += kv.y * u;
                        acc[k + 2] += kv.z * u;
                        acc[k + 3] += kv.w * u;
                    }
            }
#pragma unroll
            for (int k = 0; k < DC_SR; k++)
                if (k < rp) Ss[(w * rp + k) * DC_COLS + lane] = acc[k];
        }
    }
    __syncthreads();
    for (int e = tid; e < dk * DC_COLS; e += DC_THREADS) {
        const int r = e / DC_COLS, c = e % DC_COLS;
        if (c < nc) Sj[(long)r * dv + c] = Ss[e];
    }
}

// gated_norm_heads: the delta rule's gated RMSNorm, o / rms(o) · w · silu(z),
// over head j = blockIdx.x of rows t = blockIdx.y, blockIdx.y + gridDim.y, …
// of core [T, ldz], in place (thread c = column c; the sum in double, as
// delta_rule does it).
extern "C" __global__ void gated_norm_heads(float* core, const float* z, const float* normW, int T, int dv, int ldz,
                                            double eps) {
    __shared__ double scratch[32];
    const int j = blockIdx.x, c = threadIdx.x;
    const bool act = c < dv;
    for (int t = blockIdx.y; t < T; t += gridDim.y) {
        const long zi = (long)t * ldz + (long)j * dv + c;
        const float o = act ? core[zi] : 0.f;
        const double ss = block_sum_d(act ? (double)o * (double)o : 0.0, scratch);
        const float inv = (float)(1.0 / sqrt((double)(float)(ss / dv) + eps));
        if (act) core[zi] = o * inv * normW[c] * silu_f(z[zi]);
    }
}
