package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/fm-moe/fm/pkg/policy"
	"github.com/fm-moe/fm/pkg/sample"
	"github.com/fm-moe/fm/pkg/tokenizer"
)

// job is a validated request, ready to run.
type job struct {
	chat         bool
	ids          []int
	marks        []int // turn boundaries inside ids
	maxTokens    int
	params       sample.Params
	stream       bool
	includeUsage bool

	// Reply parsing.
	tools  bool
	specs  map[string]toolSpec
	stops  []string
	forced string // generation-prompt text the model continues (a forced tool call's opening)
}

// prepareChat validates a chat request and renders its prompt.
func (s *Server) prepareChat(req *chatRequest) (*job, *apiError) {
	if err := s.checkModel(req.Model); err != nil {
		return nil, err
	}
	if len(req.Messages) == 0 {
		return nil, badRequest("messages", "messages: at least one message is required")
	}
	j := &job{chat: true, stream: req.Stream}
	if req.StreamOptions != nil {
		if !req.Stream {
			return nil, badRequest("stream_options", "stream_options is only allowed with stream: true")
		}
		j.includeUsage = req.StreamOptions.IncludeUsage
	}

	msgs := make([]tokenizer.Message, len(req.Messages))
	for i, m := range req.Messages {
		role := m.Role
		if role == "developer" { // the newer name of the system role
			role = "system"
		}
		switch role {
		case "system", "user", "assistant", "tool":
		default:
			return nil, badRequest(fmt.Sprintf("messages[%d].role", i), "messages[%d]: role %q: want system, user, assistant or tool", i, m.Role)
		}
		if len(m.ToolCalls) > 0 && role != "assistant" {
			return nil, badRequest(fmt.Sprintf("messages[%d].tool_calls", i), "messages[%d]: only assistant messages carry tool_calls", i)
		}
		msgs[i] = tokenizer.Message{Role: role, Content: string(m.Content), ReasoningContent: m.ReasoningContent}
		for k, c := range m.ToolCalls {
			param := fmt.Sprintf("messages[%d].tool_calls[%d]", i, k)
			if c.Function.Name == "" {
				return nil, badRequest(param+".function.name", "%s: the function name is missing", param)
			}
			// The API sends arguments as a JSON-encoded string; the templates
			// render the object, so decode it first.
			var args json.RawMessage
			if a := strings.TrimSpace(c.Function.Arguments); a != "" {
				if !strings.HasPrefix(a, "{") || !json.Valid([]byte(a)) {
					return nil, badRequest(param+".function.arguments", "%s: arguments must be a JSON-encoded object, got %q", param, clip(a))
				}
				args = json.RawMessage(a)
			}
			msgs[i].ToolCalls = append(msgs[i].ToolCalls, tokenizer.ToolCall{Name: c.Function.Name, Arguments: args})
		}
	}

	var tools []json.RawMessage
	var decl []tool
	for i, raw := range req.Tools {
		var t tool
		if err := json.Unmarshal(raw, &t); err != nil || t.Type != "function" || t.Function.Name == "" {
			return nil, badRequest(fmt.Sprintf("tools[%d]", i), `tools[%d]: want {"type": "function", "function": {"name": …, "parameters": …}}`, i)
		}
		tools, decl = append(tools, raw), append(decl, t)
	}
	switch req.ToolChoice.Mode {
	case "none":
		tools, decl = nil, nil
	case "required", "function":
		if len(decl) == 0 {
			return nil, badRequest("tool_choice", "tool_choice %q needs tools", req.ToolChoice.Mode)
		}
		if req.ToolChoice.Mode == "function" && !slices.ContainsFunc(decl, func(t tool) bool { return t.Function.Name == req.ToolChoice.Name }) {
			return nil, badRequest("tool_choice", "tool_choice names function %q, which is not among the tools", req.ToolChoice.Name)
		}
	}
	if len(tools) > 0 && (s.format == tokenizer.ChatML) {
		return nil, badRequest("tools", "this model's chat template (%s) has no tool calling, so the model would never see the tools; serve it with a Qwen chat format that has (--chat-format qwen3 or qwen3.5)", s.format)
	}
	j.tools, j.specs = len(tools) > 0, toolSpecs(decl)

	thinking := true // the templates' default
	if req.ChatTemplateKwargs != nil && req.ChatTemplateKwargs.EnableThinking != nil {
		thinking = *req.ChatTemplateKwargs.EnableThinking
	}
	if req.EnableThinking != nil {
		thinking = *req.EnableThinking
	}
	if req.ToolChoice.Mode == "required" || req.ToolChoice.Mode == "function" {
		// The call is forced by writing its opening into the generation
		// prompt, which must then not open a reasoning block.
		if s.format == tokenizer.ChatQwen3Thinking {
			return nil, badRequest("tool_choice", "tool_choice %q cannot be forced on a thinking-only model (use auto)", req.ToolChoice.Mode)
		}
		thinking = false
		j.forced = forcedCall(s.format, req.ToolChoice.Name)
	}

	opts := tokenizer.ChatOptions{AddGenerationPrompt: true, EnableThinking: thinking, Tools: tools}
	text, err := tokenizer.FormatChat(s.format, msgs, opts)
	if err != nil {
		return nil, badRequest("messages", "messages: %v", err)
	}
	j.ids = s.o.Tokenizer.Encode(text + j.forced)
	// Keep a snapshot at the end of the conversation before the generation
	// prompt: the next turn re-renders this turn's answer after it (without
	// the reasoning), so that is where it diverges from this prompt.
	opts.AddGenerationPrompt = false
	if base, err := tokenizer.FormatChat(s.format, msgs, opts); err == nil {
		if b := s.o.Tokenizer.Encode(base); len(b) < len(j.ids) && slices.Equal(b, j.ids[:len(b)]) {
			j.marks = []int{len(b)}
		}
	}

	maxTokens := req.MaxCompletionTokens
	param := "max_completion_tokens"
	if maxTokens == nil {
		maxTokens, param = req.MaxTokens, "max_tokens"
	}
	if e := s.limits(j, maxTokens, param, -1); e != nil {
		return nil, e
	}
	if e := s.sampling(j, &req.samplingFields, thinking && s.thinks()); e != nil {
		return nil, e
	}
	return j, nil
}

