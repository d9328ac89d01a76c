// Package server is fm's OpenAI-compatible HTTP API: POST /v1/chat/completions
// and /v1/completions (streamed as server-sent events or whole), GET
// /v1/models and /health, on net/http.
//
// It turns requests into prompts with the model's chat template
// (pkg/tokenizer), runs them through a Generator (pkg/engine's PrefixCache,
// which reuses the model state of earlier turns), and turns the generated
// tokens back into the API's pieces: the reasoning between <think> and
// </think> becomes reasoning_content, <tool_call> blocks in either Qwen
// format (hermes JSON or <function=…><parameter=…> XML) become tool_calls,
// and a malformed call is reported as such, never passed on as a valid one.
// Streamed, a hermes call's arguments go out as deltas while they are
// generated, all but their closing brace, which follows once the whole call
// has parsed (toolstream.go).
//
// It is safe by default: generations run at most Options.Parallel at a time
// with the rest queued first come, first served; request bodies, prompt and
// completion lengths are bounded and violations answered with OpenAI-shaped
// errors; every request has a deadline; a client that goes away stops its
// generation at the next token; an API key, when set, is required on every
// /v1 route.
package server
