package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// LoadJSON reads a HuggingFace tokenizer.json. Supported: model BPE (byte
// level, no dropout, no unk/byte fallback, no subword prefix/suffix),
// normalizer null or NFC, pre_tokenizer Sequence[Split(Regex, Isolated),
// ByteLevel(add_prefix_space=false, use_regex=false)] with a recognised Split
// regex, decoder ByteLevel. Anything else is an error naming the field, never
// a silent approximation.
//
// The vocabulary and merges (almost all of the file) are parsed by a small
// dedicated scanner; encoding/json handles the small remaining sections.
func LoadJSON(r io.Reader) (*Tokenizer, error) {
	data, err := readAll(r)
	if err != nil {
		return nil, err
	}
	return parseJSON(data)
}

type jsonAddedToken struct {
	ID         *int   `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

type jsonComponent struct {
	Type           string            `json:"type"`
	Normalizers    []json.RawMessage `json:"normalizers"`
	Pretokenizers  []json.RawMessage `json:"pretokenizers"`
	Pattern        map[string]string `json:"pattern"`
	Behavior       string            `json:"behavior"`
	Invert         bool              `json:"invert"`
	AddPrefixSpace bool              `json:"add_prefix_space"`
	UseRegex       *bool             `json:"use_regex"`
}

type jsonModel struct {
	Type                    string   `json:"type"`
	Dropout                 *float64 `json:"dropout"`
	UnkToken                *string  `json:"unk_token"`
	ContinuingSubwordPrefix *string  `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string  `json:"end_of_word_suffix"`
	FuseUnk                 bool     `json:"fuse_unk"`
	ByteFallback            bool     `json:"byte_fallback"`
	IgnoreMerges            bool     `json:"ignore_merges"`
}

func parseJSON(data []byte) (*Tokenizer, error) {
	sc := &scanner{data: data}
	var (
		p        parts
		sections = map[string][]byte{}
		model    jsonModel
		vocab    *vocabulary
		rawMerge = &mergeTexts{}
		sawModel bool
	)
	err := sc.object(func(key string) error {
		if key != "model" {
			raw, err := sc.skip()
			sections[key] = raw
			return err
		}
		sawModel = true
		modelRaw := map[string][]byte{}
		err := sc.object(func(key string) error {
			var err error
			switch key {
			case "vocab":
				vocab, err = sc.vocab()
			case "merges":
				rawMerge, err = sc.merges()
			default:
				modelRaw[key], err = sc.skip()
			}
			if err != nil {
				return fmt.Errorf("model.%s: %w", key, err)
			}
			return nil
		})
		if err != nil {
			return err
		}
		return unmarshalFields(modelRaw, &model)
	})
	if err != nil {
		return nil, err
	}
	sc.ws()
	if sc.pos != len(sc.data) {
		return nil, sc.errorf("trailing data after the top-level object")
	}
	if !sawModel || vocab == nil {
		return nil, errors.New("no model.vocab")
	}
	if err := checkModel(model); err != nil {
		return nil, err
	}
	p.ignoreMerges = model.IgnoreMerges
	if p.nfc, err = parseNormalizer(sections["normalizer"]); err != nil {
		return nil, err
	}
	if p.pattern, err = parsePreTokenizer(sections["pre_tokenizer"]); err != nil {
		return nil, err
	}
	if err := checkDecoder(sections["decoder"]); err != nil {
		return nil, err
	}

	var added []jsonAddedToken
	if raw := sections["added_tokens"]; raw != nil && string(raw) != "null" {
		if err := json.Unmarshal(raw, &added); err != nil {
			return nil, fmt.Errorf("added_tokens: %w", err)
		}
	}

	// The id table: vocabulary first, then added tokens on top.
	maxID := -1
	for _, e := range vocab.spans {
		maxID = max(maxID, int(e.id))
	}
	for i, a := range added {
		if a.ID == nil || *a.ID < 0 {
			return nil, fmt.Errorf("added_tokens[%d] %q: missing or negative id", i, a.Content)
		}
		maxID = max(maxID, *a.ID)
	}
	p.tokens = make([]string, maxID+1)
	p.kinds = make([]uint8, maxID+1)
	for _, e := range vocab.spans {
		text := vocab.text[e.start:e.end]
		if p.kinds[e.id] != kindUnused && p.tokens[e.id] != text {
			return nil, fmt.Errorf("model.vocab: id %d used by both %q and %q", e.id, p.tokens[e.id], text)
		}
		p.tokens[e.id] = text
		p.kinds[e.id] = kindVocab
	}
	for i, a := range added {
		if a.Content == "" {
			return nil, fmt.Errorf("added_tokens[%d]: empty content", i)
		}
		id := *a.ID
		if p.kinds[id] == kindVocab && p.tokens[id] != a.Content {
			return nil, fmt.Errorf("added_tokens[%d] %q: id %d is the vocabulary token %q", i, a.Content, id, p.tokens[id])
		}
		p.tokens[id] = a.Content
		p.kinds[id] = kindAdded
		p.added = append(p.added, AddedToken{
			ID: id, Content: a.Content, Special: a.Special, Normalized: a.Normalized,
			LStrip: a.LStrip, RStrip: a.RStrip, SingleWord: a.SingleWord,
		})
	}

	p.merges = make([]merge, len(rawMerge.spans))
	for i, sp := range rawMerge.spans {
		a, b, ab := rawMerge.blob[sp.a0:sp.a1], rawMerge.blob[sp.a1:sp.b1], rawMerge.blob[sp.a0:sp.b1]
		left, ok1 := vocab.index.get(a)
		right, ok2 := vocab.index.get(b)
		result, ok3 := vocab.index.get(ab)
		switch {
		case !ok1:
			return nil, fmt.Errorf("model.merges[%d]: token %q is not in the vocabulary", i, a)
		case !ok2:
			return nil, fmt.Errorf("model.merges[%d]: token %q is not in the vocabulary", i, b)
		case !ok3:
			return nil, fmt.Errorf("model.merges[%d]: merged token %q is not in the vocabulary", i, ab)
		}
		p.merges[i] = merge{left: left, right: right, result: result}
	}
	p.vocabIndex = vocab.index
	return build(p)
}

