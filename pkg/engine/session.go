package engine

import (
	"context"

	"github.com/fm-moe/fm/pkg/model"
)

// Session keeps one conversation's model state across turns. Each turn passes
// the whole conversation, rendered and tokenized; the session continues from
// the longest stretch of it the model has already consumed, so a turn costs
// only its new tokens. The model state cannot be rewound, so besides the live
// state the session keeps a snapshot taken at the end of the last prompt: chat
// templates re-render earlier assistant turns (they drop the reasoning), which
// makes the conversation diverge from the live state right after that prompt.
type Session struct {
	e    *Engine
	live *model.State
	fed  []int // tokens the live state has consumed

	snap    *model.State // state after the last prompt
	snapLen int          // its length (a prefix of fed)

	// Reused counts the prompt tokens of the last turn that did not need to be
	// processed again.
	Reused int
}

// NewSession starts an empty conversation.
func (e *Engine) NewSession() *Session {
	return &Session{e: e, live: e.Model.NewState()}
}

// Reset forgets the conversation.
func (s *Session) Reset() {
	s.live.Reset()
	s.fed = s.fed[:0]
	s.snap, s.snapLen = nil, 0
}

// Generate continues the conversation whose full token sequence is ids.
func (s *Session) Generate(ctx context.Context, ids []int, opts GenerateOptions) (*Result, error) {
	live := commonPrefix(s.fed, ids)
	st := s.live
	start := 0
	switch {
	case live == len(s.fed) && live < len(ids):
		start = live // the live state is a prefix: continue it
	case s.snap != nil && s.snapLen < len(ids) && commonPrefix(s.fed[:s.snapLen], ids) == s.snapLen:
		st = s.snap.Clone()
		start = s.snapLen
	default:
		st = s.e.Model.NewState()
	}
	s.Reused = start
	prompt := ids[start:]
	opts.History = ids
	var snapAfterPrompt *model.State
	opts.afterPrefill = func(st *model.State) { snapAfterPrompt = st.Clone() }
	res, err := s.e.Generate(ctx, st, prompt, opts)
	s.live = st
	s.fed = append(s.fed[:0], ids...)
	if res != nil && len(res.Tokens) > 1 {
		// Every sampled token but the last was fed back.
		s.fed = append(s.fed, res.Tokens[:len(res.Tokens)-1]...)
	}
	if err != nil {
		// The live state is wherever the failure left it; only the snapshot is
		// trustworthy.
		s.live.Reset()
		s.fed = s.fed[:0]
	}
	if snapAfterPrompt != nil {
		s.snap, s.snapLen = snapAfterPrompt, len(ids)
		if err != nil {
			s.live, s.fed = snapAfterPrompt.Clone(), append(s.fed[:0], ids...)
		}
	}
	return res, err
}

func commonPrefix(a, b []int) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}
