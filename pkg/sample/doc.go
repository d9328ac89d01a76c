// Package sample picks the next token from a row of logits.
//
// The processing order is Hugging Face transformers' (and, for the filters,
// llama.cpp's): repetition penalty, then temperature, top-k, top-p, min-p,
// then a draw from what is left with a seeded PCG generator, so the same
// seed, logits and history always give the same token. Temperature 0 is
// greedy decoding: the argmax of the penalized logits, the lowest index on
// ties.
//
// Stopping (end-of-sequence ids, chat end tokens) is the engine's business;
// the sampler only samples.
package sample
