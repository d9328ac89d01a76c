// Package engine runs a prepared model directory: it opens and verifies the
// directory (manifest, file sizes, the dense checksum), maps the dense weights,
// starts the expert store, builds the model, and drives generation — prefill in
// chunks, decode token by token, sampling, stop tokens, streaming text, context
// cancellation — while measuring where the time goes (per layer and phase),
// tokens per second, expert bytes read per token and peak memory.
//
// The engine does not depend on a tokenizer or a sampler implementation: it
// takes them through the small Sampler and TextStream interfaces, which
// pkg/sample and pkg/tokenizer satisfy.
package engine
