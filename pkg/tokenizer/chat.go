package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// ChatFormat names one of the Qwen ChatML renderings this package implements.
// fm does not run Jinja: it recognises which official template a model ships
// (see DetectChatFormat) and renders the same text in Go.
type ChatFormat string

const (
	// ChatML is plain ChatML: every message as
	// "<|im_start|>{role}\n{content}<|im_end|>\n", generation prompt
	// "<|im_start|>assistant\n"; reasoning, tools and thinking options are
	// ignored, as such a template ignores them. It is used when a model ships
	// no template (the tiny test models ship exactly this one).
	ChatML ChatFormat = "chatml"
	// ChatQwen3 is the Qwen3 hybrid-thinking template (Qwen3-30B-A3B,
	// Qwen3-235B-A22B): JSON tool calls, reasoning kept after the last user
	// query, and with EnableThinking false the generation prompt is followed
	// by an empty "<think>\n\n</think>\n\n" block.
	ChatQwen3 ChatFormat = "qwen3"
	// ChatQwen3Instruct is the non-thinking template of Qwen3-2507 Instruct
	// and Qwen3-Next Instruct: like ChatQwen3 without any think handling.
	ChatQwen3Instruct ChatFormat = "qwen3-instruct"
	// ChatQwen3Thinking is the thinking-only template of Qwen3-2507 Thinking
	// and Qwen3-Next Thinking: like ChatQwen3, and the generation prompt
	// always opens "<think>\n".
	ChatQwen3Thinking ChatFormat = "qwen3-thinking"
	// ChatQwen35 is the Qwen3.5 template: contents trimmed, XML tool calls
	// (<function=…><parameter=…>), a think block on every assistant turn
	// after the last user query, and generation prompt
	// "<|im_start|>assistant\n<think>\n" (or "<think>\n\n</think>\n\n" with
	// EnableThinking false).
	ChatQwen35 ChatFormat = "qwen3.5"
)

// chatConfig is what a model directory says about chat formatting.
type chatConfig struct {
	template string // Jinja source; "" when the model ships none
	source   string // file it came from, for error messages
	eosToken string // tokenizer_config.json eos_token
}

// Message is one chat turn.
type Message struct {
	Role    string // "system", "user", "assistant" or "tool"
	Content string
	// ReasoningContent is an assistant turn's thinking. When empty, a
	// "<think>…</think>" prefix of Content is used instead, as the templates
	// do when reasoning_content is absent (fm cannot tell an absent
	// reasoning_content from an empty one).
	ReasoningContent string
	ToolCalls        []ToolCall // calls an assistant turn made
}

// ToolCall is a function call made by the assistant.
type ToolCall struct {
	Name string
	// Arguments is a JSON object (its key order is kept). Qwen3 templates
	// also accept a JSON string, printed verbatim; for Qwen3.5 a string must
	// hold a JSON object. Nil means no arguments.
	Arguments json.RawMessage
}

// ChatOptions control FormatChat.
type ChatOptions struct {
	// AddGenerationPrompt appends the opening of an assistant turn.
	AddGenerationPrompt bool
	// EnableThinking mirrors the templates' enable_thinking. Note the zero
	// value: false selects the no-thinking prefill for formats that have one
	// (Qwen3 hybrid, Qwen3.5); set true for the templates' default.
	EnableThinking bool
	// Tools are function descriptions, each a JSON object as in the OpenAI
	// API ({"type": "function", "function": {...}}), printed the way the
	// templates' tojson filter prints them (Python json.dumps).
	Tools []json.RawMessage
	// Format overrides the detected format when non-empty.
	Format ChatFormat
}

// DetectChatFormat recognises a Qwen chat template from its Jinja source by
// features that distinguish the official templates:
//
//   - no template: ChatML;
//   - XML tool calls ("<function=") and enable_thinking: ChatQwen35;
//   - reasoning_content and enable_thinking: ChatQwen3 (hybrid);
//   - reasoning_content and a generation prompt that opens "<think>\n":
//     ChatQwen3Thinking;
//   - "<tool_call>" without any think handling: ChatQwen3Instruct;
//   - a template that only wraps messages in <|im_start|>/<|im_end|>
//     (no system-prompt default, no tools, no thinking): ChatML.
//
// Anything else (Qwen2.5's default system prompt, Qwen3-Coder's XML tools
// without thinking, foreign templates) is an error: rendering it as some
// other variant would silently change the prompt. ChatOptions.Format forces
// a format instead.
func DetectChatFormat(template string) (ChatFormat, error) {
	has := func(s string) bool { return strings.Contains(template, s) }
	switch {
	case strings.TrimSpace(template) == "":
		return ChatML, nil
	case has("<function=") && has("enable_thinking"):
		return ChatQwen35, nil
	case has("<function="):
		return "", errors.New("chat template uses XML tool calls without thinking (Qwen3-Coder style), which fm does not implement")
	case has("reasoning_content") && has("enable_thinking"):
		return ChatQwen3, nil
	case has("reasoning_content") && has(`assistant\n<think>\n`):
		return ChatQwen3Thinking, nil
	case has("<tool_call>") && !has("think"):
		return ChatQwen3Instruct, nil
	case has("<|im_start|>") && has("<|im_end|>") && !has("tool") && !has("think") &&
		!has("You are") && !has("system_message"):
		return ChatML, nil
	}
	return "", errors.New("unrecognised chat template (not one of the Qwen ChatML variants fm implements)")
}

