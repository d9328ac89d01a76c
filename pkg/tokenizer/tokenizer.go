package tokenizer

import (
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"
)

// Token kinds of the id table.
const (
	kindUnused uint8 = iota // no token has this id
	kindVocab               // a BPE vocabulary entry
	kindAdded               // an added token (tokenizer.json added_tokens)
)

// Tokenizer is a byte-level BPE tokenizer equivalent to HF tokenizers for the
// Qwen family. It is safe for concurrent use.
type Tokenizer struct {
	// The id table: token id i is strs[strOff[i]:strOff[i+1]] (the form
	// tokenizer.json uses: byte-level text for vocabulary entries, content
	// for added tokens) and decodes to raw[rawOff[i]:rawOff[i+1]].
	strs   string
	strOff []uint32
	raw    []byte
	rawOff []uint32
	kinds  []uint8

	byteID       [256]int32 // vocabulary id of each single byte, -1 if none
	allBytes     bool       // every byte has an id (always so for Qwen)
	mergeList    []merge    // in rank order
	merges       mergeTable
	ignoreMerges bool // check whole pre-tokens against the vocabulary first
	wordIDs      map[string]int32

	added        []AddedToken
	addedByText  map[string]int
	rawAdded     *addedMatcher // non-normalized tokens, matched before NFC
	normAdded    *addedMatcher // normalized tokens, matched after NFC
	normalizeNFC bool
	split        *splitter

	chat chatConfig

	// vocabIndex (token text → id) is only needed by TokenID for non-added
	// tokens; the binary loader builds it on first use.
	vocabOnce  sync.Once
	vocabIndex *textIndex

	cache wordCache
}

// parts is what both loaders produce; build turns it into a Tokenizer.
type parts struct {
	tokens       []string // by id; "" for unused ids
	kinds        []uint8
	merges       []merge
	added        []AddedToken
	nfc          bool
	ignoreMerges bool
	pattern      string
	vocabIndex   *textIndex // optional: the JSON loader has it already
	chat         chatConfig
}

func build(p parts) (*Tokenizer, error) {
	sp, err := newSplitter(p.pattern)
	if err != nil {
		return nil, err
	}
	n := len(p.tokens)
	t := &Tokenizer{
		strOff:       make([]uint32, n+1),
		rawOff:       make([]uint32, n+1),
		kinds:        p.kinds,
		mergeList:    p.merges,
		ignoreMerges: p.ignoreMerges,
		added:        p.added,
		addedByText:  make(map[string]int, len(p.added)),
		normalizeNFC: p.nfc,
		split:        sp,
		chat:         p.chat,
		vocabIndex:   p.vocabIndex,
		cache:        newWordCache(),
	}
	total := 0
	for _, s := range p.tokens {
		total += len(s)
	}
	var sb strings.Builder
	sb.Grow(total)
	raw := make([]byte, 0, total)
	for i, s := range p.tokens {
		sb.WriteString(s)
		t.strOff[i+1] = uint32(sb.Len())
		raw = appendTokenBytes(raw, s)
		t.rawOff[i+1] = uint32(len(raw))
	}
	t.strs = sb.String()
	t.raw = raw

	for b := range t.byteID {
		t.byteID[b] = -1
	}
	for id, k := range t.kinds {
		if k != kindVocab {
			continue
		}
		s := t.str(id)
		if r, size := utf8.DecodeRuneInString(s); size == len(s) && r < rune(len(runeToByte)) && runeToByte[r] >= 0 {
			t.byteID[runeToByte[r]] = int32(id)
		}
	}
	if n > idLimit || len(p.merges) >= idLimit {
		return nil, fmt.Errorf("%d token ids and %d merges: this implementation supports fewer than %d of each", n, len(p.merges), idLimit)
	}
	for _, m := range p.merges {
		for _, id := range [...]int32{m.left, m.right, m.result} {
			if id < 0 || int(id) >= n || t.kinds[id] == kindUnused {
				return nil, fmt.Errorf("merge (%d, %d) → %d: id out of the vocabulary", m.left, m.right, m.result)
			}
		}
	}
	t.allBytes = true
	byteOf := make([]int16, n)
	for i := range byteOf {
		byteOf[i] = -1
	}
	for b, id := range t.byteID {
		if id < 0 {
			t.allBytes = false
		} else {
			byteOf[id] = int16(b)
		}
	}
	t.merges = newMergeTable(p.merges, func(id int32) int { return int(byteOf[id]) })
	if t.ignoreMerges {
		t.wordIDs = make(map[string]int32)
		for id, k := range t.kinds {
			if k == kindVocab {
				t.wordIDs[string(t.rawBytes(id))] = int32(id)
			}
		}
	}

	var rawTokens, normTokens []matchToken
	for i := range t.added {
		a := &t.added[i]
		if a.ID < 0 || a.ID >= n || t.kinds[a.ID] != kindAdded {
			return nil, fmt.Errorf("added token %q: id %d missing from the id table", a.Content, a.ID)
		}
		if _, dup := t.addedByText[a.Content]; !dup {
			t.addedByText[a.Content] = a.ID
		}
		if a.Normalized {
			text := a.Content
			if t.normalizeNFC {
				text = nfc(text)
			}
			normTokens = append(normTokens, matchToken{text: text, tok: a})
		} else {
			rawTokens = append(rawTokens, matchToken{text: a.Content, tok: a})
		}
	}
	t.rawAdded = newAddedMatcher(rawTokens)
	t.normAdded = newAddedMatcher(normTokens)
	return t, nil
}