// readAll is io.ReadAll with one allocation when the reader knows its size
// (bytes.Reader, strings.Reader, os.File): tokenizer files are megabytes.
func readAll(r io.Reader) ([]byte, error) {
	size := -1
	switch v := r.(type) {
	case interface{ Len() int }:
		size = v.Len()
	case interface{ Stat() (fs.FileInfo, error) }:
		if info, err := v.Stat(); err == nil && info.Mode().IsRegular() {
			size = int(info.Size())
		}
	}
	if size < 0 {
		return io.ReadAll(r)
	}
	buf := bytes.NewBuffer(make([]byte, 0, size+1))
	_, err := buf.ReadFrom(r)
	return buf.Bytes(), err
}

// unmarshalFields decodes a set of raw object members into v.
func unmarshalFields(fields map[string][]byte, v any) error {
	var b strings.Builder
	b.WriteByte('{')
	first := true
	for k, raw := range fields {
		if !first {
			b.WriteByte(',')
		}
		first = false
		b.WriteString(strconv.Quote(k))
		b.WriteByte(':')
		b.Write(raw)
	}
	b.WriteByte('}')
	return json.Unmarshal([]byte(b.String()), v)
}

func checkModel(m jsonModel) error {
	switch {
	case m.Type != "BPE":
		return fmt.Errorf("model.type %q: only BPE is supported", m.Type)
	case m.Dropout != nil && *m.Dropout != 0:
		return fmt.Errorf("model.dropout %v: BPE dropout is not supported", *m.Dropout)
	case m.ContinuingSubwordPrefix != nil && *m.ContinuingSubwordPrefix != "":
		return fmt.Errorf("model.continuing_subword_prefix %q: not supported", *m.ContinuingSubwordPrefix)
	case m.EndOfWordSuffix != nil && *m.EndOfWordSuffix != "":
		return fmt.Errorf("model.end_of_word_suffix %q: not supported", *m.EndOfWordSuffix)
	case m.ByteFallback:
		return errors.New("model.byte_fallback true: not supported (byte-level BPE needs no fallback)")
	}
	// unk_token and fuse_unk cannot matter: every byte of the input maps to a
	// byte-level symbol, so no symbol is ever unknown.
	return nil
}