// ChatFormat returns the format detected from the model's chat template.
func (t *Tokenizer) ChatFormat() (ChatFormat, error) {
	f, err := DetectChatFormat(t.chat.template)
	if err != nil && t.chat.source != "" {
		err = fmt.Errorf("%s: %w", t.chat.source, err)
	}
	return f, err
}

// ChatTemplate returns the model's Jinja chat template ("" if none) and the
// file it was read from.
func (t *Tokenizer) ChatTemplate() (template, source string) { return t.chat.template, t.chat.source }

// StopTokens returns the ids that end an assistant turn: <|im_end|> and
// <|endoftext|> (and tokenizer_config.json's eos_token, when it differs),
// those present in the vocabulary.
func (t *Tokenizer) StopTokens() []int {
	var out []int
	for _, s := range []string{"<|im_end|>", "<|endoftext|>", t.chat.eosToken} {
		if s == "" {
			continue
		}
		if id, ok := t.TokenID(s); ok && !containsInt(out, id) {
			out = append(out, id)
		}
	}
	return out
}

func containsInt(list []int, v int) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// FormatChat renders messages as the model's chat template would (HF
// apply_chat_template with tokenize=False); Encode the result to get the
// prompt ids.
func (t *Tokenizer) FormatChat(msgs []Message, opts ChatOptions) (string, error) {
	format := opts.Format
	if format == "" {
		var err error
		if format, err = t.ChatFormat(); err != nil {
			return "", err
		}
	}
	return FormatChat(format, msgs, opts)
}

// FormatChat renders messages in the given format.
func FormatChat(format ChatFormat, msgs []Message, opts ChatOptions) (string, error) {
	switch format {
	case ChatML:
		return renderChatML(msgs, opts), nil
	case ChatQwen3, ChatQwen3Instruct, ChatQwen3Thinking:
		return renderQwen3(format, msgs, opts)
	case ChatQwen35:
		return renderQwen35(msgs, opts)
	}
	return "", fmt.Errorf("unknown chat format %q (want %s, %s, %s, %s or %s)", format,
		ChatML, ChatQwen3, ChatQwen3Instruct, ChatQwen3Thinking, ChatQwen35)
}

func renderChatML(msgs []Message, opts ChatOptions) string {
	var b strings.Builder
	for _, m := range msgs {
		b.WriteString("<|im_start|>" + m.Role + "\n" + m.Content + "<|im_end|>\n")
	}
	if opts.AddGenerationPrompt {
		b.WriteString("<|im_start|>assistant\n")
	}
	return b.String()
}

const qwen3ToolsHeader = "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n" +
	"You are provided with function signatures within <tools></tools> XML tags:\n<tools>"

const qwen3ToolsFooter = "\n</tools>\n\nFor each function call, return a json object with function name and " +
	"arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n" +
	"{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n"

// splitThink separates "<think>reasoning</think>answer" the way the templates
// do: reasoning = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n'),
// answer = content.split('</think>')[-1].lstrip('\n').
func splitThink(content string) (reasoning, answer string) {
	before, _, _ := strings.Cut(content, "</think>")
	before = strings.TrimRight(before, "\n")
	if i := strings.LastIndex(before, "<think>"); i >= 0 {
		before = before[i+len("<think>"):]
	}
	reasoning = strings.TrimLeft(before, "\n")
	answer = content[strings.LastIndex(content, "</think>")+len("</think>"):]
	return reasoning, strings.TrimLeft(answer, "\n")
}

// isToolResponse reports whether a user message only carries tool output,
// which does not count as the user's query.
func isToolResponse(s string) bool {
	return strings.HasPrefix(s, "<tool_response>") && strings.HasSuffix(s, "</tool_response>")
}

