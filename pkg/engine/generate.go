package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/fm-moe/fm/pkg/backend"
	"github.com/fm-moe/fm/pkg/experts"
	"github.com/fm-moe/fm/pkg/model"
)

// Sampler picks the next token from logits (pkg/sample's Sampler).
type Sampler interface {
	Sample(logits []float32, history []int) int
}

// TextStream turns token ids into text as they arrive, holding back bytes of
// an incomplete UTF-8 sequence (pkg/tokenizer's StreamDecoder).
type TextStream interface {
	Add(id int) string
	Flush() string
}

// GenerateOptions control one generation.
type GenerateOptions struct {
	// MaxTokens is the most tokens to generate; a negative value means until
	// a stop token or the end of the context (llama.cpp's -n -1). 0 is an
	// error: a request for nothing is a mistake, not an empty reply.
	MaxTokens int
	// Sampler picks tokens.
	Sampler Sampler
	// Stop lists token ids that end generation (config eos ids, chat end
	// tokens). A stop token is returned in Result.Tokens but not fed to the model.
	Stop []int
	// Stream and OnText, when both set, receive the generated text as it is
	// produced.
	Stream TextStream
	OnText func(text string)
	// History is the context the repetition penalty looks back on before the
	// generated tokens (usually the prompt).
	History []int

	// afterPrefill, when set, sees the state right after the prompt.
	afterPrefill func(*model.State)
	// marks are prompt offsets (0 < m < len(prompt), increasing) after which
	// the prefill pauses and onMark sees the state: snapshots at turn
	// boundaries inside the prompt.
	marks  []int
	onMark func(*model.State)
	// finishStep lets a decode step that a cancellation interrupts run to
	// its end, so the state stays usable (Session continues from it);
	// otherwise the step stops at the next layer and the state is left
	// half done, which Forward refuses until Reset.
	finishStep bool
}

// Stop reasons.
const (
	StopToken   = "stop token"
	StopLength  = "length"
	StopContext = "context full"
)

// Result is the outcome of Generate.
type Result struct {
	// Tokens are the generated ids, including a final stop token.
	Tokens []int
	// StopReason is StopToken, StopLength or StopContext.
	StopReason string
	// CachedTokens counts the prompt tokens a PrefixCache did not need to
	// process again.
	CachedTokens int
	Stats        Stats
}

// Generate feeds prompt into st (which may already hold earlier turns) and
// samples up to MaxTokens tokens. Cancelling ctx stops it between tokens with
// ctx's error; the tokens produced so far are still returned. A prompt that
// does not fit the context is a *ContextError before any work; logits with a
// NaN or an infinity stop generation with a *NonFiniteError.
func (e *Engine) Generate(ctx context.Context, st *model.State, prompt []int, opts GenerateOptions) (*Result, error) {
	if opts.Sampler == nil {
		return nil, errors.New("generate: no sampler")
	}
	if len(prompt) == 0 {
		return nil, errors.New("generate: empty prompt")
	}
	if opts.MaxTokens == 0 {
		return nil, errors.New("generate: MaxTokens 0 asks for no tokens")
	}
	if e.ctx > 0 && st.Len()+len(prompt) > e.ctx {
		return nil, &ContextError{Used: st.Len(), Prompt: len(prompt), Size: e.ctx}
	}
	limit := opts.MaxTokens
	if limit < 0 {
		limit = math.MaxInt
	} else if need := st.Len() + len(prompt) + limit; e.ctx <= 0 || need <= e.ctx {
		// The whole request's KV room now, not in doublings during the
		// decode (backend.Reserver). Requests that may run to the end of
		// the context (-n -1, or more tokens than it has left) grow as
		// they go: reserving the whole context could take gigabytes a
		// short answer never uses.
		if err := st.Reserve(need); err != nil {
			return nil, err
		}
	}
	res := &Result{}
	s := &res.Stats
	s.PromptTokens = len(prompt)
	history := slices.Clone(opts.History)
	emit := func(id int) {
		if opts.Stream != nil && opts.OnText != nil {
			if t := opts.Stream.Add(id); t != "" {
				opts.OnText(t)
			}
		}
	}
	defer func() {
		if opts.Stream != nil && opts.OnText != nil {
			if t := opts.Stream.Flush(); t != "" {
				opts.OnText(t)
			}
		}
		s.PeakRSS = PeakRSS()
		s.StateBytes = st.Bytes()
	}()

	st.Profile = &s.PrefillProfile
	defer func() { st.Profile = nil }()
	io0 := e.storeStats()
	t0 := time.Now()
	logits, err := e.prefill(ctx, st, prompt, opts.marks, opts.onMark)
	s.Prefill = time.Since(t0)
	s.PrefillIO = e.storeStats().Sub(io0)
	if err != nil {
		return res, err
	}
	if opts.afterPrefill != nil {
		opts.afterPrefill(st)
	}

	st.Profile = &s.DecodeProfile
	io1, dc1 := e.storeStats(), e.deviceCacheStats()
	t1 := time.Now()
	defer func() {
		s.Decode = time.Since(t1)
		s.DecodeIO = e.storeStats().Sub(io1)
		s.DecodeDeviceCache = e.deviceCacheStats().Sub(dc1)
	}()
	for len(res.Tokens) < limit {
		id := opts.Sampler.Sample(logits, history)
		res.Tokens = append(res.Tokens, id)
		history = append(history, id)
		if slices.Contains(opts.Stop, id) {
			res.StopReason = StopToken
			return res, nil
		}
		emit(id)
		if len(res.Tokens) == limit {
			break
		}
		if e.ctx > 0 && st.Len() >= e.ctx {
			res.StopReason = StopContext
			return res, nil
		}
		if err := ctx.Err(); err != nil {
			return res, err
		}
		stepCtx := ctx
		if opts.finishStep {
			stepCtx = context.WithoutCancel(ctx)
		}
		// The sampler is done with logits: the step writes the next ones
		// into the same slice (no allocation per token).
		if err := e.Model.Decode(stepCtx, st, id, logits); err != nil {
			return res, err
		}
		s.DecodedTokens++
	}
	res.StopReason = StopLength
	return res, nil
}

