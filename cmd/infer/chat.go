package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fm-moe/fm/pkg/engine"
	"github.com/fm-moe/fm/pkg/sample"
	"github.com/fm-moe/fm/pkg/tokenizer"
)

func newChatCmd() *cobra.Command {
	var (
		ef      engineFlags
		sf      samplingFlags
		system  string
		maxToks int
		timing  bool
	)
	cmd := &cobra.Command{
		Use:   "chat --model OUT [flags]",
		Short: "Talk with the model: a REPL that keeps the conversation",
		Long: `chat reads one message per line from stdin and streams the model's replies.
The conversation is kept: each turn is rendered with the model's chat template
and only the tokens the model has not seen yet are processed.

The model's thinking (between <think> and </think>) is shown dimmed on a
terminal, or not at all with --hide-thinking; --no-think asks the model not to
think. Earlier turns' thinking is dropped from the history, as the chat
templates do.

Commands: /reset starts a new conversation, /exit (or end of input) quits.
Sampling flags and defaults are those of 'fm-infer run'.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			thinking, err := sf.enableThinking()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			stderr, out := cmd.ErrOrStderr(), cmd.OutOrStdout()
			e, err := ef.open(ctx, stderr)
			if err != nil {
				return err
			}
			defer e.Close()
			tok, err := tokenizer.Load(ef.model)
			if err != nil {
				return err
			}
			params, err := sf.params(ef.model, thinking)
			if err != nil {
				return err
			}
			sampler := sample.New(params)
			stop := stopTokens(e, tok)
			session := e.NewSession()
			var msgs []tokenizer.Message
			reset := func() {
				msgs = msgs[:0]
				if system != "" {
					msgs = append(msgs, tokenizer.Message{Role: "system", Content: system})
				}
				session.Reset()
			}
			reset()
			in := bufio.NewReader(cmd.InOrStdin())
			interactive := isTerminal(out) && isTerminalReader(cmd.InOrStdin())
			if interactive {
				fmt.Fprintln(stderr, "fm-infer chat: type a message; /reset starts over, /exit or Ctrl-D quits.")
			}
			for {
				if interactive {
					fmt.Fprint(out, ">>> ")
				}
				line, err := in.ReadString('\n')
				if err != nil && !errors.Is(err, io.EOF) {
					return err
				}
				eof := errors.Is(err, io.EOF)
				line = strings.TrimSpace(line)
				switch {
				case line == "/exit" || line == "/quit":
					return nil
				case line == "/reset":
					reset()
					fmt.Fprintln(stderr, "(new conversation)")
					continue
				case line != "":
					msgs = append(msgs, tokenizer.Message{Role: "user", Content: line})
					reply, err := chatTurn(cmd, tok, session, msgs, turnOptions{thinking, sf.hideThinking, sampler, stop, maxToks, timing})
					if err != nil {
						return err
					}
					msgs = append(msgs, reply)
				}
				if eof {
					return nil
				}
			}
		},
	}
	ef.register(cmd.Flags())
	sf.register(cmd.Flags())
	cmd.Flags().StringVar(&system, "system", "", "system message that starts the conversation")
	cmd.Flags().IntVar(&maxToks, "tokens", 2048, "the most tokens per reply")
	cmd.Flags().BoolVar(&timing, "timing", false, "print speed and memory after each reply on stderr")
	return cmd
}

type turnOptions struct {
	thinking, hideThinking bool
	sampler                *sample.Sampler
	stop                   []int
	maxTokens              int
	timing                 bool
}

// chatTurn renders the conversation, generates and streams the reply, and
// returns it as an assistant message (reasoning split from the answer).
func chatTurn(cmd *cobra.Command, tok *tokenizer.Tokenizer, s *engine.Session, msgs []tokenizer.Message, o turnOptions) (tokenizer.Message, error) {
	out := cmd.OutOrStdout()
	text, err := tok.FormatChat(msgs, tokenizer.ChatOptions{AddGenerationPrompt: true, EnableThinking: o.thinking})
	if err != nil {
		return tokenizer.Message{}, err
	}
	ids := tok.Encode(text)
	stream := newThinkStream(tok, ids, o.hideThinking, isTerminal(out))
	stop := o.stop
	res, err := s.Generate(cmd.Context(), ids, engine.GenerateOptions{
		MaxTokens: o.maxTokens, Sampler: o.sampler, Stop: stop, Stream: stream,
		OnText: func(t string) { io.WriteString(out, t) },
	})
	io.WriteString(out, stream.close()+"\n")
	if err != nil {
		return tokenizer.Message{}, err
	}
	if o.timing {
		fmt.Fprintf(cmd.ErrOrStderr(), "[%s; %d prompt tokens reused]\n", res.Stats.String(), s.Reused)
	}
	gen := res.Tokens
	if len(gen) > 0 && slices.Contains(stop, gen[len(gen)-1]) {
		gen = gen[:len(gen)-1]
	}
	reply := tok.Decode(gen)
	// The generation prompt may have opened <think> already; the reply then
	// holds only its end tag.
	msg := tokenizer.Message{Role: "assistant", Content: reply}
	if i := strings.Index(reply, "</think>"); i >= 0 {
		msg.ReasoningContent = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(reply[:i]), "<think>"))
		msg.Content = strings.TrimLeft(reply[i+len("</think>"):], "\n")
	}
	return msg, nil
}

func isTerminalReader(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && isTerminal(f)
}