func (t *Tokenizer) str(id int) string      { return t.strs[t.strOff[id]:t.strOff[id+1]] }
func (t *Tokenizer) rawBytes(id int) []byte { return t.raw[t.rawOff[id]:t.rawOff[id+1]] }
func (t *Tokenizer) validID(id int) bool {
	return id >= 0 && id < len(t.kinds) && t.kinds[id] != kindUnused
}

// VocabSize is the number of token ids (the largest id plus one), added
// tokens included. A model's embedding may have more rows (padding).
func (t *Tokenizer) VocabSize() int { return len(t.kinds) }

// AddedTokens returns a copy of the added-token list in tokenizer.json order.
func (t *Tokenizer) AddedTokens() []AddedToken { return append([]AddedToken(nil), t.added...) }

// TokenID returns the id of a token given in its tokenizer.json spelling: an
// added token's content ("<|im_end|>") or a vocabulary entry in byte-level
// form ("Ġthe" for " the").
func (t *Tokenizer) TokenID(s string) (int, bool) {
	if id, ok := t.addedByText[s]; ok {
		return id, true
	}
	t.vocabOnce.Do(func() {
		if t.vocabIndex != nil {
			return
		}
		spans := make([]textSpan, 0, len(t.kinds))
		for id, k := range t.kinds {
			if k == kindVocab {
				spans = append(spans, textSpan{t.strOff[id], t.strOff[id+1], int32(id)})
			}
		}
		t.vocabIndex = newTextIndex(t.strs, spans)
	})
	id, ok := t.vocabIndex.get(s)
	return int(id), ok
}

// TokenString returns the tokenizer.json spelling of an id (byte-level text
// for vocabulary entries), or false for an unused id.
func (t *Tokenizer) TokenString(id int) (string, bool) {
	if !t.validID(id) {
		return "", false
	}
	return t.str(id), true
}

// TokenBytes returns the raw bytes an id decodes to (shared; do not modify),
// or false for an unused id.
func (t *Tokenizer) TokenBytes(id int) ([]byte, bool) {
	if !t.validID(id) {
		return nil, false
	}
	return t.rawBytes(id), true
}

// Encode returns the token ids of text, as HF tokenizers' encode with
// add_special_tokens=False would (Qwen's post-processor adds nothing anyway):
// added tokens are recognised (longest match first) before NFC
// normalization, the rest is pre-tokenized and BPE-merged.
//
// Ill-formed UTF-8 in text (which a Go string can hold but a Python str
// cannot) is first replaced by U+FFFD, one per maximal ill-formed subpart —
// the result of Python's bytes.decode("utf-8", errors="replace") — so the ids
// are those HF produces for the text a Python caller would have.
func (t *Tokenizer) Encode(text string) []int {
	text = sanitizeUTF8(text)
	var segs []segment
	segs = t.rawAdded.split(text, segs)
	ids := make([]int32, 0, len(text)/3+1)
	var sub []segment
	for _, seg := range segs {
		if seg.id >= 0 {
			ids = append(ids, int32(seg.id))
			continue
		}
		piece := seg.text
		if t.normalizeNFC {
			piece = nfc(piece)
		}
		sub = t.normAdded.split(piece, sub[:0])
		for _, s := range sub {
			if s.id >= 0 {
				ids = append(ids, int32(s.id))
				continue
			}
			ids = t.encodePiece(s.text, ids)
		}
	}
	out := make([]int, len(ids))
	for i, id := range ids {
		out[i] = int(id)
	}
	return out
}