// thinks reports whether the chat format has a reasoning block.
func (s *Server) thinks() bool {
	switch s.format {
	case tokenizer.ChatQwen3, tokenizer.ChatQwen3Thinking, tokenizer.ChatQwen35:
		return true
	}
	return false
}

// forcedCall is the opening of a tool call in the format's own syntax, with
// the function's name when one is required.
func forcedCall(f tokenizer.ChatFormat, name string) string {
	if f == tokenizer.ChatQwen35 {
		if name == "" {
			return toolCallOpen + "\n<function="
		}
		return toolCallOpen + "\n<function=" + name + ">\n"
	}
	if name == "" {
		return toolCallOpen + "\n{\"name\": \""
	}
	nb, _ := json.Marshal(name)
	return toolCallOpen + "\n{\"name\": " + string(nb) + ", \"arguments\": "
}

// prepareCompletion validates a /v1/completions request: the prompt is used
// as is, without the chat template.
func (s *Server) prepareCompletion(req *completionRequest) (*job, *apiError) {
	if err := s.checkModel(req.Model); err != nil {
		return nil, err
	}
	if req.Echo {
		return nil, badRequest("echo", "echo is not supported")
	}
	if req.Suffix != "" {
		return nil, badRequest("suffix", "suffix (fill in the middle) is not supported")
	}
	if req.Prompt == "" {
		return nil, badRequest("prompt", "prompt: must not be empty")
	}
	j := &job{stream: req.Stream}
	if req.StreamOptions != nil {
		j.includeUsage = req.StreamOptions.IncludeUsage
	}
	j.ids = s.o.Tokenizer.Encode(string(req.Prompt))
	if len(j.ids) == 0 {
		return nil, badRequest("prompt", "prompt encodes to no tokens")
	}
	// The API's default for this endpoint is 16 tokens.
	if e := s.limits(j, req.MaxTokens, "max_tokens", 16); e != nil {
		return nil, e
	}
	if e := s.sampling(j, &req.samplingFields, false); e != nil {
		return nil, e
	}
	return j, nil
}