func renderQwen3(format ChatFormat, msgs []Message, opts ChatOptions) (string, error) {
	var b strings.Builder
	if len(opts.Tools) > 0 {
		b.WriteString("<|im_start|>system\n")
		if len(msgs) > 0 && msgs[0].Role == "system" {
			b.WriteString(msgs[0].Content + "\n\n")
		}
		b.WriteString(qwen3ToolsHeader)
		for i, tool := range opts.Tools {
			js, err := pyJSON(tool)
			if err != nil {
				return "", fmt.Errorf("tools[%d]: %w", i, err)
			}
			b.WriteString("\n" + js)
		}
		b.WriteString(qwen3ToolsFooter)
	} else if len(msgs) > 0 && msgs[0].Role == "system" {
		b.WriteString("<|im_start|>system\n" + msgs[0].Content + "<|im_end|>\n")
	}

	lastQuery := len(msgs) - 1
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Role == "user" && !isToolResponse(msgs[i].Content) {
			lastQuery = i
			break
		}
	}

	for i, m := range msgs {
		content := m.Content
		switch {
		case m.Role == "user" || (m.Role == "system" && i > 0):
			b.WriteString("<|im_start|>" + m.Role + "\n" + content + "<|im_end|>\n")
		case m.Role == "assistant":
			if format == ChatQwen3Instruct {
				b.WriteString("<|im_start|>" + m.Role + "\n" + content)
			} else {
				reasoning := m.ReasoningContent
				if reasoning == "" && strings.Contains(content, "</think>") {
					reasoning, content = splitThink(content)
				}
				if i > lastQuery && (i == len(msgs)-1 || reasoning != "") {
					b.WriteString("<|im_start|>" + m.Role + "\n<think>\n" + strings.Trim(reasoning, "\n") +
						"\n</think>\n\n" + strings.TrimLeft(content, "\n"))
				} else {
					b.WriteString("<|im_start|>" + m.Role + "\n" + content)
				}
			}
			for j, call := range m.ToolCalls {
				if j > 0 || content != "" {
					b.WriteString("\n")
				}
				args, err := qwen3Arguments(call.Arguments)
				if err != nil {
					return "", fmt.Errorf("message %d: tool call %q: %w", i, call.Name, err)
				}
				b.WriteString("<tool_call>\n{\"name\": \"" + call.Name + "\", \"arguments\": " + args + "}\n</tool_call>")
			}
			b.WriteString("<|im_end|>\n")
		case m.Role == "tool":
			if i == 0 || msgs[i-1].Role != "tool" {
				b.WriteString("<|im_start|>user")
			}
			b.WriteString("\n<tool_response>\n" + content + "\n</tool_response>")
			if i == len(msgs)-1 || msgs[i+1].Role != "tool" {
				b.WriteString("<|im_end|>\n")
			}
		}
		// Other roles, and a leading system message, print nothing here,
		// exactly as in the template.
	}

	if opts.AddGenerationPrompt {
		b.WriteString("<|im_start|>assistant\n")
		switch {
		case format == ChatQwen3 && !opts.EnableThinking:
			b.WriteString("<think>\n\n</think>\n\n")
		case format == ChatQwen3Thinking:
			b.WriteString("<think>\n")
		}
	}
	return b.String(), nil
}

// qwen3Arguments prints tool-call arguments as the Qwen3 templates do: a
// string verbatim, anything else through tojson.
func qwen3Arguments(raw json.RawMessage) (string, error) {
	if len(strings.TrimSpace(string(raw))) == 0 {
		return "{}", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, nil
	}
	return pyJSON(raw)
}

const qwen35ToolsHeader = "# Tools\n\nYou have access to the following functions:\n\n<tools>"

const qwen35ToolsFooter = "\n</tools>" +
	"\n\nIf you choose to call a function ONLY reply in the following format with NO suffix:\n\n" +
	"<tool_call>\n<function=example_function_name>\n<parameter=example_parameter_1>\nvalue_1\n</parameter>\n" +
	"<parameter=example_parameter_2>\nThis is the value for the second parameter\nthat can span\nmultiple lines\n" +
	"</parameter>\n</function>\n</tool_call>\n\n<IMPORTANT>\nReminder:\n" +
	"- Function calls MUST follow the specified format: an inner <function=...></function> block must be nested within <tool_call></tool_call> XML tags\n" +
	"- Required parameters MUST be specified\n" +
	"- You may provide optional reasoning for your function call in natural language BEFORE the function call, but NOT after\n" +
	"- If there is no function call available, answer the question like normal with your current knowledge and do not tell the user about function calls\n" +
	"</IMPORTANT>"

