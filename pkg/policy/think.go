package policy

import (
	"slices"
	"strings"

	"github.com/fm-moe/fm/pkg/tokenizer"
)

// Think tags of Qwen's reasoning models; each is one special token.
const (
	ThinkOpen  = "<think>"
	ThinkClose = "</think>"
)

// PartKind says what a piece of streamed text is.
type PartKind int

const (
	Answer    PartKind = iota // the reply proper
	Reasoning                 // text between <think> and </think>
	OpenTag                   // the <think> tag itself
	CloseTag                  // the </think> tag itself
)

// Part is a piece of decoded text and what it is.
type Part struct {
	Kind PartKind
	Text string
}

// ThinkSplitter decodes generated ids to text (complete UTF-8 only, like
// tokenizer.StreamDecoder) and tells reasoning from answer. An HTTP server
// sends Reasoning as reasoning_content and Answer as content and drops the
// tags; a terminal prints all of it, reasoning dimmed. Not safe for concurrent
// use: one per reply.
type ThinkSplitter struct {
	dec         *tokenizer.StreamDecoder
	open, close int // ids of <think> / </think>, -1 when absent
	inside      bool
	parts       []Part
}

// NewThinkSplitter returns a splitter for a reply that follows prompt: a
// generation prompt may already open the thinking block (Qwen3.5 and the
// thinking models do), and then the reply starts inside it.
func NewThinkSplitter(tok *tokenizer.Tokenizer, prompt []int) *ThinkSplitter {
	s := &ThinkSplitter{dec: tok.NewStreamDecoder(), open: -1, close: -1}
	if id, ok := tok.TokenID(ThinkOpen); ok {
		s.open = id
	}
	if id, ok := tok.TokenID(ThinkClose); ok {
		s.close = id
	}
	for _, id := range prompt {
		switch {
		case id == s.open && s.open >= 0:
			s.inside = true
		case id == s.close && s.close >= 0:
			s.inside = false
		}
	}
	return s
}

// Thinking reports whether the reply is inside <think>…</think> now.
func (s *ThinkSplitter) Thinking() bool { return s.inside }

// Add decodes one more id and returns the text that became complete, in
// order. The slice is reused by the next call.
func (s *ThinkSplitter) Add(id int) []Part {
	s.parts = s.parts[:0]
	switch {
	case id == s.open && s.open >= 0:
		s.emit(s.kind(), s.dec.Flush())
		s.inside = true
		s.emit(OpenTag, s.dec.Add(id)+s.dec.Flush())
	case id == s.close && s.close >= 0:
		s.emit(s.kind(), s.dec.Flush())
		s.inside = false
		s.emit(CloseTag, s.dec.Add(id)+s.dec.Flush())
	default:
		s.emit(s.kind(), s.dec.Add(id))
	}
	return s.parts
}

// Flush returns what is held back at the end of the reply (an incomplete
// character becomes U+FFFD).
func (s *ThinkSplitter) Flush() []Part {
	s.parts = s.parts[:0]
	s.emit(s.kind(), s.dec.Flush())
	return s.parts
}

func (s *ThinkSplitter) kind() PartKind {
	if s.inside {
		return Reasoning
	}
	return Answer
}

func (s *ThinkSplitter) emit(k PartKind, text string) {
	if text != "" {
		s.parts = append(s.parts, Part{k, text})
	}
}

// SplitReasoning splits a finished reply into its reasoning and its answer,
// as the chat templates store an assistant turn (reasoning_content without the
// tags, the answer without the newlines that followed </think>). The
// generation prompt may have opened <think> already, so the reply may hold
// only the closing tag. A reply without </think> is all answer.
func SplitReasoning(reply string) (reasoning, answer string) {
	i := strings.Index(reply, ThinkClose)
	if i < 0 {
		return "", reply
	}
	reasoning = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(reply[:i]), ThinkOpen))
	return reasoning, strings.TrimLeft(reply[i+len(ThinkClose):], "\n")
}

// StopTokens returns the ids that end a reply: the model's end-of-sequence
// ids (config.json and generation_config.json, as the manifest records them)
// and the tokenizer's chat end tokens (<|im_end|>, <|endoftext|>, its
// eos_token). A stop token is not part of the reply's text.
func StopTokens(eos []int, tok *tokenizer.Tokenizer) []int {
	stop := slices.Clone(eos)
	for _, id := range tok.StopTokens() {
		if !slices.Contains(stop, id) {
			stop = append(stop, id)
		}
	}
	return stop
}
