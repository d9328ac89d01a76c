package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/spf13/cobra"

	"github.com/fm-moe/fm/pkg/engine"
	"github.com/fm-moe/fm/pkg/policy"
	"github.com/fm-moe/fm/pkg/sample"
	"github.com/fm-moe/fm/pkg/tokenizer"
)

// cancelWriter cancels its context after n writes (Ctrl-C while the reply
// is printed).
type cancelWriter struct {
	n      int
	cancel context.CancelFunc
}

func (w *cancelWriter) Write(p []byte) (int, error) {
	if w.n--; w.n == 0 {
		w.cancel()
	}
	return len(p), nil
}

// TestChatInterruptKeepsReply: a chat reply cut short keeps its tokens in
// the session, so the next turn — whose history carries the partial reply,
// re-rendered by the chat template — processes only its new tokens instead
// of the reply again (issue 9), and answers as a fresh conversation would.
// On the trained tiny-code model, whose greedy code re-tokenizes as
// generated.
func TestChatInterruptKeepsReply(t *testing.T) {
	dir := convertGolden(t, "../../testdata/models/tiny-code", 16)
	e, err := engine.Open(context.Background(), engine.Options{Dir: dir, SkipDenseChecksum: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	tok, err := tokenizer.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	params, err := policy.Resolve(dir, false, policy.Sampling{Temperature: new(float32)})
	if err != nil {
		t.Fatal(err)
	}
	opts := turnOptions{sampler: sample.New(params), stop: policy.StopTokens(e.Dir.Manifest.Config.EOSTokenIDs, tok), maxTokens: 64}
	turn := func(ctx context.Context, s *engine.Session, msgs []tokenizer.Message, out io.Writer) (tokenizer.Message, error) {
		cmd := &cobra.Command{}
		cmd.SetOut(out)
		cmd.SetErr(io.Discard)
		return chatTurn(ctx, cmd, tok, s, msgs, opts)
	}
	s := e.NewSession()
	defer s.Close()
	msgs := []tokenizer.Message{{Role: "user", Content: "Write a Python function that reverses a list."}}
	text, err := tok.FormatChat(msgs, tokenizer.ChatOptions{AddGenerationPrompt: true})
	if err != nil {
		t.Fatal(err)
	}
	prompt := len(tok.Encode(text))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reply, err := turn(ctx, s, msgs, &cancelWriter{n: 8, cancel: cancel})
	if !errors.Is(err, context.Canceled) || reply.Content == "" {
		t.Fatalf("interrupted turn: reply %q, error %v", reply.Content, err)
	}
	msgs = append(msgs, reply, tokenizer.Message{Role: "user", Content: "Now add a docstring."})
	var got bytes.Buffer
	if _, err := turn(context.Background(), s, msgs, &got); err != nil {
		t.Fatal(err)
	}
	if s.Reused <= prompt {
		t.Errorf("the turn after an interrupted reply reused %d tokens: not beyond the %d of the earlier prompt (the partial reply %q was processed again)",
			s.Reused, prompt, reply.Content)
	}
	cold := e.NewSession()
	defer cold.Close()
	var want bytes.Buffer
	if _, err := turn(context.Background(), cold, msgs, &want); err != nil {
		t.Fatal(err)
	}
	if got.String() != want.String() {
		t.Errorf("after the interrupted reply: %q\na fresh conversation: %q", got.String(), want.String())
	}
	t.Logf("partial reply %q; next turn reused %d tokens (earlier prompt %d)", reply.Content, s.Reused, prompt)
}
