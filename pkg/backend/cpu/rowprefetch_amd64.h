// ROW_PREFETCH asks for the weight bytes ROW_PF_DISTANCE ahead of SI, for the
// one-row exact kernels of kernels512_amd64.s (AVX-512) and kernels_amd64.s
// (AVX2). They consume a matrix streamed from DRAM more slowly per byte than
// the int8 ones, and the hardware prefetcher alone left them waiting on it:
// with this, BenchmarkMatVec's 4-bit product of a matrix larger than L3 went
// from 0.43–0.44 to 0.48–0.67 of the read ceiling (docs/PERF.md, "Software
// prefetch in the exact one-row kernels"). One per step (16–128 bytes)
// repeats within a cache line but costs less than tracking lines.
#define ROW_PF_DISTANCE 2048
#define ROW_PREFETCH PREFETCHT0 ROW_PF_DISTANCE(SI)
