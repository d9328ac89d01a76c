package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/fm-moe/fm/pkg/engine"
	"github.com/fm-moe/fm/pkg/sample"
	"github.com/fm-moe/fm/pkg/tokenizer"
)

// samplingFlags are the sampling and chat flags of run and chat. Unset flags
// take the model's generation_config.json values, then Qwen's published
// recommendations (see defaults).
type samplingFlags struct {
	temperature, topP, minP, repeatPenalty float32
	topK, repeatLastN                      int
	seed                                   int64
	think, noThink, hideThinking           bool
	fs                                     *pflag.FlagSet
}

func (f *samplingFlags) register(fs *pflag.FlagSet) {
	f.fs = fs
	fs.Float32Var(&f.temperature, "temperature", 0.7, "sampling temperature; 0 is greedy (default: generation_config.json, else 0.7, or 0.6 when thinking)")
	fs.IntVar(&f.topK, "top-k", 20, "keep only the K most likely tokens; 0 disables (default: generation_config.json, else 20)")
	fs.Float32Var(&f.topP, "top-p", 0.8, "nucleus sampling mass; 1 disables (default: generation_config.json, else 0.8, or 0.95 when thinking)")
	fs.Float32Var(&f.minP, "min-p", 0, "drop tokens less likely than P times the most likely; 0 disables")
	fs.Float32Var(&f.repeatPenalty, "repeat-penalty", 1.1, "penalize tokens among the last --repeat-last-n (transformers style); 1 disables (default: generation_config.json, else 1.1)")
	fs.IntVar(&f.repeatLastN, "repeat-last-n", 64, "how many recent tokens the repeat penalty looks at; 0 means the whole context")
	fs.Int64Var(&f.seed, "seed", -1, "random seed; -1 picks one from the clock")
	fs.BoolVar(&f.think, "think", false, "let the model think before answering (the chat template's default)")
	fs.BoolVar(&f.noThink, "no-think", false, "ask the model to answer without thinking (enable_thinking=false)")
	fs.BoolVar(&f.hideThinking, "hide-thinking", false, "do not print the model's thinking (it is shown dimmed on a terminal)")
}

// enableThinking resolves --think / --no-think: the templates' default is on.
func (f *samplingFlags) enableThinking() (bool, error) {
	if f.think && f.noThink {
		return false, errors.New("--think and --no-think exclude each other")
	}
	return !f.noThink, nil
}

// generationConfig holds the sampling keys of generation_config.json.
type generationConfig struct {
	DoSample          *bool    `json:"do_sample"`
	Temperature       *float32 `json:"temperature"`
	TopK              *int     `json:"top_k"`
	TopP              *float32 `json:"top_p"`
	MinP              *float32 `json:"min_p"`
	RepetitionPenalty *float32 `json:"repetition_penalty"`
}

// params resolves the sampling settings: explicit flags, then the prepared
// directory's generation_config.json, then Qwen's recommended settings
// (non-thinking: T 0.7, top-p 0.8, top-k 20; thinking: T 0.6, top-p 0.95) with
// a mild repetition penalty (1.1 over the last 64 tokens), which keeps small
// models out of the loops they otherwise fall into (measured on tiny-code).
func (f *samplingFlags) params(modelDir string, thinking bool) (sample.Params, error) {
	p := sample.Params{Temperature: 0.7, TopK: 20, TopP: 0.8, RepeatPenalty: 1.1}
	if thinking {
		p.Temperature, p.TopP = 0.6, 0.95
	}
	if b, err := os.ReadFile(filepath.Join(modelDir, "generation_config.json")); err == nil {
		var g generationConfig
		if err := json.Unmarshal(b, &g); err != nil {
			return p, fmt.Errorf("%s: %w", filepath.Join(modelDir, "generation_config.json"), err)
		}
		if g.Temperature != nil {
			p.Temperature = *g.Temperature
		}
		if g.TopK != nil {
			p.TopK = *g.TopK
		}
		if g.TopP != nil {
			p.TopP = *g.TopP
		}
		if g.MinP != nil {
			p.MinP = *g.MinP
		}
		if g.RepetitionPenalty != nil {
			p.RepeatPenalty = *g.RepetitionPenalty
		}
		if g.DoSample != nil && !*g.DoSample {
			p.Temperature = 0
		}
	}
	changed := func(name string) bool { return f.fs != nil && f.fs.Changed(name) }
	if changed("temperature") {
		p.Temperature = f.temperature
	}
	if changed("top-k") {
		p.TopK = f.topK
	}
	if changed("top-p") {
		p.TopP = f.topP
	}
	if changed("min-p") {
		p.MinP = f.minP
	}
	if changed("repeat-penalty") {
		p.RepeatPenalty = f.repeatPenalty
	}
	p.RepeatLastN = f.repeatLastN
	if p.Temperature < 0 || p.TopK < 0 || p.TopP < 0 || p.MinP < 0 || p.RepeatPenalty < 0 {
		return p, errors.New("sampling settings must not be negative")
	}
	if f.seed >= 0 {
		p.Seed = uint64(f.seed)
	} else {
		p.Seed = uint64(time.Now().UnixNano())
	}
	return p, nil
}

// stopTokens are the config's eos ids plus the tokenizer's chat end tokens.
func stopTokens(e *engine.Engine, tok *tokenizer.Tokenizer) []int {
	stop := slices.Clone(e.Model.Config().EOSTokenIDs)
	for _, id := range tok.StopTokens() {
		if !slices.Contains(stop, id) {
			stop = append(stop, id)
		}
	}
	return stop
}

