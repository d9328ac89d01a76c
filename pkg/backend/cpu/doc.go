// Package cpu is the CPU backend: Device implements backend.Device on the Go
// heap and registers itself as "cpu". It holds the CPU's algorithms — the
// blocked causal attention (attention.go), the conv and the recurrent and
// chunked delta rule (deltanet.go, deltarule.go) — and the compute kernels:
// matrix-vector and small matrix-matrix products over weights stored as float
// (F32, BF16, F16) or MLX affine group quantization (2–8 bits, LSB-first bit
// stream), plus the vector operations the models need (RMSNorm, SiLU,
// softmax, RoPE, attention helpers). The Device passes the backend
// conformance suite (pkg/backend/backendtest); operations run to completion
// before they return.
//
// Kernels come in levels, chosen once per process by one switch (simdLevel in
// kernels_amd64.go): generic Go (dot.go, ops.go, attn.go: the twins, and what
// architectures other than amd64 and arm64 run), AVX2+FMA (kernels_amd64.s)
// and AVX-512 (kernels512_amd64.s). On arm64 the NEON kernels
// (kernels_arm64.s) replace the twins below the generic level: affine rows of
// 2, 4 and 8 bits, f32 and bf16 rows, the attention helpers, and the int8
// mode's SDOT rows where the CPU has the dot product. The build tag noasm
// compiles the assembly out (kernels_generic.go, attn_generic.go,
// neon_off.go); FM_SIMD=generic|avx2 caps the amd64 level at run time for A/B
// measurements. The tests run every level the machine has
// against a float64 reference (reference_test.go) and against the generic
// twins, on random inputs with odd sizes and every bit width.
//
// Activations are float32 and accumulate in float32; weights are never expanded
// to float32 in memory except one row at a time in the batched F16 product.
// The AVX-512 affine kernels dequantize through a per-group table in a
// register (w = s·q + b, VPERMPS) and sum w·x; the others sum s·Σq·x + b·Σx.
//
// In int8 mode (backend.MatmulInt8, --matmul int8; int8.go) the products with
// affine matrices quantize x to int8 per weight group and use integer dot
// products (AVX-512 VNNI, AVX2, arm64 SDOT, or the Go twin): faster and approximate; the
// default mode is exact. On a VNNI CPU, each 2-, 3-, 4- or 8-bit dense matrix with bf16
// scales gets, at its first product, an in-memory, CPU-only row-interleaved copy
// (rowpack.go: 16 rows per vector, so an integer dot covers 16 rows of one
// group) that int8-mode products read instead of the mapped bytes; nothing on
// disk changes, and FM_ROWPACK=0 turns it off for A/B measurements.
//
// Work is split over rows by a Pool: the calling goroutine plus persistent
// helpers that poll briefly between parts, so the hundreds of products of a
// decode step hand off without waking threads, and a product allocates
// nothing. ReadSum is the memory-read ceiling the kernel benchmarks report
// their "ratio" against.
package cpu