// encodePiece pre-tokenizes normalized text without added tokens and appends
// the BPE ids of every pre-token.
func (t *Tokenizer) encodePiece(s string, ids []int32) []int32 {
	for i := 0; i < len(s); {
		j := t.split.next(s, i)
		ids = t.encodeWord(s[i:j], ids)
		i = j
	}
	return ids
}

func (t *Tokenizer) encodeWord(word string, ids []int32) []int32 {
	if len(word) == 1 {
		if id := t.byteID[word[0]]; id >= 0 {
			return append(ids, id)
		}
		return ids
	}
	if t.ignoreMerges {
		if id, ok := t.wordIDs[word]; ok {
			return append(ids, id)
		}
	}
	if !cacheable(word) {
		return t.bpeWord(word, ids)
	}
	if out, ok := t.cache.get(word, ids); ok {
		return out
	}
	n := len(ids)
	ids = t.bpeWord(word, ids)
	t.cache.put(word, ids[n:])
	return ids
}

// Decode returns the text of ids: each token's bytes concatenated, then
// ill-formed UTF-8 replaced by U+FFFD (maximal subparts), as HF's ByteLevel
// decoder does. Special tokens are included; ids that name no token are
// skipped, as HF skips them.
func (t *Tokenizer) Decode(ids []int) string {
	raw := t.appendBytes(make([]byte, 0, 4*len(ids)), ids)
	if utf8.Valid(raw) {
		return string(raw)
	}
	return string(appendLossy(nil, raw))
}

// DecodeBytes returns the raw bytes of ids without any UTF-8 repair.
func (t *Tokenizer) DecodeBytes(ids []int) []byte { return t.appendBytes(nil, ids) }

func (t *Tokenizer) appendBytes(dst []byte, ids []int) []byte {
	for _, id := range ids {
		if t.validID(id) {
			dst = append(dst, t.rawBytes(id)...)
		}
	}
	return dst
}

// IsSpecial reports whether id is an added token flagged special
// (<|im_start|>, <|endoftext|>, …).
func (t *Tokenizer) IsSpecial(id int) bool {
	if !t.validID(id) || t.kinds[id] != kindAdded {
		return false
	}
	for _, a := range t.added {
		if a.ID == id {
			return a.Special
		}
	}
	return false
}

// StreamDecoder turns ids into text one at a time for streaming output. It
// emits only complete UTF-8: the bytes of a character split across tokens
// are held until the token that completes it arrives. The concatenation of
// everything Add and Flush return equals Decode of all the ids.
type StreamDecoder struct {
	t       *Tokenizer
	pending []byte
}

// NewStreamDecoder returns a decoder with nothing pending.
func (t *Tokenizer) NewStreamDecoder() *StreamDecoder { return &StreamDecoder{t: t} }

// Add appends the bytes of id and returns the text that is now complete
// (possibly empty).
func (d *StreamDecoder) Add(id int) string {
	if d.t.validID(id) {
		d.pending = append(d.pending, d.t.rawBytes(id)...)
	}
	hold := incompleteTail(d.pending)
	ready := len(d.pending) - hold
	if ready == 0 {
		return ""
	}
	var s string
	if utf8.Valid(d.pending[:ready]) {
		s = string(d.pending[:ready])
	} else {
		s = string(appendLossy(nil, d.pending[:ready]))
	}
	d.pending = d.pending[:copy(d.pending, d.pending[ready:])]
	return s
}

// Flush returns whatever is held back (an incomplete character becomes
// U+FFFD) and resets the decoder.
func (d *StreamDecoder) Flush() string {
	s := string(appendLossy(nil, d.pending))
	d.pending = d.pending[:0]
	return s
}
