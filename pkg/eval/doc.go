// Package eval measures what a model variant costs in quality: perplexity over
// a text, and against a reference variant (typically the 16-bit conversion of
// the same checkpoint) the mean KL divergence and the top-1 agreement of the
// next-token distributions. It is the engine of `fm-infer eval`.
//
// The method is fixed so numbers are comparable with transformers: the text is
// tokenized whole without special tokens, split into non-overlapping chunks of
// Ctx tokens (a shorter tail is dropped), each chunk runs from an empty state;
// a chunk's NLL is the mean of −log p(token t+1 | tokens ≤ t) over its Ctx−1
// predictions, and perplexity = exp(mean over chunks of the chunk NLL). KL and
// top-1 agreement are averaged over the same predictions. All reductions are
// done in float64 from the float32 logits.
package eval
