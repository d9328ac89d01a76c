// Package cpu is the CPU backend: Device implements backend.Device on the Go
// heap and registers itself as "cpu". It holds the CPU's algorithms — the
// blocked causal attention (attention.go), the conv and the recurrent and
// chunked delta rule (deltanet.go, deltarule.go) — and the compute kernels:
// matrix-vector and matrix-matrix products over weights stored as float (F32,
// BF16, F16) or MLX affine group quantization (2–8 bits, LSB-first bit
// stream), plus the small vector operations the models need (RMSNorm, SiLU,
// softmax, RoPE).
//
// Every optimized kernel has a plain reference twin; the tests compare the
// two on random inputs, odd sizes and every bit width included, and the
// Device passes the backend conformance suite (pkg/backend/backendtest).
// Activations are float32 and accumulate in float32; weights are never
// expanded to float32 in memory except one row at a time in the batched
// product. Operations run to completion before they return.
//
// Work is split over rows across goroutines by a Pool; a Pool holds no mutable
// state, so one can be shared by every caller.
package cpu
