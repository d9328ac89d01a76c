package server

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/fm-moe/fm/pkg/engine"
	"github.com/fm-moe/fm/pkg/tokenizer"
)

// The official OpenAI Go client against the server on loopback.

func newClient(url string) openai.Client {
	return openai.NewClient(option.WithBaseURL(url+"/v1/"), option.WithAPIKey("unused"), option.WithMaxRetries(0))
}

// TestOpenAIClient: /v1/models, a whole and a streamed chat completion on
// the real model. Both give what the engine gives for the same prompt and
// settings (what fm-infer run prints), with the usage counts.
func TestOpenAIClient(t *testing.T) {
	ts, _ := newServer(t, nil)
	client := newClient(ts.URL)
	ctx := context.Background()

	page, err := client.Models.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Data) != 1 || page.Data[0].ID != modelName {
		t.Fatalf("models %+v, want just %q", page.Data, modelName)
	}

	msgs := []tokenizer.Message{{Role: "system", Content: "You write Python."}, {Role: "user", Content: "def fibonacci(n):"}}
	want, promptTokens := engineReply(t, msgs, 24)
	params := openai.ChatCompletionNewParams{
		Model:     modelName,
		Messages:  []openai.ChatCompletionMessageParamUnion{openai.SystemMessage(msgs[0].Content), openai.UserMessage(msgs[1].Content)},
		MaxTokens: openai.Int(24),
	}
	resp, err := client.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Choices) != 1 {
		t.Fatalf("%d choices", len(resp.Choices))
	}
	got := resp.Choices[0].Message.Content
	if got != want {
		t.Errorf("server replied %q, the engine alone %q", got, want)
	}
	u := resp.Usage
	if u.PromptTokens != int64(promptTokens) || u.CompletionTokens < 1 || u.CompletionTokens > 24 || u.TotalTokens != u.PromptTokens+u.CompletionTokens {
		t.Errorf("usage %+v (prompt %d)", u, promptTokens)
	}
	if r := resp.Choices[0].FinishReason; r != "stop" && r != "length" {
		t.Errorf("finish reason %q", r)
	}

	// The same request streamed, with usage: the same text, in pieces.
	params.StreamOptions.IncludeUsage = openai.Bool(true)
	stream := client.Chat.Completions.NewStreaming(ctx, params)
	var acc openai.ChatCompletionAccumulator
	chunks := 0
	for stream.Next() {
		acc.AddChunk(stream.Current())
		chunks++
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if s := acc.Choices[0].Message.Content; s != want {
		t.Errorf("streamed %q, want %q", s, want)
	}
	if chunks < 4 {
		t.Errorf("only %d chunks: not streamed", chunks)
	}
	if acc.Usage.PromptTokens != int64(promptTokens) || acc.Usage.CompletionTokens != u.CompletionTokens {
		t.Errorf("streamed usage %+v, want %+v", acc.Usage, u)
	}
	// The second request extended nothing new but reused the conversation
	// up to the generation prompt.
	if c := acc.Usage.PromptTokensDetails.CachedTokens; c <= 0 || c >= int64(promptTokens) {
		t.Errorf("cached tokens %d of %d", c, promptTokens)
	}
}

// stubGen is a test-only model for the parsing layer: it answers each
// prompt with scripted text, as tokens through the generation's stream, and
// records the prompts it saw.
type stubGen struct {
	tok     *tokenizer.Tokenizer
	reply   func(prompt string) string
	stop    int
	mu      sync.Mutex
	prompts []string
}

func (g *stubGen) Generate(ctx context.Context, ids, marks []int, opts engine.GenerateOptions) (*engine.Result, error) {
	prompt := g.tok.Decode(ids)
	g.mu.Lock()
	g.prompts = append(g.prompts, prompt)
	g.mu.Unlock()
	res := &engine.Result{StopReason: engine.StopToken}
	for _, id := range g.tok.Encode(g.reply(prompt)) {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		res.Tokens = append(res.Tokens, id)
		opts.Stream.Add(id)
	}
	opts.Stream.Flush()
	res.Tokens = append(res.Tokens, g.stop)
	return res, nil
}

func (g *stubGen) lastPrompt() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.prompts[len(g.prompts)-1]
}

