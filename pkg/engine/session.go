package engine

import (
	"context"
	"slices"

	"github.com/fm-moe/fm/pkg/model"
)

// Session keeps one conversation's model state across turns. Each turn passes
// the whole conversation, rendered and tokenized; the session continues from
// the longest stretch of it the model has already consumed, so a turn costs
// only its new tokens. The model state cannot be rewound, so besides the live
// state the session keeps a snapshot taken at the end of the last prompt: chat
// templates re-render earlier assistant turns (they drop the reasoning), which
// makes the conversation diverge from the live state right after that prompt.
//
// A turn cut short (its context cancelled, as Ctrl-C in fm-infer chat does)
// keeps everything the state consumed: a cancellation during a decode step
// lets that step finish, so the live state holds the prompt and every
// generated token but the last, and the next turn, which carries the partial
// reply, only processes its new tokens. Only a step left half done (a
// cancelled prefill, a failed step) falls back to the snapshot.
type Session struct {
	e    *Engine
	live *model.State
	fed  []int // tokens the live state has consumed

	snap    *model.State // state after the last prompt (nil: none)
	snapIDs []int        // its tokens

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
	s.dropSnapshot()
}

// Close releases the session's states (device memory); the session must not
// be used afterwards.
func (s *Session) Close() {
	s.live.Release()
	s.fed = nil
	s.dropSnapshot()
}

func (s *Session) dropSnapshot() {
	if s.snap != nil {
		s.snap.Release()
	}
	s.snap, s.snapIDs = nil, nil
}

// Generate continues the conversation whose full token sequence is ids.
func (s *Session) Generate(ctx context.Context, ids []int, opts GenerateOptions) (*Result, error) {
	// The longest usable state whose tokens are a proper prefix of ids: the
	// live one, or a copy of the snapshot; else the live one emptied.
	liveN, snapN := -1, -1
	if s.live.Err() == nil && len(s.fed) < len(ids) && slices.Equal(s.fed, ids[:len(s.fed)]) {
		liveN = len(s.fed)
	}
	if s.snap != nil && len(s.snapIDs) < len(ids) && slices.Equal(s.snapIDs, ids[:len(s.snapIDs)]) {
		snapN = len(s.snapIDs)
	}
	st, start := s.live, 0
	switch {
	case liveN >= snapN && liveN > 0:
		start = liveN
	case snapN > 0:
		if c := s.snap.Clone(); c.Err() == nil {
			s.live.Release()
			st, start = c, snapN
		} else {
			c.Release() // the device could not copy it: prefill again
		}
	}
	if start == 0 {
		st.Reset()
	}
	s.live, s.fed = st, s.fed[:0]
	s.Reused = start
	opts.History = ids
	opts.finishStep = true
	var snap *model.State
	opts.afterPrefill = func(st *model.State) { snap = st.Clone() }
	res, err := s.e.Generate(ctx, st, ids[start:], opts)
	// Whatever ended the turn, a usable state holds the first Len tokens of
	// the conversation followed by the generated ones (the last sampled
	// token is never fed back).
	if n := st.Len(); st.Err() == nil && n >= len(ids) {
		s.fed = append(append(s.fed, ids...), res.Tokens...)[:n]
	} else if st.Err() == nil && n == start {
		s.fed = append(s.fed, ids[:start]...) // refused before any work
	} else {
		st.Reset() // left half done: only the snapshot is trustworthy
	}
	if snap != nil && snap.Err() == nil {
		s.dropSnapshot()
		s.snap, s.snapIDs = snap, slices.Clone(ids)
	} else if snap != nil {
		snap.Release()
	}
	return res, err
}
