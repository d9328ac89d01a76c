// Package model implements the forward pass of the Qwen Mixture-of-Experts
// architectures fm runs — qwen3_moe, qwen3_next and qwen3_5_moe — driven only by
// the normalized layout.Config, with the math of docs/reference-math.md.
//
// A Model is built from two sources: Weights (the dense tensors by canonical
// name, normally the memory-mapped model_weights.bin), bound once to a
// backend.Device, and Experts (the routed expert files, read per token through
// pkg/experts). It is written against the backend contract only (pkg/backend;
// pkg/internal/deptest checks that no implementation is imported): the Device
// holds the activations and runs the blocks, while routing, expert I/O and the
// order of the blocks stay here, so each block reads as its math (attention,
// deltaNet, moe, sharedExpert). A State holds everything a sequence
// accumulates: the backend's per-layer state (KV caches, conv and recurrent
// states) and the position.
//
// Forward processes a chunk of tokens at once (prefill: every weight matrix is
// read once per chunk, and each layer fetches the union of the experts the
// chunk routes to once); a one-token Forward is the decode path, and Decode
// is the same step writing into the caller's logits (a decode step then
// allocates next to nothing: routing, bindings and views reuse the State's
// memory; with an AsyncExperts source, the expert store, the reads do too:
// each State keeps reusable ExpertSlots, queued for the store's workers as
// soon as routing names the experts). A Device that implements
// backend.ExpertBatcher gets a layer's experts in groups (all at once when
// the Experts source fetches without I/O, InstantExperts), so it can spread
// them over its workers. Both follow
// transformers' float32 numerics (the backends' conformance suite,
// pkg/backend/backendtest, holds every operation to a float64 reference).
// Non-finite activations stop Forward with a NonFiniteError naming the layer,
// block and routed expert where they appeared.
package model
