// Package safetensors reads safetensors files and sharded safetensors checkpoints
// without loading tensor data into memory.
//
// A safetensors file is an 8-byte little-endian header length n, n bytes of JSON
// mapping tensor names to {dtype, shape, data_offsets}, then the tensor bytes.
// Large checkpoints are split into shards tied together by
// model.safetensors.index.json ({"weight_map": {tensor: shard}}).
//
// Why not github.com/nlpodyssey/safetensors alone: it needs the whole file as one
// []byte (a 200 GB checkpoint does not fit), it has no sharded-index support, and
// one F8_E4M3/F8_E5M2 tensor makes it reject the whole header. This package parses
// the header itself with encoding/json and exposes every tensor as an
// io.SectionReader over an io.ReaderAt, the way debug/elf and archive/zip expose
// their sections, so tensor bytes are read with pread and never all at once.
// nlpodyssey/safetensors still serves as an independent oracle in the tests: on
// the golden checkpoints both parsers must agree on every tensor.
// Unknown dtypes are an error for that tensor only, not for the file.
package safetensors
