// Package requant rewrites the routed experts of a prepared directory at 2 or 3
// bits (fm-requant2bit): it reads every file of OUT/packed_experts (4-bit, 8-bit
// or float experts written by fm-repack), dequantizes each of its matrices to
// float32 and quantizes them again with quant.GroupOptimizer — per group of 64
// the bf16 scale and bias that minimize the squared error against the source
// values, then corrected for the least-squares fit's shrinkage
// (quant.GainCorrected), codes picked after the rounding — into
// OUT/packed_experts_2bit (or
// OUT/packed_experts_3bit) under the same file names. The manifest then lists
// both expert sets; fm-infer --2bit selects the 2-bit one.
//
// The output follows the converter's rules (docs/FORMAT.md): components at
// 4096-byte offsets, the file size a multiple of 4096, zero padding, an
// XXH3-128 checksum per file, every file written under a temporary name and
// renamed, free space checked first, the file system flushed before the
// manifest is rewritten (atomically) to list the new set. Source files are
// checked against their manifest checksums before use, so a damaged 4-bit file
// never turns into a valid-looking 2-bit one.
//
// Requantization resumes: the set records a source key (a hash of the source
// set's layout and checksums and of the algorithm), and a journal in the target
// directory records each finished file; a rerun re-hashes what earlier runs
// recorded for the same key and rewrites only what does not verify.
package requant