func parseNormalizer(raw []byte) (nfc bool, err error) {
	if raw == nil || string(raw) == "null" {
		return false, nil
	}
	var c jsonComponent
	if err := json.Unmarshal(raw, &c); err != nil {
		return false, fmt.Errorf("normalizer: %w", err)
	}
	switch c.Type {
	case "NFC":
		return true, nil
	case "Sequence":
		for i, sub := range c.Normalizers {
			subNFC, err := parseNormalizer(sub)
			if err != nil {
				return false, fmt.Errorf("normalizer.normalizers[%d]: %w", i, err)
			}
			nfc = nfc || subNFC
		}
		return nfc, nil
	}
	return false, fmt.Errorf("normalizer type %q: only NFC (or none) is supported", c.Type)
}

func parsePreTokenizer(raw []byte) (string, error) {
	if raw == nil || string(raw) == "null" {
		return "", errors.New("pre_tokenizer: missing; want Sequence[Split(Regex), ByteLevel]")
	}
	var c jsonComponent
	if err := json.Unmarshal(raw, &c); err != nil {
		return "", fmt.Errorf("pre_tokenizer: %w", err)
	}
	if c.Type != "Sequence" || len(c.Pretokenizers) != 2 {
		return "", fmt.Errorf("pre_tokenizer type %q with %d parts: want Sequence[Split(Regex), ByteLevel]", c.Type, len(c.Pretokenizers))
	}
	var split, bl jsonComponent
	if err := json.Unmarshal(c.Pretokenizers[0], &split); err != nil {
		return "", fmt.Errorf("pre_tokenizer.pretokenizers[0]: %w", err)
	}
	if err := json.Unmarshal(c.Pretokenizers[1], &bl); err != nil {
		return "", fmt.Errorf("pre_tokenizer.pretokenizers[1]: %w", err)
	}
	pattern, isRegex := split.Pattern["Regex"]
	switch {
	case split.Type != "Split":
		return "", fmt.Errorf("pre_tokenizer.pretokenizers[0] type %q: want Split", split.Type)
	case !isRegex:
		return "", fmt.Errorf("pre_tokenizer.pretokenizers[0]: pattern %v is not a Regex", split.Pattern)
	case split.Behavior != "Isolated" || split.Invert:
		return "", fmt.Errorf("pre_tokenizer.pretokenizers[0]: behavior %q invert %v: want Isolated, invert false", split.Behavior, split.Invert)
	case bl.Type != "ByteLevel":
		return "", fmt.Errorf("pre_tokenizer.pretokenizers[1] type %q: want ByteLevel", bl.Type)
	case bl.AddPrefixSpace:
		return "", errors.New("pre_tokenizer.pretokenizers[1]: ByteLevel add_prefix_space true is not supported")
	case bl.UseRegex == nil || *bl.UseRegex:
		return "", errors.New("pre_tokenizer.pretokenizers[1]: ByteLevel use_regex must be false (the Split regex does the splitting)")
	}
	if _, err := newSplitter(pattern); err != nil {
		return "", fmt.Errorf("pre_tokenizer.pretokenizers[0]: %w", err)
	}
	return pattern, nil
}

func checkDecoder(raw []byte) error {
	if raw == nil || string(raw) == "null" {
		return errors.New("decoder: missing; want ByteLevel")
	}
	var c jsonComponent
	if err := json.Unmarshal(raw, &c); err != nil {
		return fmt.Errorf("decoder: %w", err)
	}
	if c.Type != "ByteLevel" {
		return fmt.Errorf("decoder type %q: only ByteLevel is supported", c.Type)
	}
	return nil
}

// scanner is a minimal JSON reader for the two large members of
// tokenizer.json. It validates what it reads.
type scanner struct {
	data []byte
	pos  int
	buf  []byte
}

func (s *scanner) errorf(format string, args ...any) error {
	return fmt.Errorf("json offset %d: %s", s.pos, fmt.Sprintf(format, args...))
}