// prefill feeds prompt into st, pausing after each mark to show the state to
// onMark, and returns the logits after the last token.
func (e *Engine) prefill(ctx context.Context, st *model.State, prompt []int, marks []int, onMark func(*model.State)) ([]float32, error) {
	done := 0
	for _, m := range marks {
		if m <= done || m >= len(prompt) {
			continue
		}
		if _, err := e.Model.Forward(ctx, st, prompt[done:m], false); err != nil {
			return nil, err
		}
		done = m
		onMark(st)
	}
	return e.Model.Forward(ctx, st, prompt[done:], false)
}

func (e *Engine) storeStats() experts.Stats {
	if e.Store == nil {
		return experts.Stats{}
	}
	return e.Store.Stats()
}

// deviceCacheStats are the device's expert-cache counters (zero when the
// device keeps no experts).
func (e *Engine) deviceCacheStats() backend.ExpertCacheStats {
	if c, ok := e.Device.(backend.ExpertCache); ok {
		return c.ExpertCacheStats()
	}
	return backend.ExpertCacheStats{}
}

// Stats measure one generation.
type Stats struct {
	PromptTokens int
	// DecodedTokens counts single-token forward passes (generated tokens fed
	// back); the first generated token comes from the prefill.
	DecodedTokens   int
	Prefill, Decode time.Duration
	PrefillProfile  model.Profile
	DecodeProfile   model.Profile
	PrefillIO       experts.Stats
	DecodeIO        experts.Stats
	// DecodeDeviceCache is the device expert cache's traffic during the
	// decode (a GPU's VRAM cache: hits, and the bytes uploaded over PCIe).
	DecodeDeviceCache backend.ExpertCacheStats
	PeakRSS           int64 // bytes
	StateBytes        int64 // KV cache + recurrent state
}

// PrefillTokensPerSecond is the prompt processing rate.
func (s *Stats) PrefillTokensPerSecond() float64 {
	return rate(s.PromptTokens, s.Prefill)
}

// DecodeTokensPerSecond is the single-token generation rate.
func (s *Stats) DecodeTokensPerSecond() float64 {
	return rate(s.DecodedTokens, s.Decode)
}

// DecodeBytesPerToken is the expert bytes read from files per decoded token.
func (s *Stats) DecodeBytesPerToken() float64 {
	if s.DecodedTokens == 0 {
		return 0
	}
	return float64(s.DecodeIO.Bytes) / float64(s.DecodedTokens)
}

func rate(n int, d time.Duration) float64 {
	if n == 0 || d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// String is a one-line summary.
func (s *Stats) String() string {
	return fmt.Sprintf("prefill %d tokens in %v (%.1f tok/s), decode %d tokens (%.2f tok/s), %.2f MB expert reads/token, peak RSS %s",
		s.PromptTokens, s.Prefill.Round(time.Millisecond), s.PrefillTokensPerSecond(), s.DecodedTokens,
		s.DecodeTokensPerSecond(), s.DecodeBytesPerToken()/1e6, FormatBytes(s.PeakRSS))
}