// TestToolCallRoundTrip: tools go into the prompt as each template renders
// them, the model's call comes back as tool_calls (whole and streamed), and
// the call and the tool's result, sent back by the client, are rendered in
// the next prompt in the model's own format. Qwen3 (hermes JSON) and
// Qwen3.5 (XML, with reasoning) are both exercised; the model is a stub,
// everything else is the real server.
func TestToolCallRoundTrip(t *testing.T) {
	stop, _ := tinyTok.TokenID("<|im_end|>")
	// The declaration as openai-go sends it (keys sorted), printed as the
	// templates' tojson does.
	const toolJSON = `{"function": {"name": "get_weather", "description": "Current weather", "parameters": {"properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"], "type": "object"}}, "type": "function"}`
	for _, c := range []struct {
		format       tokenizer.ChatFormat
		answer       string // the model's output after the tool's result
		call         string // the model's output that calls the tool
		reasoning    string
		renderedCall string // how the next prompt must show the call
		renderedTool string // and its declaration
	}{
		{format: tokenizer.ChatQwen3Instruct, answer: "It is 21 degrees in Paris.",
			call:         "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 2}}\n</tool_call>",
			renderedCall: "<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 2}}\n</tool_call><|im_end|>",
			renderedTool: "<tools>\n" + toolJSON},
		{format: tokenizer.ChatQwen35, reasoning: "The user wants the weather.",
			answer:       "Got it.\n</think>\n\nIt is 21 degrees in Paris.",
			call:         "The user wants the weather.\n</think>\n\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=days>\n2\n</parameter>\n</function>\n</tool_call>",
			renderedCall: "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n<parameter=days>\n2\n</parameter>\n</function>\n</tool_call><|im_end|>",
			renderedTool: toolJSON},
	} {
		t.Run(string(c.format), func(t *testing.T) {
			gen := &stubGen{tok: tinyTok, stop: stop, reply: func(prompt string) string {
				if strings.Contains(prompt, "<tool_response>") {
					return c.answer
				}
				return c.call
			}}
			ts, _ := newServer(t, func(o *Options) { o.Generator = gen; o.ChatFormat = c.format })
			client := newClient(ts.URL)
			ctx := context.Background()
			params := openai.ChatCompletionNewParams{
				Model:    modelName,
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Weather in Paris?")},
				Tools: []openai.ChatCompletionToolUnionParam{openai.ChatCompletionFunctionTool(openai.FunctionDefinitionParam{
					Name: "get_weather", Description: openai.String("Current weather"),
					Parameters: openai.FunctionParameters{"type": "object",
						"properties": map[string]any{"city": map[string]any{"type": "string"}, "days": map[string]any{"type": "integer"}},
						"required":   []string{"city"}},
				})},
			}
			resp, err := client.Chat.Completions.New(ctx, params)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(gen.lastPrompt(), c.renderedTool) {
				t.Errorf("the prompt does not declare the tool as the template does:\n%s", gen.lastPrompt())
			}
			msg := resp.Choices[0].Message
			if resp.Choices[0].FinishReason != "tool_calls" || len(msg.ToolCalls) != 1 {
				t.Fatalf("finish %q, calls %+v, content %q", resp.Choices[0].FinishReason, msg.ToolCalls, msg.Content)
			}
			call := msg.ToolCalls[0]
			if call.Function.Name != "get_weather" || call.Function.Arguments != `{"city":"Paris","days":2}` || call.ID == "" {
				t.Errorf("call %+v", call)
			}
			if msg.Content != "" {
				t.Errorf("content %q next to the call", msg.Content)
			}
			var reasoning string
			if f, ok := msg.JSON.ExtraFields["reasoning_content"]; ok {
				json.Unmarshal([]byte(f.Raw()), &reasoning)
			}
			if reasoning != c.reasoning {
				t.Errorf("reasoning_content %q, want %q", reasoning, c.reasoning)
			}

			// Streamed: the call arrives as a delta.
			stream := client.Chat.Completions.NewStreaming(ctx, params)
			var acc openai.ChatCompletionAccumulator
			callChunks := 0
			for stream.Next() {
				acc.AddChunk(stream.Current())
				if ch := stream.Current().Choices; len(ch) > 0 && len(ch[0].Delta.ToolCalls) > 0 {
					callChunks++
				}
			}
			// Hermes calls stream their arguments in pieces; XML calls come whole.
			if hermes := c.format == tokenizer.ChatQwen3Instruct; (callChunks > 2) != hermes {
				t.Errorf("the call came in %d chunks (hermes format: %v)", callChunks, hermes)
			}
			if err := stream.Err(); err != nil {
				t.Fatal(err)
			}
			if sc := acc.Choices[0].Message.ToolCalls; len(sc) != 1 || sc[0].Function.Name != "get_weather" || sc[0].Function.Arguments != call.Function.Arguments {
				t.Errorf("streamed calls %+v", sc)
			}
			if r := acc.Choices[0].FinishReason; r != "tool_calls" {
				t.Errorf("streamed finish reason %q", r)
			}

			// The client runs the tool and sends the result back.
			params.Messages = append(params.Messages, msg.ToParam(), openai.ToolMessage(`{"temp_c": 21}`, call.ID))
			resp, err = client.Chat.Completions.New(ctx, params)
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.Choices[0].Message.Content; got != "It is 21 degrees in Paris." || resp.Choices[0].FinishReason != "stop" {
				t.Errorf("final answer %q (%s)", got, resp.Choices[0].FinishReason)
			}
			p := gen.lastPrompt()
			for _, want := range []string{c.renderedCall, "<|im_start|>user\n<tool_response>\n{\"temp_c\": 21}\n</tool_response><|im_end|>"} {
				if !strings.Contains(p, want) {
					t.Errorf("the follow-up prompt lacks %q:\n%s", want, p)
				}
			}
		})
	}
}

