package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/fm-moe/fm/pkg/cli"
	"github.com/fm-moe/fm/pkg/engine"
	"github.com/fm-moe/fm/pkg/policy"
	"github.com/fm-moe/fm/pkg/sample"
	"github.com/fm-moe/fm/pkg/tokenizer"
)

// thinkFlags are run's and chat's flags about the model's reasoning.
type thinkFlags struct {
	think, noThink, hideThinking bool
}

func (f *thinkFlags) register(fs *pflag.FlagSet) {
	fs.BoolVar(&f.think, "think", false, "let the model think before answering (the chat template's default)")
	fs.BoolVar(&f.noThink, "no-think", false, "ask the model to answer without thinking (enable_thinking=false)")
	fs.BoolVar(&f.hideThinking, "hide-thinking", false, "do not print the model's thinking (it is shown dimmed on a terminal)")
}

// enableThinking resolves --think / --no-think: the templates' default is on.
func (f *thinkFlags) enableThinking() (bool, error) {
	if f.think && f.noThink {
		return false, errors.New("--think and --no-think exclude each other")
	}
	return !f.noThink, nil
}

// registerMaxTokens defines --tokens and its llama.cpp spellings -n and
// --n-predict: a positive count, or -1 for "until a stop token or the end of
// the context".
func registerMaxTokens(fs *pflag.FlagSet, p *int, def int, what string) {
	check := func(n int) error {
		if n == 0 || n < -1 {
			return errors.New("want a positive count, or -1 for until the end of the reply or context")
		}
		return nil
	}
	usage := what + "; -1: until a stop token or the context is full"
	cli.IntFunc(fs, p, "n-predict", "n", def, check, usage)
	cli.IntFunc(fs, p, "tokens", "", def, check, "same as --n-predict")
}

// startLine prints the model summary and the sampling settings, the seed
// included, so that a run can be repeated.
func startLine(w io.Writer, e *engine.Engine, ef *policy.EngineFlags, p sample.Params) {
	fmt.Fprintf(w, "model: %s\n", policy.Summary(e, ef))
	fmt.Fprintf(w, "sampling: temperature %g, top-k %d, top-p %g, min-p %g, repeat-penalty %g over %d, seed %d\n",
		p.Temperature, p.TopK, p.TopP, p.MinP, p.RepeatPenalty, p.RepeatLastN, p.Seed)
}

// contextHint adds the flag to change to a prompt that does not fit.
func contextHint(err error) error {
	var ce *engine.ContextError
	if errors.As(err, &ce) {
		return fmt.Errorf("%w (raise -c/--ctx-size up to the model's limit, or shorten the prompt)", err)
	}
	return err
}

func newRunCmd() *cobra.Command {
	var (
		ef      policy.EngineFlags
		sf      policy.SamplingFlags
		tf      thinkFlags
		prompt  string
		file    string
		maxToks int
		timing  bool
		noChat  bool
	)
	cmd := &cobra.Command{
		Use:   "run -m OUT [-p] PROMPT [flags]",
		Short: "Generate text from a prompt, streaming it as it is produced",
		Long: `run generates a continuation of the prompt and streams it to stdout. The prompt
is -p/--prompt, the positional argument, or the contents of -f/--file (- reads
standard input).

The prompt is wrapped in the model's chat template as one user message (with the
assistant turn opened) unless --no-chat is given, in which case it is tokenized
as is. Generation stops at the config's end-of-sequence ids, at the chat end
tokens, after -n tokens, or when the context (-c) is full. A prompt longer than
the context is an error.

Sampling defaults come from the model's generation_config.json when it sets
them, otherwise from Qwen's recommendations: temperature 0.7, top-p 0.8, top-k 20
(thinking: temperature 0.6, top-p 0.95), plus a repetition penalty of 1.1 over
the last 64 tokens. --temperature 0 is greedy decoding (the penalty still
applies unless --repeat-penalty 1). The model summary and the sampling settings,
with the seed used, are printed on stderr at the start.

--timing prints, on stderr, prefill and decode speed, a per-layer breakdown of
where the time went (attention/delta-net, routing, expert I/O, expert compute,
other), expert bytes read per token and the peak memory.`,
		Example: `  fm-infer run -m out/q35 "Write a haiku about disks"
  fm-infer run -m out/q35 -f prompt.txt -n -1 --temp 0 -s 42`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			text, err := promptText(cmd, prompt, file, args)
			if err != nil {
				return err
			}
			thinking, err := tf.enableThinking()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			stderr := cmd.ErrOrStderr()
			e, tok, err := ef.OpenWithTokenizer(ctx, stderr)
			if err != nil {
				return err
			}
			defer e.Close()
			if !noChat {
				text, err = tok.FormatChat([]tokenizer.Message{{Role: "user", Content: text}},
					tokenizer.ChatOptions{AddGenerationPrompt: true, EnableThinking: thinking})
				if err != nil {
					return err
				}
			}
			ids := tok.Encode(text)
			if len(ids) == 0 {
				return errors.New("the prompt encodes to no tokens")
			}
			params, err := policy.Resolve(ef.Model, thinking && !noChat, sf.Sampling())
			if err != nil {
				return err
			}
			startLine(stderr, e, &ef, params)
			out := cmd.OutOrStdout()
			stream := newThinkStream(tok, ids, tf.hideThinking, isTerminal(out))
			res, err := e.Generate(ctx, e.Model.NewState(), ids, engine.GenerateOptions{
				MaxTokens: maxToks,
				Sampler:   sample.New(params),
				Stop:      policy.StopTokens(e.Dir.Manifest.Config.EOSTokenIDs, tok),
				Stream:    stream,
				OnText:    func(s string) { io.WriteString(out, s) },
				History:   ids,
			})
			io.WriteString(out, stream.close()+"\n")
			if res != nil && timing {
				e.WriteTiming(stderr, &res.Stats)
			}
			if err == nil && res.StopReason == engine.StopContext {
				fmt.Fprintf(stderr, "note: stopped because the context of %d tokens is full (-c/--ctx-size)\n", e.ContextSize())
			}
			return contextHint(err)
		},
	}
	ef.Register(cmd.Flags())
	sf.Register(cmd.Flags())
	tf.register(cmd.Flags())
	cmd.Flags().StringVarP(&prompt, "prompt", "p", "", "the prompt text (or give it as the argument)")
	cmd.Flags().StringVarP(&file, "file", "f", "", "read the prompt from this file (- for standard input)")
	registerMaxTokens(cmd.Flags(), &maxToks, 256, "the most tokens to generate")
	cmd.Flags().BoolVar(&timing, "timing", false, "print speed, a per-layer time breakdown, I/O per token and peak memory on stderr")
	cmd.Flags().BoolVar(&noChat, "no-chat", false, "use the prompt as raw text, without the chat template")
	return cmd
}

