package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const templatesDir = "../../testdata/tokenizer/chat_templates"

func readTemplate(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(templatesDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDetectChatFormat(t *testing.T) {
	tiny, err := os.ReadFile(filepath.Join(tinyDir, ChatTemplateFile))
	if err != nil {
		t.Fatal(err)
	}
	var qwen2Config struct {
		ChatTemplate string `json:"chat_template"`
	}
	readJSONFile(t, filepath.Join(qwen3Dir, ConfigFile), &qwen2Config)
	qwen3 := readTemplate(t, "qwen3.jinja")
	thinking := strings.Replace(qwen3, "{{- '<|im_start|>assistant\\n' }}\n    {%- if enable_thinking is defined and enable_thinking is false %}\n        {{- '<think>\\n\\n</think>\\n\\n' }}\n    {%- endif %}",
		"{{- '<|im_start|>assistant\\n<think>\\n' }}", 1)
	if thinking == qwen3 {
		t.Fatal("could not derive the thinking-only template")
	}
	instruct := `{%- for message in messages %}{%- if message.role == "assistant" %}{{- '<|im_start|>' + message.role + '\n' + content }}` +
		`{{- '<tool_call>\n{"name": "' }}{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}`
	for _, tc := range []struct {
		name, template string
		want           ChatFormat
	}{
		{"none", "", ChatML},
		{"tiny ChatML", string(tiny), ChatML},
		{"Qwen3 hybrid", qwen3, ChatQwen3},
		{"Qwen3 thinking", thinking, ChatQwen3Thinking},
		{"Qwen3 instruct", instruct, ChatQwen3Instruct},
		{"Qwen3.5", readTemplate(t, "qwen3.5.jinja"), ChatQwen35},
		{"Qwen2 default system prompt", qwen2Config.ChatTemplate, ""},
		{"Qwen3-Coder XML tools", "<tool_call>\n<function=x>", ""},
		{"foreign", "{{ bos_token }}{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}", ""},
	} {
		got, err := DetectChatFormat(tc.template)
		if got != tc.want || (tc.want == "") != (err != nil) {
			t.Errorf("%s: DetectChatFormat = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	// A tokenizer whose template is not recognised says which file it read.
	if _, err := mustLoad(t, qwen3Dir+"/tokenizer.json").FormatChat([]Message{{Role: "user", Content: "x"}}, ChatOptions{}); err == nil ||
		!strings.Contains(err.Error(), ConfigFile) {
		t.Errorf("FormatChat with the Qwen2 template: error %v, want one naming %s", err, ConfigFile)
	}
}

var weatherTool = json.RawMessage(`{"type": "function", "function": {"name": "get_weather", "description": "Weather «now»", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}`)

const weatherToolPy = `{"type": "function", "function": {"name": "get_weather", "description": "Weather «now»", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}`

// The expected texts below are the templates in testdata/tokenizer/
// chat_templates (and reference-math.md §5.4) evaluated by hand.
func TestFormatQwen3(t *testing.T) {
	user := []Message{{Role: "user", Content: "Hi"}}
	history := []Message{
		{Role: "system", Content: "Be brief."},
		{Role: "user", Content: "Q1"},
		{Role: "assistant", Content: "<think>\nR1\n</think>\n\nA1"},
		{Role: "user", Content: "Q2"},
	}
	toolTurns := []Message{
		{Role: "user", Content: "Weather in Paris?"},
		{Role: "assistant", ToolCalls: []ToolCall{{Name: "get_weather", Arguments: json.RawMessage(`{"city": "Paris", "days": 2}`)}}},
		{Role: "tool", Content: `{"temp": 21}`},
		{Role: "tool", Content: "sunny"},
		{Role: "assistant", Content: "Sunny, 21 °C.", ReasoningContent: "\nIt is sunny.\n"},
	}
	toolsBlock := "<|im_start|>system\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n" +
		"You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n" + weatherToolPy +
		"\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n" +
		"<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n"
	for _, tc := range []struct {
		name   string
		format ChatFormat
		msgs   []Message
		opts   ChatOptions
		want   string
	}{
		{"thinking off", ChatQwen3, user, ChatOptions{AddGenerationPrompt: true},
			"<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"},
		{"thinking on", ChatQwen3, user, ChatOptions{AddGenerationPrompt: true, EnableThinking: true},
			"<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"},
		{"no generation prompt", ChatQwen3, user, ChatOptions{}, "<|im_start|>user\nHi<|im_end|>\n"},
		{"reasoning dropped before last query", ChatQwen3, history, ChatOptions{AddGenerationPrompt: true, EnableThinking: true},
			"<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n" +
				"<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n"},
		{"last assistant turn keeps an empty think block", ChatQwen3, []Message{{Role: "user", Content: "Q"}, {Role: "assistant", Content: "A"}}, ChatOptions{},
			"<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nA<|im_end|>\n"},
		{"tools and tool calls", ChatQwen3, toolTurns, ChatOptions{Tools: []json.RawMessage{weatherTool}, AddGenerationPrompt: true, EnableThinking: true},
			toolsBlock + "<|im_start|>user\nWeather in Paris?<|im_end|>\n" +
				"<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 2}}\n</tool_call><|im_end|>\n" +
				"<|im_start|>user\n<tool_response>\n{\"temp\": 21}\n</tool_response>\n<tool_response>\nsunny\n</tool_response><|im_end|>\n" +
				"<|im_start|>assistant\n<think>\nIt is sunny.\n</think>\n\nSunny, 21 °C.<|im_end|>\n<|im_start|>assistant\n"},
		{"system folded into tools block", ChatQwen3, []Message{{Role: "system", Content: "S"}, {Role: "user", Content: "U"}},
			ChatOptions{Tools: []json.RawMessage{weatherTool}},
			strings.Replace(toolsBlock, "system\n", "system\nS\n\n", 1) + "<|im_start|>user\nU<|im_end|>\n"},
		{"string arguments verbatim", ChatQwen3, []Message{{Role: "user", Content: "U"}, {Role: "assistant", Content: "ok",
			ToolCalls: []ToolCall{{Name: "f", Arguments: json.RawMessage(`"{\"a\":1}"`)}, {Name: "g"}}}}, ChatOptions{},
			"<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nok\n<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\":1}}\n</tool_call>" +
				"\n<tool_call>\n{\"name\": \"g\", \"arguments\": {}}\n</tool_call><|im_end|>\n"},
		{"instruct: no think handling", ChatQwen3Instruct, []Message{{Role: "user", Content: "Q"}, {Role: "assistant", Content: "A"}, {Role: "user", Content: "Q2"}},
			ChatOptions{AddGenerationPrompt: true},
			"<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\n"},
		{"thinking-only: always opens think", ChatQwen3Thinking, user, ChatOptions{AddGenerationPrompt: true},
			"<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FormatChat(tc.format, tc.msgs, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("FormatChat =\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

func TestFormatQwen35(t *testing.T) {
	user := []Message{{Role: "user", Content: " Hi \n"}}
	toolTurns := []Message{
		{Role: "system", Content: "Be brief.\n"},
		{Role: "user", Content: "Weather?"},
		{Role: "assistant", Content: "Checking.", ToolCalls: []ToolCall{
			{Name: "get_weather", Arguments: json.RawMessage(`{"city": "Paris", "days": 3, "metric": true, "none": null, "opts": {"a": [1, 2.50, 1e2]}}`)},
			{Name: "get_time", Arguments: json.RawMessage(`"{\"tz\": \"CET\"}"`)},
		}},
		{Role: "tool", Content: "sunny"},
	}
	for _, tc := range []struct {
		name string
		msgs []Message
		opts ChatOptions
		want string
	}{
		{"thinking on", user, ChatOptions{AddGenerationPrompt: true, EnableThinking: true},
			"<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n"},
		{"thinking off", user, ChatOptions{AddGenerationPrompt: true},
			"<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"},
		{"history", []Message{
			{Role: "user", Content: "Q1"},
			{Role: "assistant", Content: "A1", ReasoningContent: "R1"},
			{Role: "user", Content: "Q2"},
			{Role: "assistant", Content: "<think>\n R2 \n</think>\n\nA2"},
		}, ChatOptions{},
			"<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n" +
				"<|im_start|>assistant\n<think>\nR2\n</think>\n\nA2<|im_end|>\n"},
		{"tools", toolTurns, ChatOptions{Tools: []json.RawMessage{weatherTool}, AddGenerationPrompt: true, EnableThinking: true},
			"<|im_start|>system\n" + qwen35ToolsHeader + "\n" + weatherToolPy + qwen35ToolsFooter + "\n\nBe brief.<|im_end|>\n" +
				"<|im_start|>user\nWeather?<|im_end|>\n" +
				"<|im_start|>assistant\n<think>\n\n</think>\n\nChecking.\n\n<tool_call>\n<function=get_weather>\n" +
				"<parameter=city>\nParis\n</parameter>\n<parameter=days>\n3\n</parameter>\n<parameter=metric>\nTrue\n</parameter>\n" +
				"<parameter=none>\nNone\n</parameter>\n<parameter=opts>\n{\"a\": [1, 2.5, 100.0]}\n</parameter>\n</function>\n</tool_call>" +
				"\n<tool_call>\n<function=get_time>\n<parameter=tz>\nCET\n</parameter>\n</function>\n</tool_call><|im_end|>\n" +
				"<|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>\n<|im_start|>assistant\n<think>\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FormatChat(ChatQwen35, tc.msgs, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("FormatChat =\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name string
		msgs []Message
		want string
	}{
		{"no messages", nil, "no messages"},
		{"no user query", []Message{{Role: "system", Content: "S"}}, "no user query"},
		{"only tool output", []Message{{Role: "user", Content: "<tool_response>x</tool_response>"}}, "no user query"},
		{"late system", []Message{{Role: "user", Content: "U"}, {Role: "system", Content: "S"}}, "beginning"},
		{"unknown role", []Message{{Role: "user", Content: "U"}, {Role: "narrator", Content: "N"}}, `role "narrator"`},
	} {
		if _, err := FormatChat(ChatQwen35, tc.msgs, ChatOptions{}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

func TestPyJSON(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"b": "x\u00e9<>&\n\u0001\"\\", "a": [1, 1.0, 1e2, -0, true, false, null]}`,
			`{"b": "xé<>&\n\u0001\"\\", "a": [1, 1.0, 100.0, 0, true, false, null]}`},
		{`{"k": 1, "k": 2, "j": {}}`, `{"k": 2, "j": {}}`},
		{`[]`, `[]`},
		{`"\ud83d\ude00"`, `"😀"`},
	} {
		got, err := pyJSON(json.RawMessage(tc.in))
		if err != nil || got != tc.want {
			t.Errorf("pyJSON(%s) = %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
	if _, err := pyJSON(json.RawMessage(`{"a": }`)); err == nil {
		t.Error("pyJSON accepted invalid JSON")
	}
	for _, tc := range []struct {
		f    float64
		want string
	}{
		{1, "1.0"}, {2.5, "2.5"}, {-0.5, "-0.5"}, {1e16, "1e+16"}, {1e15, "1000000000000000.0"},
		{0.0001, "0.0001"}, {0.00001, "1e-05"}, {123.456, "123.456"}, {1.5e-7, "1.5e-07"},
		{1e22, "1e+22"}, {12345678901234567, "1.2345678901234568e+16"}, {0.30000000000000004, "0.30000000000000004"},
	} {
		if got := pyFloatRepr(tc.f); got != tc.want {
			t.Errorf("pyFloatRepr(%v) = %s, want %s", tc.f, got, tc.want)
		}
	}
	if got := pyStrip("\x1c\u3000 x \u2009\n"); got != "x" {
		t.Errorf("pyStrip = %q, want %q", got, "x")
	}
}
