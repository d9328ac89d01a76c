// Package layout defines the prepared model directory that fm-extract and
// fm-repack write and fm-infer reads: the manifest schema (model_weights.json,
// format "fm/1"), the normalized model configuration, the dense blob
// model_weights.bin and the per-expert files under packed_experts/.
//
// docs/FORMAT.md is the normative description; keep the two in sync.
//
// Conventions the converter normalizes so the runtime has exactly one:
//   - tensor names are canonical (see Canonical names in FORMAT.md): no
//     "model."/"language_model." prefixes, Qwen3-Next's interleaved in_proj_qkvz /
//     in_proj_ba are split into Qwen3.5's in_proj_qkv, in_proj_z, in_proj_b, in_proj_a;
//   - every RMSNorm weight is stored as the plain multiplier in F32: for the
//     zero-centred norms of qwen3_next / qwen3_5_moe that is float32(1 + w_hf),
//     exactly what transformers computes, and MLX's pre-shifted 1+w converts exactly;
//   - conv1d weights are [channels, kernel];
//   - quantized matrices are MLX affine groups along the input dimension.
package layout
