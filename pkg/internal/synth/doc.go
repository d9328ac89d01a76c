// Package synth writes random HuggingFace-format (and mlx-lm-style 4-bit)
// checkpoints of the three Qwen MoE architectures for tests, with whatever
// dimensions a Spec asks for: config.json in the spelling transformers (or
// the hub) uses for that model type, bf16 weights in sharded safetensors with
// an index, per-expert or fused expert tensors, tied or untied embeddings, and
// optional tensors a converter must skip (mtp.*, a vision tower).
//
// Its purpose is to hold the runtime to models it has never seen: every
// number the golden models share (hidden 128, 4 layers, 16 experts, top-4,
// two heads per group) can be varied, and every parameter is random —
// including norm weights, A_log, dt_bias and conv taps — so a wrong
// convention shows up in the logits, as it does for the goldens
// (testdata/golden). The weights are deterministic functions of Spec.Seed.
package synth
