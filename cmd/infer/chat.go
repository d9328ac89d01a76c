package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"

	"github.com/spf13/cobra"

	"github.com/fm-moe/fm/pkg/engine"
	"github.com/fm-moe/fm/pkg/policy"
	"github.com/fm-moe/fm/pkg/sample"
	"github.com/fm-moe/fm/pkg/tokenizer"
)

func newChatCmd() *cobra.Command {
	var (
		ef      policy.EngineFlags
		sf      policy.SamplingFlags
		tf      thinkFlags
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

Commands (as in ollama): /clear (or /reset) starts a new conversation, /help
lists the commands, /bye (or /exit, or end of input) quits. On a terminal,
Ctrl-C stops the reply being written once the token in progress is done (the
conversation keeps what was said, and the next turn continues from it without
processing it again); at the prompt it quits. Sampling flags and defaults are those of 'fm-infer run'; the model
summary and the seed are printed on stderr at the start.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			thinking, err := tf.enableThinking()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			stderr, out := cmd.ErrOrStderr(), cmd.OutOrStdout()
			e, tok, err := ef.OpenWithTokenizer(ctx, stderr)
			if err != nil {
				return err
			}
			defer e.Close()
			params, err := policy.Resolve(ef.Model, thinking, sf.Sampling())
			if err != nil {
				return err
			}
			startLine(stderr, e, &ef, params)
			sampler := sample.New(params)
			stop := policy.StopTokens(e.Dir.Manifest.Config.EOSTokenIDs, tok)
			session := e.NewSession()
			defer session.Close()
			var msgs []tokenizer.Message
			reset := func() {
				msgs = msgs[:0]
				if system != "" {
					msgs = append(msgs, tokenizer.Message{Role: "system", Content: system})
				}
				session.Reset()
			}
			reset()
			interactive := isTerminal(out) && isTerminalReader(cmd.InOrStdin())
			chatCtx, quit := context.WithCancel(ctx)
			defer quit()
			intr := &interrupter{quit: quit}
			if interactive {
				// Ctrl-C should stop one reply, not the program: take SIGINT over
				// from the root command's handler for the life of the chat.
				signal.Reset(os.Interrupt)
				sigs := make(chan os.Signal, 1)
				signal.Notify(sigs, os.Interrupt)
				defer signal.Stop(sigs)
				go func() {
					for range sigs {
						intr.interrupt()
					}
				}()
				fmt.Fprintln(stderr, "fm-infer chat: type a message; /help lists the commands, /bye or Ctrl-D quits, Ctrl-C stops a reply.")
			}
			lines := readLines(cmd.InOrStdin())
			for {
				if interactive {
					fmt.Fprint(out, ">>> ")
				}
				var in lineOrErr
				select {
				case in = <-lines:
				case <-chatCtx.Done():
					fmt.Fprintln(out)
					return nil
				}
				if in.err != nil && !errors.Is(in.err, io.EOF) {
					return in.err
				}
				eof := errors.Is(in.err, io.EOF)
				line := strings.TrimSpace(in.line)
				switch {
				case line == "/bye" || line == "/exit" || line == "/quit":
					return nil
				case line == "/clear" || line == "/reset":
					reset()
					fmt.Fprintln(stderr, "(new conversation)")
					continue
				case line == "/help" || line == "/?":
					fmt.Fprint(stderr, chatHelp)
					continue
				case strings.HasPrefix(line, "/") && !strings.Contains(line, " ") && len(line) > 1:
					fmt.Fprintf(stderr, "unknown command %s; /help lists the commands\n", line)
					continue
				case line != "":
					msgs = append(msgs, tokenizer.Message{Role: "user", Content: line})
					turnCtx, stopTurn := context.WithCancel(chatCtx)
					intr.set(stopTurn)
					reply, err := chatTurn(turnCtx, cmd, tok, session, msgs, turnOptions{thinking, tf.hideThinking, sampler, stop, maxToks, timing})
					intr.set(nil)
					stopTurn()
					if errors.Is(err, context.Canceled) && chatCtx.Err() == nil {
						fmt.Fprintln(stderr, "(reply interrupted)")
						err = nil
					}
					var full *engine.ContextError
					if errors.As(err, &full) {
						// The conversation outgrew the context: say so and let the
						// user start over, rather than end the chat.
						fmt.Fprintf(stderr, "(%v: /clear starts a new conversation, or restart with a larger -c/--ctx-size)\n", full)
						msgs = msgs[:len(msgs)-1]
						continue
					}
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
	ef.Register(cmd.Flags())
	sf.Register(cmd.Flags())
	tf.register(cmd.Flags())
	cmd.Flags().StringVar(&system, "system", "", "system message that starts the conversation")
	registerMaxTokens(cmd.Flags(), &maxToks, 2048, "the most tokens per reply")
	cmd.Flags().BoolVar(&timing, "timing", false, "print speed and memory after each reply on stderr")
	return cmd
}

const chatHelp = `commands:
  /clear   start a new conversation (also /reset)
  /help    this list (also /?)
  /bye     quit (also /exit, Ctrl-D)
Ctrl-C stops the reply being written; at the prompt it quits.
`

type turnOptions struct {
	thinking, hideThinking bool
	sampler                *sample.Sampler
	stop                   []int
	maxTokens              int
	timing                 bool
}

// chatTurn renders the conversation, generates and streams the reply, and
// returns it as an assistant message (reasoning split from the answer).
func chatTurn(ctx context.Context, cmd *cobra.Command, tok *tokenizer.Tokenizer, s *engine.Session, msgs []tokenizer.Message, o turnOptions) (tokenizer.Message, error) {
	out := cmd.OutOrStdout()
	text, err := tok.FormatChat(msgs, tokenizer.ChatOptions{AddGenerationPrompt: true, EnableThinking: o.thinking})
	if err != nil {
		return tokenizer.Message{}, err
	}
	ids := tok.Encode(text)
	stream := newThinkStream(tok, ids, o.hideThinking, isTerminal(out))
	stop := o.stop
	res, err := s.Generate(ctx, ids, engine.GenerateOptions{
		MaxTokens: o.maxTokens, Sampler: o.sampler, Stop: stop, Stream: stream,
		OnText: func(t string) { io.WriteString(out, t) },
	})
	if res != nil { // nothing was written for a turn refused at once
		io.WriteString(out, stream.close()+"\n")
	}
	if err != nil && !(errors.Is(err, context.Canceled) && res != nil) {
		return tokenizer.Message{}, err
	}
	// An interrupted reply (err is context.Canceled) is kept as far as it got:
	// the conversation goes on from what the user saw.
	if o.timing {
		fmt.Fprintf(cmd.ErrOrStderr(), "[%s; %d prompt tokens reused]\n", res.Stats.String(), s.Reused)
	}
	gen := res.Tokens
	if len(gen) > 0 && slices.Contains(stop, gen[len(gen)-1]) {
		gen = gen[:len(gen)-1]
	}
	reply := tok.Decode(gen)
	msg := tokenizer.Message{Role: "assistant"}
	msg.ReasoningContent, msg.Content = policy.SplitReasoning(reply)
	return msg, contextHint(err)
}

// interrupter routes Ctrl-C: to the running reply's cancel when there is one,
// else to quitting the chat.
type interrupter struct {
	mu     sync.Mutex
	cancel context.CancelFunc
	quit   context.CancelFunc
}

func (in *interrupter) set(cancel context.CancelFunc) {
	in.mu.Lock()
	in.cancel = cancel
	in.mu.Unlock()
}

func (in *interrupter) interrupt() {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.cancel != nil {
		in.cancel()
		in.cancel = nil
		return
	}
	in.quit()
}

type lineOrErr struct {
	line string
	err  error
}

// readLines delivers r's lines on a channel, so the prompt can also wait for
// Ctrl-C; it ends after the first error (io.EOF included).
func readLines(r io.Reader) <-chan lineOrErr {
	ch := make(chan lineOrErr)
	go func() {
		br := bufio.NewReader(r)
		for {
			line, err := br.ReadString('\n')
			ch <- lineOrErr{line, err}
			if err != nil {
				return
			}
		}
	}()
	return ch
}

func isTerminalReader(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && isTerminal(f)
}