func newRunCmd() *cobra.Command {
	var (
		ef      engineFlags
		sf      samplingFlags
		prompt  string
		maxToks int
		timing  bool
		noChat  bool
	)
	cmd := &cobra.Command{
		Use:   "run --model OUT --prompt TEXT [flags]",
		Short: "Generate text from a prompt, streaming it as it is produced",
		Long: `run generates a continuation of --prompt and streams it to stdout.

The prompt is wrapped in the model's chat template as one user message (with the
assistant turn opened) unless --no-chat is given, in which case it is tokenized
as is. Generation stops at the config's end-of-sequence ids, at the chat end
tokens, or after --tokens tokens.

Sampling defaults come from the model's generation_config.json when it sets
them, otherwise from Qwen's recommendations: temperature 0.7, top-p 0.8, top-k 20
(thinking: temperature 0.6, top-p 0.95), plus a repetition penalty of 1.1 over
the last 64 tokens. --temperature 0 is greedy decoding (the penalty still
applies unless --repeat-penalty 1).

--timing prints, on stderr, prefill and decode speed, a per-layer breakdown of
where the time went (attention/delta-net, routing, expert I/O, expert compute,
other), expert bytes read per token and the peak memory.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if prompt == "" {
				return errors.New("--prompt is required")
			}
			thinking, err := sf.enableThinking()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			stderr := cmd.ErrOrStderr()
			e, err := ef.open(ctx, stderr)
			if err != nil {
				return err
			}
			defer e.Close()
			tok, err := tokenizer.Load(ef.model)
			if err != nil {
				return err
			}
			text := prompt
			if !noChat {
				text, err = tok.FormatChat([]tokenizer.Message{{Role: "user", Content: prompt}},
					tokenizer.ChatOptions{AddGenerationPrompt: true, EnableThinking: thinking})
				if err != nil {
					return err
				}
			}
			ids := tok.Encode(text)
			if len(ids) == 0 {
				return errors.New("--prompt encodes to no tokens")
			}
			params, err := sf.params(ef.model, thinking && !noChat)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			stream := newThinkStream(tok, ids, sf.hideThinking, isTerminal(out))
			res, err := e.Generate(ctx, e.Model.NewState(), ids, engine.GenerateOptions{
				MaxTokens: maxToks,
				Sampler:   sample.New(params),
				Stop:      stopTokens(e, tok),
				Stream:    stream,
				OnText:    func(s string) { io.WriteString(out, s) },
				History:   ids,
			})
			io.WriteString(out, stream.close()+"\n")
			if res != nil && timing {
				e.WriteTiming(stderr, &res.Stats)
			}
			return err
		},
	}
	ef.register(cmd.Flags())
	sf.register(cmd.Flags())
	cmd.Flags().StringVar(&prompt, "prompt", "", "the prompt text")
	cmd.Flags().IntVar(&maxToks, "tokens", 256, "the most tokens to generate")
	cmd.Flags().BoolVar(&timing, "timing", false, "print speed, a per-layer time breakdown, I/O per token and peak memory on stderr")
	cmd.Flags().BoolVar(&noChat, "no-chat", false, "use the prompt as raw text, without the chat template")
	return cmd
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

// thinkStream decodes generated ids to text and presents the reasoning between
// <think> and </think>: dimmed on a terminal, hidden with --hide-thinking.
type thinkStream struct {
	dec          *tokenizer.StreamDecoder
	open, close_ int // ids of <think> / </think>, -1 when absent
	inside       bool
	hide, dim    bool
	dimmed       bool
}

func newThinkStream(tok *tokenizer.Tokenizer, prompt []int, hide, dim bool) *thinkStream {
	s := &thinkStream{dec: tok.NewStreamDecoder(), open: -1, close_: -1, hide: hide, dim: dim}
	if id, ok := tok.TokenID("<think>"); ok {
		s.open = id
	}
	if id, ok := tok.TokenID("</think>"); ok {
		s.close_ = id
	}
	// A generation prompt may already open the thinking block (Qwen3.5,
	// thinking models): then the model starts inside it.
	for _, id := range prompt {
		switch id {
		case s.open:
			s.inside = true
		case s.close_:
			s.inside = false
		}
	}
	return s
}

// Add implements engine.TextStream.
func (s *thinkStream) Add(id int) string {
	switch {
	case id == s.open && s.open >= 0:
		prev := s.dec.Flush()
		s.inside = true
		return prev + s.show(s.dec.Add(id))
	case id == s.close_ && s.close_ >= 0:
		t := s.show(s.dec.Add(id) + s.dec.Flush())
		s.inside = false
		if s.dimmed {
			s.dimmed = false
			t += dimOff
		}
		return t
	}
	return s.show(s.dec.Add(id))
}

// show applies the presentation of the current block to text.
func (s *thinkStream) show(text string) string {
	if !s.inside || text == "" {
		return text
	}
	if s.hide {
		return ""
	}
	if s.dim && !s.dimmed {
		s.dimmed = true
		return dimOn + text
	}
	return text
}

// Flush implements engine.TextStream.
func (s *thinkStream) Flush() string { return s.show(s.dec.Flush()) }

// close ends any open dimming.
func (s *thinkStream) close() string {
	if s.dimmed {
		s.dimmed = false
		return dimOff
	}
	return ""
}
