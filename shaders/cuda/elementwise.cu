// elementwise.cu: SwiGLU, residual adds and the MoE combine.

// swiglu: g[i] = silu(g[i]) · u[i].
extern "C" __global__ void swiglu(float* g, const float* u, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        g[i] = silu_f(g[i]) * u[i];
}

// add: y[i] += x[i].
extern "C" __global__ void add(float* y, const float* x, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) y[i] += x[i];
}

// combine: out[tok[i]] += wt[i] · y[i] for n rows of H (one expert's tokens,
// each at most once, so rows never collide).
extern "C" __global__ void combine(float* out, const float* y, const int* tok, const float* wt, int n, int H) {
    const int i = blockIdx.y;
    if (i >= n) return;
    float* o = out + (long)tok[i] * H;
    const float* yr = y + (long)i * H;
    const float w = wt[i];
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < H; c += gridDim.x * blockDim.x) o[c] += w * yr[c];
}

// gate_add: out[t] += σ(s[t]) · d[t] over T rows of H (the shared expert's gate).
extern "C" __global__ void gate_add(float* out, const float* d, const float* s, int H) {
    const int t = blockIdx.y;
    const float w = sigmoid_f(s[t]);
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < H; c += gridDim.x * blockDim.x)
        out[(long)t * H + c] += w * d[(long)t * H + c];
}

// gather: dst[i] = src[tok[i]] for n rows of H.
extern "C" __global__ void gather(float* dst, const float* src, const int* tok, int H) {
    const int i = blockIdx.y;
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < H; c += gridDim.x * blockDim.x)
        dst[(long)i * H + c] = src[(long)tok[i] * H + c];
}

// first_nonfinite sets *out to base | the smallest row (of cols floats) of x
// that holds a NaN or an infinity (exponent bits all ones); *out starts
// above. base, when not 0, is a MarkSet's generation in the high byte
// (marks.go), the row then clamped below 2^24.
extern "C" __global__ void first_nonfinite(const float* x, long n, int cols, int* out, int base) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        if ((__float_as_uint(x[i]) & 0x7f800000u) == 0x7f800000u) {
            const long r = i / cols;
            atomicMin(out, base ? base | (int)(r < 0xffffff ? r : 0xffffff) : (int)r);
        }
}

// add_rmsnorm_row is one block's row of add_rmsnorm (norm.cu) and of the
// GEMV kernels' row epilogue (matmul.cu, row_epilogue): hr += ar when ar is
// not null (hr written back), a NaN or infinity in the result marked as
// atomicMin(mark, markBase | row) when mark is not null, then, when dr is
// not null, dr = hr / sqrt(mean(hr²) + eps) · w (sum of squares in float64,
// rounded as cpu.RMSNorm). Every value a thread needs (RN_NPT of hr, ar and
// w at a time) is loaded before the first is used, so a row of at most
// RN_NPT·blockDim.x costs one memory round trip, not one per element (the
// separate rmsnorm measured ~10 µs for one row of 2048, docs/PERF.md); a
// wider row takes two passes (hr read again in the second). VOL reads ar
// through volatile loads (from L2: ar was written by other blocks of the
// same launch). dr may alias hr. Every thread of the block calls it.
#define RN_NPT 16
template <bool VOL>
__device__ __forceinline__ void add_rmsnorm_row(float* hr, const float* ar, float* dr, const float* w, int n, double eps,
                                                int* mark, int markBase, int row, double* scratch) {
    const int step = RN_NPT * blockDim.x;
    const bool one = n <= step; // the whole row in registers
    float v[RN_NPT], wv[RN_NPT];
    double ss = 0;
    int bad = 0;
    for (int base = 0; base < n; base += step) {
        float av[RN_NPT];
#pragma unroll
        for (int k = 0; k < RN_NPT; k++) {
            const int i = base + threadIdx.x + k * blockDim.x;
            v[k] = i < n ? hr[i] : 0.f;
            if constexpr (VOL) av[k] = (ar && i < n) ? ((const volatile float*)ar)[i] : 0.f;
            else av[k] = (ar && i < n) ? ar[i] : 0.f;
            wv[k] = (one && dr && i < n) ? w[i] : 0.f;
        }
#pragma unroll
        for (int k = 0; k < RN_NPT; k++) {
            const int i = base + threadIdx.x + k * blockDim.x;
            if (i < n) {
                if (ar) {
                    v[k] = v[k] + av[k];
                    hr[i] = v[k];
                }
                bad |= (__float_as_uint(v[k]) & 0x7f800000u) == 0x7f800000u;
                ss += (double)v[k] * (double)v[k];
            }
        }
    }
    if (mark && bad) atomicMin(mark, markBase | (row < 0xffffff ? row : 0xffffff));
    if (!dr) return;
    ss = block_sum_d(ss, scratch);
    const float inv = (float)(1.0 / sqrt((double)(float)(ss / n) + eps));
    for (int base = 0; base < n; base += step) {
        if (!one) { // the second pass of a wide row: this thread's own hr values again
#pragma unroll
            for (int k = 0; k < RN_NPT; k++) {
                const int i = base + threadIdx.x + k * blockDim.x;
                v[k] = i < n ? hr[i] : 0.f;
                wv[k] = i < n ? w[i] : 0.f;
            }
        }
#pragma unroll
        for (int k = 0; k < RN_NPT; k++) {
            const int i = base + threadIdx.x + k * blockDim.x;
            if (i < n) dr[i] = v[k] * inv * wv[k];
        }
    }
}
