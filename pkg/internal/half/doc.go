// Package half converts the 16-bit floats of checkpoints and quantization
// scales — bfloat16 and IEEE binary16 — to and from float32: one copy for the
// compute kernels (pkg/backend/cpu) and the converter (pkg/quant), which used
// to carry one each, including two AVX-512/AVX2 bfloat16 loops. The SIMD
// level is simdlevel's, so FM_SIMD caps it with the rest; the noasm build tag
// leaves the Go loop.
package half
