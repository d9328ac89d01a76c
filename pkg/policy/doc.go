// Package policy is fm's runtime policy, shared by the command line (fm-infer
// run, chat, ...) and the HTTP server so that both behave the same:
//
//   - EngineFlags: the flags that open a model (directory, expert set, I/O
//     mode, threads, context size, verification), their ranges, and the
//     one-line model summary printed at start;
//   - Sampling and Resolve: which sampling settings a request gets — explicit
//     settings over the prepared directory's generation_config.json over Qwen's
//     published recommendations — range-checked, with the seed made explicit;
//   - StopTokens: the ids that end a reply (config eos ids and the chat
//     template's end tokens);
//   - ThinkSplitter and SplitReasoning: the model's reasoning
//     (<think>…</think>) separated from its answer, while streaming and after.
//
// Presentation (colours, where text is printed) stays with the caller.
package policy
