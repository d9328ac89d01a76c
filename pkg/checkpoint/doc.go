// Package checkpoint reads a HuggingFace or MLX checkpoint directory of a Qwen
// Mixture-of-Experts model and converts it into the prepared layout of package
// layout.
//
// Reading: config.json (qwen3_moe, qwen3_next, qwen3_5_moe with its nested
// text_config, qwen3_5_moe_text) is normalized into one layout.Config by
// ParseConfig; the safetensors files (single or sharded) are opened with
// package safetensors and every tensor name is mapped onto the canonical names
// of docs/FORMAT.md, whatever its scheme: HF per-expert
// (mlp.experts.E.gate_proj.weight), HF fused (mlp.experts.gate_up_proj
// [E, 2I, H], mlp.experts.down_proj [E, H, I]) or MLX stacked
// (mlp.switch_mlp.*.{weight,scales,biases}), with the model./
// model.language_model./language_model.model. prefixes; vision-tower and mtp.*
// tensors are skipped and counted. Every tensor the config implies is checked
// for presence, shape and dtype before anything is written.
//
// Converting: Extract writes the dense tensors (model_weights.bin, the manifest,
// tokenizer files) and Repack writes one file per routed expert. Both read tensor
// bytes with pread through io.SectionReader-style access, never whole shards,
// write every output through a temporary file and a rename, check free space
// first, stop cleanly on context cancellation, and report progress through a
// callback. Repack resumes: experts whose file already verifies are skipped.
//
// Conventions applied on the way (so the runtime has one): RMSNorm weights
// become F32 plain multipliers (1+w for the zero-centred norms of qwen3_next and
// qwen3_5_moe; MLX files already hold 1+w), conv1d becomes [C, K], Qwen3-Next's
// interleaved in_proj_qkvz / in_proj_ba are split into in_proj_qkv, in_proj_z,
// in_proj_b, in_proj_a by a row permutation (reference-math.md §3.3) that works
// on float and on packed MLX rows alike.
package checkpoint
