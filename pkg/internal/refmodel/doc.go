// Package refmodel is a test-only, deliberately naive reference forward pass
// of the three Qwen MoE architectures (qwen3_moe, qwen3_next, qwen3_5_moe and
// qwen3_5_moe_text), written from docs/reference-math.md §2–§3 alone and
// computed in float64.
//
// It reads a checkpoint directory directly by its own tensor names — an HF
// checkpoint (per-expert or fused experts, model. or model.language_model.
// prefixes) or an mlx-lm one (switch_mlp stacks, affine-quantized modules,
// 1+w norms, language_model. prefixes) — without going through package
// checkpoint, the prepared layout or package model. That independence is the
// point: it is the yardstick the runtime is measured against on synthetic
// models whose dimensions nothing in the runtime has seen (see package
// internal/synth), and it is itself validated against the transformers
// logits of the golden models.
//
// Everything is done the slow, obvious way: one token at a time, the gated
// delta rule as a plain recurrence, attention over an explicit key/value list,
// every dot product in float64. Weights are held as float32 (they are bf16 or
// dequantized float32 values, so nothing is lost) and expert weights are
// decoded on first use.
package refmodel
