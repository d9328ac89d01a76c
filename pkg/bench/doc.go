// Package bench answers "how fast will this model run on this machine?"
// without the model: it writes a prepared directory with the real per-layer
// shapes, quantization and file layout of a named Qwen MoE model (random
// weights) for a few of its layers, runs prefill and decode on it, measures
// this machine's ceilings (memory read bandwidth, parallel O_DIRECT disk read
// bandwidth) in the same run, and projects the full model's decode speed at a
// RAM budget from those measurements (see Project and docs/PERF.md).
//
// The synthetic directory is written straight in the prepared format (random
// quantized codes and fixed scales, in parallel), not by quantizing floats, so
// that the 16 GB of a 48-layer Qwen3-30B-A3B take seconds of CPU: the disk is
// the limit. Its layout comes from the converters' own plan
// (checkpoint.PlanLayout), so it verifies and opens like a converted model.
package bench