func (s *scanner) ws() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

func (s *scanner) peek() byte {
	s.ws()
	if s.pos >= len(s.data) {
		return 0
	}
	return s.data[s.pos]
}

func (s *scanner) expect(c byte) error {
	if s.peek() != c {
		if s.pos >= len(s.data) {
			return s.errorf("unexpected end of input, want %q", c)
		}
		return s.errorf("found %q, want %q", s.data[s.pos], c)
	}
	s.pos++
	return nil
}

// object reads {"key": value, ...}, calling member for each key with the
// scanner positioned at the value, which member must consume.
func (s *scanner) object(member func(key string) error) error {
	return s.object2(func(key []byte) error { return member(string(key)) })
}

// array reads [v, ...], calling elem with the scanner at each element.
func (s *scanner) array(elem func() error) error {
	if err := s.expect('['); err != nil {
		return err
	}
	if s.peek() == ']' {
		s.pos++
		return nil
	}
	for {
		if err := elem(); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.pos++
		case ']':
			s.pos++
			return nil
		default:
			return s.errorf("want ',' or ']' in array")
		}
	}
}

// strBytes reads a string and returns its bytes, valid until the next call.
func (s *scanner) strBytes() ([]byte, error) {
	if err := s.expect('"'); err != nil {
		return nil, err
	}
	start := s.pos
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		if c == '"' {
			out := s.data[start:s.pos]
			s.pos++
			if !utf8.Valid(out) {
				return nil, s.errorf("string is not valid UTF-8")
			}
			return out, nil
		}
		if c == '\\' {
			return s.strEscaped(start)
		}
		if c < 0x20 {
			return nil, s.errorf("control character in string")
		}
		s.pos++
	}
	return nil, s.errorf("unterminated string")
}

func (s *scanner) strEscaped(start int) ([]byte, error) {
	out := append(s.buf[:0], s.data[start:s.pos]...)
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		switch {
		case c == '"':
			s.pos++
			s.buf = out
			if !utf8.Valid(out) {
				return nil, s.errorf("string is not valid UTF-8")
			}
			return out, nil
		case c < 0x20:
			return nil, s.errorf("control character in string")
		case c != '\\':
			out = append(out, c)
			s.pos++
			continue
		}
		if s.pos+1 >= len(s.data) {
			break
		}
		e := s.data[s.pos+1]
		s.pos += 2
		switch e {
		case '"', '\\', '/':
			out = append(out, e)
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, err := s.hex4()
			if err != nil {
				return nil, err
			}
			if utf16.IsSurrogate(r) {
				// A high surrogate must be followed by \u and a low one.
				if r >= 0xDC00 || s.pos+1 >= len(s.data) || s.data[s.pos] != '\\' || s.data[s.pos+1] != 'u' {
					return nil, s.errorf("lone surrogate \\u%04X", r)
				}
				s.pos += 2
				r2, err := s.hex4()
				if err != nil {
					return nil, err
				}
				if r2 < 0xDC00 || r2 > 0xDFFF {
					return nil, s.errorf("lone surrogate \\u%04X", r)
				}
				r = utf16.DecodeRune(r, r2)
			}
			out = utf8.AppendRune(out, r)
		default:
			return nil, s.errorf("invalid escape \\%c", e)
		}
	}
	return nil, s.errorf("unterminated string")
}

func (s *scanner) hex4() (rune, error) {
	if s.pos+4 > len(s.data) {
		return 0, s.errorf("short \\u escape")
	}
	v, err := strconv.ParseUint(string(s.data[s.pos:s.pos+4]), 16, 32)
	if err != nil {
		return 0, s.errorf("bad \\u escape %q", s.data[s.pos:s.pos+4])
	}
	s.pos += 4
	return rune(v), nil
}

// int reads a non-negative integer that fits an int32.
func (s *scanner) int() (int32, error) {
	s.ws()
	start := s.pos
	for s.pos < len(s.data) && s.data[s.pos] >= '0' && s.data[s.pos] <= '9' {
		s.pos++
	}
	v, err := strconv.ParseInt(string(s.data[start:s.pos]), 10, 32)
	if err != nil || s.pos == start {
		return 0, s.errorf("want a non-negative integer id")
	}
	return int32(v), nil
}