// promptText returns the one prompt given by --prompt, --file or the argument.
func promptText(cmd *cobra.Command, prompt, file string, args []string) (string, error) {
	given := 0
	for _, set := range []bool{cmd.Flags().Changed("prompt"), file != "", len(args) > 0} {
		if set {
			given++
		}
	}
	switch {
	case given == 0:
		return "", errors.New("no prompt: give it as the argument, with -p/--prompt, or with -f/--file")
	case given > 1:
		return "", errors.New("give the prompt once: as the argument, with -p/--prompt, or with -f/--file")
	case len(args) > 0:
		prompt = args[0]
	case file == "-":
		b, err := io.ReadAll(cmd.InOrStdin())
		if err != nil {
			return "", fmt.Errorf("--file -: reading standard input: %w", err)
		}
		prompt = string(b)
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("--file: %w", err)
		}
		prompt = string(b)
	}
	if strings.TrimSpace(prompt) == "" {
		return "", errors.New("the prompt is empty")
	}
	return prompt, nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// ANSI faint / normal intensity, for the model's thinking on a terminal.
const (
	dimOn  = "\x1b[2m"
	dimOff = "\x1b[22m"
)

// thinkStream presents a reply on a terminal or in a pipe: the reasoning
// (with its tags) dimmed on a terminal, hidden with --hide-thinking. It is the
// engine.TextStream of run and chat.
type thinkStream struct {
	split     *policy.ThinkSplitter
	hide, dim bool
	dimmed    bool
	buf       strings.Builder
}

func newThinkStream(tok *tokenizer.Tokenizer, prompt []int, hide, dim bool) *thinkStream {
	return &thinkStream{split: policy.NewThinkSplitter(tok, prompt), hide: hide, dim: dim}
}

// Add implements engine.TextStream.
func (s *thinkStream) Add(id int) string { return s.show(s.split.Add(id)) }

// Flush implements engine.TextStream.
func (s *thinkStream) Flush() string { return s.show(s.split.Flush()) }

func (s *thinkStream) show(parts []policy.Part) string {
	s.buf.Reset()
	for _, p := range parts {
		if p.Kind == policy.Answer {
			if s.dimmed {
				s.buf.WriteString(dimOff)
				s.dimmed = false
			}
			s.buf.WriteString(p.Text)
			continue
		}
		if s.hide {
			continue
		}
		if s.dim && !s.dimmed {
			s.buf.WriteString(dimOn)
			s.dimmed = true
		}
		s.buf.WriteString(p.Text)
		if p.Kind == policy.CloseTag && s.dimmed {
			s.buf.WriteString(dimOff)
			s.dimmed = false
		}
	}
	return s.buf.String()
}

// close ends any open dimming.
func (s *thinkStream) close() string {
	if s.dimmed {
		s.dimmed = false
		return dimOff
	}
	return ""
}
