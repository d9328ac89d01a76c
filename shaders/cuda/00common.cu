// 00common.cu: types and helpers shared by every fm kernel. NVRTC compiles the
// files of shaders/cuda as ONE translation unit (the Go side concatenates them
// in name order, so this one comes first): there are no #include lines and no
// CUDA headers, only builtins and inline PTX.
//
// Conventions: activations are float32, row-major; weights keep their stored
// bytes (fm/1 format, docs/FORMAT.md): float rows (f32, bf16, f16) or MLX
// affine groups (codes LSB first, scale and bias per group in f32/bf16/f16).

typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;
typedef unsigned long long u64;

// Storage formats; the numbers are pkg/backend/cpu.Format's.
#define FMT_F32 1
#define FMT_BF16 2
#define FMT_F16 3

__device__ __forceinline__ float bf16_to_f32(u32 h) { return __uint_as_float(h << 16); }

__device__ __forceinline__ float f16_to_f32(u32 h) {
    float f;
    unsigned short s = (unsigned short)h;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(s));
    return f;
}

// load_float reads element i of a float array stored in format fmt.
__device__ __forceinline__ float load_float(const u8* p, long i, int fmt) {
    if (fmt == FMT_F32) return ((const float*)p)[i];
    u32 h = ((const u16*)p)[i];
    return fmt == FMT_BF16 ? bf16_to_f32(h) : f16_to_f32(h);
}

// The CPU backend evaluates sigmoid, SiLU, softplus and exp in float64 and
// rounds once; the kernels do the same so that both agree to float32 rounding.
__device__ __forceinline__ float sigmoid_f(float x) { return (float)(1.0 / (1.0 + exp(-(double)x))); }
__device__ __forceinline__ float silu_f(float x) { return (float)((double)x / (1.0 + exp(-(double)x))); }
__device__ __forceinline__ float softplus_f(float x) { return x > 20.f ? x : (float)log1p(exp((double)x)); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// block_sum_d sums v over the block (blockDim.x a multiple of 32, at most
// 1024); every thread gets the total. scratch holds 32 doubles.
__device__ double block_sum_d(double v, double* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    double t = 0;
    for (int i = 0; i < nw; i++) t += scratch[i];
    return t;
}

__device__ float block_max(float v, float* scratch) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float t = scratch[0];
    for (int i = 1; i < nw; i++) t = fmaxf(t, scratch[i]);
    return t;
}