// skip consumes any JSON value and returns its bytes (validated by
// encoding/json when they are later unmarshalled).
func (s *scanner) skip() ([]byte, error) {
	s.ws()
	start := s.pos
	depth := 0
	for s.pos < len(s.data) {
		switch c := s.data[s.pos]; c {
		case '"':
			if _, err := s.strBytes(); err != nil {
				return nil, err
			}
			if depth == 0 {
				return s.data[start:s.pos], nil
			}
			continue
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 { // the end of the enclosing container ends a scalar
				return s.data[start:s.pos], nil
			}
			depth--
			if depth == 0 {
				s.pos++
				return s.data[start:s.pos], nil
			}
		case ',':
			if depth == 0 {
				return s.data[start:s.pos], nil
			}
		}
		s.pos++
	}
	if depth == 0 && s.pos > start {
		return s.data[start:s.pos], nil
	}
	return nil, s.errorf("unterminated value")
}

// vocabulary is model.vocab: texts and ids in file order, indexed by text.
type vocabulary struct {
	text  string
	spans []textSpan
	index *textIndex
}

func (s *scanner) vocab() (*vocabulary, error) {
	var (
		spans []textSpan
		blob  = make([]byte, 0, len(s.data)/4)
	)
	err := s.object2(func(key []byte) error {
		id, err := s.int()
		if err != nil {
			return err
		}
		spans = append(spans, textSpan{uint32(len(blob)), uint32(len(blob) + len(key)), id})
		blob = append(blob, key...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	text := string(blob)
	return &vocabulary{text: text, spans: spans, index: newTextIndex(text, spans)}, nil
}

// object2 is object with keys passed as bytes valid during the callback,
// sparing an allocation per key.
func (s *scanner) object2(member func(key []byte) error) error {
	if err := s.expect('{'); err != nil {
		return err
	}
	if s.peek() == '}' {
		s.pos++
		return nil
	}
	for {
		key, err := s.strBytes()
		if err != nil {
			return err
		}
		if err := s.expect(':'); err != nil {
			return err
		}
		if err := member(key); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.pos++
		case '}':
			s.pos++
			return nil
		default:
			return s.errorf("want ',' or '}' in object")
		}
	}
}

// mergeTexts holds model.merges as text: merge i joins
// blob[a0:a1] and blob[a1:b1], so blob[a0:b1] is the merged token.
type mergeTexts struct {
	blob  string
	spans []struct{ a0, a1, b1 int32 }
}

// merges reads model.merges in either spelling: "a b" strings (older files)
// or ["a", "b"] pairs (tokenizers ≥ 0.20).
func (s *scanner) merges() (*mergeTexts, error) {
	var (
		m    mergeTexts
		blob = make([]byte, 0, len(s.data)/4)
	)
	add := func(start, mid int) {
		m.spans = append(m.spans, struct{ a0, a1, b1 int32 }{int32(start), int32(mid), int32(len(blob))})
	}
	err := s.array(func() error {
		start := len(blob)
		switch s.peek() {
		case '"':
			line, err := s.strBytes()
			if err != nil {
				return err
			}
			cut := bytes.IndexByte(line, ' ')
			if cut < 0 || bytes.IndexByte(line[cut+1:], ' ') >= 0 {
				return s.errorf("merge %q: want two tokens separated by one space", line)
			}
			blob = append(blob, line[:cut]...)
			mid := len(blob)
			blob = append(blob, line[cut+1:]...)
			add(start, mid)
		case '[':
			n, mid := 0, 0
			err := s.array(func() error {
				str, err := s.strBytes()
				if err != nil {
					return err
				}
				if n < 2 {
					blob = append(blob, str...)
				}
				if n == 0 {
					mid = len(blob)
				}
				n++
				return nil
			})
			if err != nil {
				return err
			}
			if n != 2 {
				return s.errorf("merge with %d parts, want 2", n)
			}
			add(start, mid)
		default:
			return s.errorf("merge: want a string or a 2-element array")
		}
		return nil
	})
	m.blob = string(blob)
	return &m, err
}