func renderQwen35(msgs []Message, opts ChatOptions) (string, error) {
	if len(msgs) == 0 {
		return "", errors.New("no messages provided")
	}
	var b strings.Builder
	if len(opts.Tools) > 0 {
		b.WriteString("<|im_start|>system\n" + qwen35ToolsHeader)
		for i, tool := range opts.Tools {
			js, err := pyJSON(tool)
			if err != nil {
				return "", fmt.Errorf("tools[%d]: %w", i, err)
			}
			b.WriteString("\n" + js)
		}
		b.WriteString(qwen35ToolsFooter)
		if msgs[0].Role == "system" {
			if c := pyStrip(msgs[0].Content); c != "" {
				b.WriteString("\n\n" + c)
			}
		}
		b.WriteString("<|im_end|>\n")
	} else if msgs[0].Role == "system" {
		b.WriteString("<|im_start|>system\n" + pyStrip(msgs[0].Content) + "<|im_end|>\n")
	}

	lastQuery := -1
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Role == "user" && !isToolResponse(pyStrip(msgs[i].Content)) {
			lastQuery = i
			break
		}
	}
	if lastQuery < 0 {
		return "", errors.New("no user query found in messages")
	}

	for i, m := range msgs {
		content := pyStrip(m.Content)
		switch m.Role {
		case "system":
			if i != 0 {
				return "", fmt.Errorf("message %d: system message must be at the beginning", i)
			}
		case "user":
			b.WriteString("<|im_start|>user\n" + content + "<|im_end|>\n")
		case "assistant":
			reasoning := m.ReasoningContent
			if reasoning == "" && strings.Contains(content, "</think>") {
				reasoning, content = splitThink(content)
			}
			reasoning = pyStrip(reasoning)
			if i > lastQuery {
				b.WriteString("<|im_start|>assistant\n<think>\n" + reasoning + "\n</think>\n\n" + content)
			} else {
				b.WriteString("<|im_start|>assistant\n" + content)
			}
			for j, call := range m.ToolCalls {
				switch {
				case j > 0:
					b.WriteString("\n<tool_call>\n<function=" + call.Name + ">\n")
				case pyStrip(content) != "":
					b.WriteString("\n\n<tool_call>\n<function=" + call.Name + ">\n")
				default:
					b.WriteString("<tool_call>\n<function=" + call.Name + ">\n")
				}
				params, err := qwen35Parameters(call.Arguments)
				if err != nil {
					return "", fmt.Errorf("message %d: tool call %q: %w", i, call.Name, err)
				}
				b.WriteString(params + "</function>\n</tool_call>")
			}
			b.WriteString("<|im_end|>\n")
		case "tool":
			if i > 0 && msgs[i-1].Role != "tool" {
				b.WriteString("<|im_start|>user")
			}
			b.WriteString("\n<tool_response>\n" + content + "\n</tool_response>")
			if i == len(msgs)-1 || msgs[i+1].Role != "tool" {
				b.WriteString("<|im_end|>\n")
			}
		default:
			return "", fmt.Errorf("message %d: unexpected message role %q", i, m.Role)
		}
	}

	if opts.AddGenerationPrompt {
		b.WriteString("<|im_start|>assistant\n")
		if opts.EnableThinking {
			b.WriteString("<think>\n")
		} else {
			b.WriteString("<think>\n\n</think>\n\n")
		}
	}
	return b.String(), nil
}

// qwen35Parameters prints arguments as Qwen3.5's
// "<parameter=name>\nvalue\n</parameter>\n" list: objects and arrays through
// tojson, scalars through Python's str() (so true prints True).
func qwen35Parameters(raw json.RawMessage) (string, error) {
	if len(strings.TrimSpace(string(raw))) == 0 {
		return "", nil
	}
	v, err := parsePy(raw)
	if err != nil {
		return "", err
	}
	if v.kind == pyString {
		// An OpenAI-style JSON-encoded arguments string: the template
		// iterates the mapping, so decode it.
		if v, err = parsePy([]byte(v.str)); err != nil {
			return "", fmt.Errorf("arguments string: %w", err)
		}
	}
	if v.kind != pyObject {
		return "", errors.New("arguments: want a JSON object")
	}
	var b strings.Builder
	for _, kv := range v.obj {
		b.WriteString("<parameter=" + kv.key + ">\n")
		if kv.val.kind == pyObject || kv.val.kind == pyArray {
			b.WriteString(string(kv.val.appendJSON(nil)))
		} else {
			b.WriteString(kv.val.pyStr())
		}
		b.WriteString("\n</parameter>\n")
	}
	return b.String(), nil
}

// pyStrip is Python's str.strip() (Jinja's trim filter): it removes the
// characters str.isspace() accepts, which include U+001C–U+001F unlike Go's
// unicode.IsSpace.
func pyStrip(s string) string {
	return strings.TrimFunc(s, func(r rune) bool {
		switch r {
		case '\t', '\n', '\v', '\f', '\r', 0x1C, 0x1D, 0x1E, 0x1F, ' ', 0x85, 0xA0, 0x1680,
			0x2028, 0x2029, 0x202F, 0x205F, 0x3000:
			return true
		}
		return r >= 0x2000 && r <= 0x200A
	})
}
