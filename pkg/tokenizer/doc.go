// Package tokenizer is fm's byte-level BPE tokenizer for the Qwen family. It
// produces exactly the ids HuggingFace tokenizers produces for Qwen2/Qwen3/
// Qwen3-Next and Qwen3.5 tokenizer.json files, decodes ids back to text
// (also incrementally, for streaming), formats chats the way the Qwen chat
// templates do, and reads and writes the compact tokenizer.bin and vocab.bin
// of a prepared model directory.
//
// # Encoding pipeline
//
// Encode follows HF tokenizers step by step:
//
//  1. Ill-formed UTF-8 is replaced by U+FFFD (one per maximal ill-formed
//     subpart), giving the text Python's errors="replace" would give.
//  2. Added tokens with normalized=false are cut out of the raw text,
//     leftmost match first and the longest among those starting there
//     (HF's Aho-Corasick LeftmostLongest), honouring single_word, lstrip and
//     rstrip. Special and non-special added tokens are treated alike.
//  3. Each remaining piece is NFC-normalized (plain NFC: where x/text would
//     insert U+034F after 30 combining marks, as its Stream-Safe Text Format
//     does, an exact slow path runs instead); added tokens with
//     normalized=true are then cut out of the normalized piece.
//  4. Each remaining piece is split by the Split regex, run by a hand-written
//     scanner (pretokenize.go; Go's RE2 lacks the look-ahead of `\s+(?!\S)`).
//     Only PatternQwen2 and PatternQwen35 are accepted; any other regex is a
//     load error.
//  5. Each pre-token's bytes go through BPE: symbols start as the vocabulary
//     ids of single bytes (GPT-2 byte-to-unicode alphabet), and the lowest
//     ranked merge, leftmost among equals, is applied until none applies.
//     Results of long pre-tokens (16–256 bytes) are kept in a lock-free,
//     direct-mapped cache; short ones are cheaper to merge again (cache.go).
//
// Decode concatenates the tokens' bytes and replaces ill-formed UTF-8 with
// U+FFFD. A token's bytes follow HF's ByteLevel decoder: the byte-level
// alphabet mapped back to bytes, or the token's own UTF-8 text when it holds
// a character outside that alphabet (added tokens such as "<|im_end|>").
//
// # tokenizer.bin, version 1
//
// All integers are little-endian unsigned 32-bit ("u32"). Offsets are in
// bytes from the start of the file.
//
//	offset  size        field
//	0       4           magic "FMTK"
//	4       4           u32 version = 1
//	8       4           u32 flags: bit 0 = NFC normalizer, bit 1 = ignore_merges
//	12      4           u32 N, the number of token ids (ids 0..N-1; VocabSize)
//	16      4           u32 M, the number of merges
//	20      4           u32 A, the number of added tokens
//	24      4           u32 S, the size of the token string blob
//	28      4           u32 reserved, 0
//	32      4·(N+1)     u32 string offsets: token i is blob[off[i]:off[i+1]];
//	                    off[0] = 0, non-decreasing, off[N] = S
//	…       N           u8 kind of each id: 0 unused, 1 BPE vocabulary entry,
//	                    2 added token; then zero padding to a multiple of 4
//	…       S           token string blob (UTF-8): vocabulary entries in the
//	                    byte-level spelling of tokenizer.json ("Ġthe"), added
//	                    tokens as their content; then zero padding to a
//	                    multiple of 4
//	…       12·M        merges in rank order (rank = index): u32 left id,
//	                    u32 right id, u32 result id
//	…       8·A         added tokens in tokenizer.json order: u32 id, u32 flags
//	                    (bit 0 special, 1 normalized, 2 lstrip, 3 rstrip,
//	                    4 single_word); the content is the id's string
//	…       4+len       u32 length + bytes: the Split regex, verbatim
//	…       4+len       u32 length + bytes: eos_token of tokenizer_config.json
//	                    ("" if unknown)
//	…       4+len       u32 length + bytes: the Jinja chat template ("" if none)
//	…       4+len       u32 length + bytes: the file the template came from
//	end-4   4           u32 CRC-32C (Castagnoli) of every preceding byte
//
// A reader rejects a wrong magic, another version, a checksum mismatch,
// offsets out of order and counts that do not fit the file.
//
// # vocab.bin, version 1
//
// The decode table alone, for consumers that only turn ids into bytes.
//
//	offset  size        field
//	0       4           magic "FMVB"
//	4       4           u32 version = 1
//	8       4           u32 N, the number of token ids
//	12      4           u32 B, the size of the byte blob
//	16      4·(N+1)     u32 offsets: id i decodes to blob[off[i]:off[i+1]]
//	…       B           byte blob: the raw bytes of every id (special tokens
//	                    as their literal text; unused ids are empty)
//	end-4   4           u32 CRC-32C (Castagnoli) of every preceding byte
//
// Token bytes need not be valid UTF-8 on their own (a character may span
// tokens); a consumer concatenates them and repairs UTF-8 at the end, or
// holds incomplete sequences back as StreamDecoder does.
//
// # Chat formatting
//
// fm has no Jinja engine. DetectChatFormat recognises which official Qwen
// template a model ships (chat_template.jinja, else tokenizer_config.json's
// chat_template) and FormatChat renders the same text in Go; see ChatFormat
// for the variants.
package tokenizer
