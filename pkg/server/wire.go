package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// The wire types follow the OpenAI API as clients send it (ollama's
// openai/openai.go was the reference for which fields matter). Optional
// numbers are pointers so that an absent field takes the server's default
// and an explicit 0 is honoured.

// chatRequest is POST /v1/chat/completions.
type chatRequest struct {
	Model               string            `json:"model"`
	Messages            []chatMessage     `json:"messages"`
	Stream              bool              `json:"stream"`
	StreamOptions       *streamOptions    `json:"stream_options"`
	MaxTokens           *int              `json:"max_tokens"`
	MaxCompletionTokens *int              `json:"max_completion_tokens"`
	Tools               []json.RawMessage `json:"tools"`
	ToolChoice          toolChoice        `json:"tool_choice"`
	// ChatTemplateKwargs carries enable_thinking, as vLLM and llama.cpp
	// accept it; EnableThinking is the short form.
	ChatTemplateKwargs *struct {
		EnableThinking *bool `json:"enable_thinking"`
	} `json:"chat_template_kwargs"`
	EnableThinking *bool `json:"enable_thinking"`
	samplingFields
}

// samplingFields are shared by both completion endpoints.
type samplingFields struct {
	Temperature       *float32 `json:"temperature"`
	TopP              *float32 `json:"top_p"`
	TopK              *int     `json:"top_k"`
	MinP              *float32 `json:"min_p"`
	RepetitionPenalty *float32 `json:"repetition_penalty"`
	Seed              *int64   `json:"seed"`
	Stop              stopList `json:"stop"`
	N                 *int     `json:"n"`
	Logprobs          any      `json:"logprobs"`
	ResponseFormat    *struct {
		Type string `json:"type"`
	} `json:"response_format"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// completionRequest is POST /v1/completions.
type completionRequest struct {
	Model         string         `json:"model"`
	Prompt        promptText     `json:"prompt"`
	Stream        bool           `json:"stream"`
	StreamOptions *streamOptions `json:"stream_options"`
	MaxTokens     *int           `json:"max_tokens"`
	Echo          bool           `json:"echo"`
	Suffix        string         `json:"suffix"`
	samplingFields
}

// chatMessage is one message of a request. Content is a string, null, or an
// array of {"type": "text", "text": …} parts.
type chatMessage struct {
	Role             string         `json:"role"`
	Content          messageContent `json:"content"`
	ReasoningContent string         `json:"reasoning_content"`
	ToolCalls        []toolCall     `json:"tool_calls"`
	ToolCallID       string         `json:"tool_call_id"`
	Name             string         `json:"name"`
}

type messageContent string

func (c *messageContent) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case string(b) == "null":
		*c = ""
		return nil
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*c = messageContent(s)
		return nil
	case len(b) > 0 && b[0] == '[':
		var parts []struct {
			Type string  `json:"type"`
			Text *string `json:"text"`
		}
		if err := json.Unmarshal(b, &parts); err != nil {
			return err
		}
		var sb strings.Builder
		for i, p := range parts {
			if p.Type != "text" || p.Text == nil {
				return fmt.Errorf("content part %d: type %q is not supported (only text parts)", i, p.Type)
			}
			sb.WriteString(*p.Text)
		}
		*c = messageContent(sb.String())
		return nil
	}
	return errors.New("content: want a string, null or an array of text parts")
}

// stopList is a string or an array of strings.
type stopList []string

func (s *stopList) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		*s = nil
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var one string
		if err := json.Unmarshal(b, &one); err != nil {
			return err
		}
		*s = stopList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("stop: want a string or an array of strings")
	}
	*s = many
	return nil
}

// promptText is /v1/completions' prompt: a string or an array of exactly one
// string (batches of prompts are not supported).
type promptText string

func (p *promptText) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*p = promptText(one)
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("prompt: want a string (or an array holding one string)")
	}
	if len(many) != 1 {
		return fmt.Errorf("prompt: an array of %d prompts; this server takes one prompt per request", len(many))
	}
	*p = promptText(many[0])
	return nil
}

// tool is a function the model may call.
type tool struct {
	Type     string `json:"type"`
	Function struct {
		Name        string          `json:"name"`
		Description string          `json:"description,omitempty"`
		Parameters  json.RawMessage `json:"parameters,omitempty"`
	} `json:"function"`
}

// toolChoice is "none", "auto", "required", or {"type": "function",
// "function": {"name": …}} (kept as the name).
type toolChoice struct {
	Mode string // none, auto, required, function
	Name string
}

func (t *toolChoice) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		switch s {
		case "none", "auto", "required":
			t.Mode = s
			return nil
		}
		return fmt.Errorf("tool_choice %q: want none, auto, required or a function object", s)
	}
	var obj struct {
		Type     string `json:"type"`
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	if err := json.Unmarshal(b, &obj); err != nil || obj.Type != "function" || obj.Function.Name == "" {
		return errors.New(`tool_choice: want none, auto, required or {"type": "function", "function": {"name": …}}`)
	}
	t.Mode, t.Name = "function", obj.Function.Name
	return nil
}

// toolCall is a call in an assistant message (request or response).
type toolCall struct {
	Index    *int   `json:"index,omitempty"`
	ID       string `json:"id,omitempty"`
	Type     string `json:"type,omitempty"`
	Function struct {
		Name string `json:"name,omitempty"`
		// Arguments is a JSON-encoded object, as the API has it.
		Arguments string `json:"arguments"`
	} `json:"function"`
}

// usage counts a request's tokens.
type usage struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	TotalTokens         int `json:"total_tokens"`
	PromptTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
}

// responseMessage is the assistant's reply.
type responseMessage struct {
	Role             string     `json:"role"`
	Content          *string    `json:"content"`
	ReasoningContent string     `json:"reasoning_content,omitempty"`
	ToolCalls        []toolCall `json:"tool_calls,omitempty"`
	// ToolCallErrors describes generated <tool_call> blocks that could not
	// be parsed (an fm extension); their raw text stays in Content.
	ToolCallErrors []string `json:"tool_call_errors,omitempty"`
}

type chatChoice struct {
	Index        int             `json:"index"`
	Message      responseMessage `json:"message"`
	FinishReason string          `json:"finish_reason"`
}

type chatCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   usage        `json:"usage"`
}

// delta is a streamed piece of the reply.
type delta struct {
	Role             string     `json:"role,omitempty"`
	Content          *string    `json:"content,omitempty"`
	ReasoningContent *string    `json:"reasoning_content,omitempty"`
	ToolCalls        []toolCall `json:"tool_calls,omitempty"`
	ToolCallErrors   []string   `json:"tool_call_errors,omitempty"`
}

type chunkChoice struct {
	Index        int     `json:"index"`
	Delta        delta   `json:"delta"`
	FinishReason *string `json:"finish_reason"`
}

type chatChunk struct {
	ID      string        `json:"id"`
	Object  string        `json:"object"`
	Created int64         `json:"created"`
	Model   string        `json:"model"`
	Choices []chunkChoice `json:"choices"`
	Usage   *usage        `json:"usage,omitempty"`
}

type completionChoice struct {
	Index        int     `json:"index"`
	Text         string  `json:"text"`
	Logprobs     any     `json:"logprobs"`
	FinishReason *string `json:"finish_reason"`
}

type completion struct {
	ID      string             `json:"id"`
	Object  string             `json:"object"`
	Created int64              `json:"created"`
	Model   string             `json:"model"`
	Choices []completionChoice `json:"choices"`
	Usage   *usage             `json:"usage,omitempty"`
}

type modelInfo struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

type modelList struct {
	Object string      `json:"object"`
	Data   []modelInfo `json:"data"`
}

// apiError is the OpenAI error shape: {"error": {...}}.
type apiError struct {
	Status  int     `json:"-"`
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func (e *apiError) Error() string { return e.Message }

type errorBody struct {
	Error *apiError `json:"error"`
}
