// Package cpu holds the pure-Go compute kernels of the CPU backend: matrix-vector
// and matrix-matrix products over weights stored as float (F32, BF16, F16) or MLX
// affine group quantization (2–8 bits, LSB-first bit stream), plus the small
// vector operations the models need (RMSNorm, SiLU, softmax, RoPE).
//
// Every optimized kernel has a plain reference twin in reference.go; the tests
// compare the two on random inputs, odd sizes and every bit width included.
// Activations are float32 and accumulate in float32; weights are never expanded
// to float32 in memory except one row at a time in the batched product.
//
// Work is split over rows across goroutines by a Pool; a Pool holds no mutable
// state, so one can be shared by every caller.
package cpu
