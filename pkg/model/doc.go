// Package model implements the forward pass of the Qwen Mixture-of-Experts
// architectures fm runs — qwen3_moe, qwen3_next and qwen3_5_moe — driven only by
// the normalized layout.Config, with the math of docs/reference-math.md.
//
// A Model is built from two sources: Weights (the dense tensors by canonical
// name, normally the memory-mapped model_weights.bin) and Experts (the routed
// expert files, read per token through pkg/experts). A State holds everything a
// sequence accumulates: the KV cache of each full-attention layer, the conv and
// recurrent state of each GatedDeltaNet layer, and the position.
//
// Forward processes a chunk of tokens at once (prefill: every weight matrix is
// read once per chunk, and each layer fetches the union of the experts the
// chunk routes to once); a one-token Forward is the decode path. Both follow
// transformers' float32 numerics: activations and accumulations in float32,
// softmaxes and norms with float64 sums, the delta rule run exactly, token by
// token.
package model