// TestMalformedToolCall: a call the model botched is reported next to the
// reply's text, and the finish reason is not tool_calls.
func TestMalformedToolCall(t *testing.T) {
	stop, _ := tinyTok.TokenID("<|im_end|>")
	bad := "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": Paris}}\n</tool_call>"
	gen := &stubGen{tok: tinyTok, stop: stop, reply: func(string) string { return bad }}
	ts, _ := newServer(t, func(o *Options) { o.Generator = gen; o.ChatFormat = tokenizer.ChatQwen3 })
	var resp chatCompletion
	code, body := post(t, ts.URL+"/v1/chat/completions", `{"messages": [{"role": "user", "content": "weather?"}],
		"tools": [{"type": "function", "function": {"name": "get_weather"}}]}`, &resp)
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	m := resp.Choices[0].Message
	if len(m.ToolCalls) != 0 || len(m.ToolCallErrors) != 1 || !strings.Contains(m.ToolCallErrors[0], "not valid JSON") ||
		m.Content == nil || *m.Content != bad || resp.Choices[0].FinishReason != "stop" {
		t.Errorf("malformed call answered as %s", body)
	}
}

// TestForcedToolChoice: tool_choice "required" or a named function writes
// the call's opening into the generation prompt (thinking off), so the
// model can only continue the call; the reply parses as that call.
func TestForcedToolChoice(t *testing.T) {
	stop, _ := tinyTok.TokenID("<|im_end|>")
	tools := `"tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]`
	for _, c := range []struct {
		format     tokenizer.ChatFormat
		choice     string
		promptEnd  string // the generation prompt the model continues
		completion string // the model's continuation
	}{
		{tokenizer.ChatQwen3, `{"type": "function", "function": {"name": "get_weather"}}`,
			"<|im_start|>assistant\n<think>\n\n</think>\n\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": ",
			"{\"city\": \"Paris\"}}\n</tool_call>"},
		{tokenizer.ChatQwen3, `"required"`,
			"<|im_start|>assistant\n<think>\n\n</think>\n\n<tool_call>\n{\"name\": \"",
			"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"},
		{tokenizer.ChatQwen35, `{"type": "function", "function": {"name": "get_weather"}}`,
			"<|im_start|>assistant\n<think>\n\n</think>\n\n<tool_call>\n<function=get_weather>\n",
			"<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>"},
		{tokenizer.ChatQwen35, `"required"`,
			"<|im_start|>assistant\n<think>\n\n</think>\n\n<tool_call>\n<function=",
			"get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>"},
	} {
		t.Run(string(c.format)+" "+c.choice, func(t *testing.T) {
			gen := &stubGen{tok: tinyTok, stop: stop, reply: func(string) string { return c.completion }}
			ts, _ := newServer(t, func(o *Options) { o.Generator = gen; o.ChatFormat = c.format })
			var r chatCompletion
			code, body := post(t, ts.URL+"/v1/chat/completions", `{"messages": [{"role": "user", "content": "weather?"}], `+tools+`, "tool_choice": `+c.choice+`}`, &r)
			if code != 200 {
				t.Fatalf("%d %s", code, body)
			}
			if p := gen.lastPrompt(); !strings.HasSuffix(p, c.promptEnd) {
				t.Errorf("prompt ends %q, want %q", p[max(0, len(p)-len(c.promptEnd)):], c.promptEnd)
			}
			m := r.Choices[0].Message
			if len(m.ToolCalls) != 1 || m.ToolCalls[0].Function.Name != "get_weather" || m.ToolCalls[0].Function.Arguments != `{"city":"Paris"}` ||
				r.Choices[0].FinishReason != "tool_calls" {
				t.Errorf("reply %s", body)
			}
		})
	}
}