// limits checks the prompt against the context and sets the completion
// budget: the requested maximum, else def, else what the context leaves.
func (s *Server) limits(j *job, max *int, param string, def int) *apiError {
	n, ctx := len(j.ids), s.o.CtxSize
	if n >= ctx {
		return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: ptr("messages"), Code: ptr("context_length_exceeded"),
			Message: fmt.Sprintf("the prompt is %d tokens; this server's context is %d tokens (--ctx-size), which leaves no room for a reply", n, ctx)}
	}
	switch {
	case max != nil:
		if *max < 1 {
			return badRequest(param, "%s must be at least 1, got %d", param, *max)
		}
		if n+*max > ctx {
			return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: &param, Code: ptr("context_length_exceeded"),
				Message: fmt.Sprintf("the prompt is %d tokens and %s is %d: %d in all, more than this server's context of %d tokens (--ctx-size); lower %s to at most %d",
					n, param, *max, n+*max, ctx, param, ctx-n)}
		}
		j.maxTokens = *max
	case def > 0:
		j.maxTokens = min(def, ctx-n)
	default:
		j.maxTokens = ctx - n
	}
	return nil
}

// sampling resolves the sampling settings: the server's defaults, then the
// request's fields.
func (s *Server) sampling(j *job, f *samplingFields, thinking bool) *apiError {
	if f.N != nil && *f.N != 1 {
		return badRequest("n", "n = %d: only one choice per request is supported", *f.N)
	}
	if f.Logprobs != nil && f.Logprobs != false {
		return badRequest("logprobs", "logprobs are not supported")
	}
	if f.ResponseFormat != nil && f.ResponseFormat.Type != "" && f.ResponseFormat.Type != "text" {
		return badRequest("response_format", "response_format %q is not supported (no constrained decoding); ask for JSON in the prompt", f.ResponseFormat.Type)
	}
	if len(f.Stop) > 4 {
		return badRequest("stop", "stop: at most 4 sequences, got %d", len(f.Stop))
	}
	for i, st := range f.Stop {
		if st == "" {
			return badRequest("stop", "stop[%d] is empty", i)
		}
	}
	j.stops = f.Stop
	// Request settings over the server's (its command-line flags), over
	// the model's generation_config.json, over Qwen's recommendations.
	set := s.o.Sampling
	for _, o := range []struct {
		req *float32
		dst **float32
	}{{f.Temperature, &set.Temperature}, {f.TopP, &set.TopP}, {f.MinP, &set.MinP}, {f.RepetitionPenalty, &set.RepetitionPenalty}} {
		if o.req != nil {
			*o.dst = o.req
		}
	}
	if f.TopK != nil {
		set.TopK = f.TopK
	}
	if f.Seed != nil {
		if *f.Seed < 0 {
			return badRequest("seed", "seed = %d: must not be negative", *f.Seed)
		}
		set.Seed = f.Seed
	}
	p, err := policy.Resolve(s.o.ModelDir, thinking, set)
	if err != nil {
		return badRequest("", "%v", err)
	}
	if set.Seed == nil {
		// Resolve seeds from the clock; concurrent requests must differ.
		p.Seed ^= s.seed.Add(0x9e3779b97f4a7c15)
	}
	j.params = p
	return nil
}
