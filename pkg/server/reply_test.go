package server

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/fm-moe/fm/pkg/policy"
)

// parts turns a generated text into what policy.ThinkSplitter reports,
// cutting the text between tags into pieces of at most step bytes (the
// token-by-token arrival a stream sees). inThink: the prompt opened <think>.
func parts(text string, inThink bool, step int) []policy.Part {
	var out []policy.Part
	kind := policy.Answer
	if inThink {
		kind = policy.Reasoning
	}
	for text != "" {
		i := strings.Index(text, "<think>")
		j := strings.Index(text, "</think>")
		next, tag, tagKind := len(text), "", policy.Answer
		if i >= 0 && (j < 0 || i < j) {
			next, tag, tagKind = i, "<think>", policy.OpenTag
		} else if j >= 0 {
			next, tag, tagKind = j, "</think>", policy.CloseTag
		}
		for s := text[:next]; s != ""; {
			n := min(step, len(s))
			out = append(out, policy.Part{Kind: kind, Text: s[:n]})
			s = s[n:]
		}
		if tag == "" {
			break
		}
		out = append(out, policy.Part{Kind: tagKind, Text: tag})
		kind = policy.Reasoning
		if tagKind == policy.CloseTag {
			kind = policy.Answer
		}
		text = text[next+len(tag):]
	}
	return out
}

// collected is a parsed reply, flattened for comparison.
type collected struct {
	reasoning, content string
	calls, errors      []string
	stopped            bool
}

func parseAll(text string, inThink, tools bool, stops []string, step int) collected {
	var c collected
	p := newReplyParser(tools, nil, stops, func(r replyPart) {
		c.reasoning += r.Reasoning
		c.content += r.Content
		if r.Call != nil {
			c.calls = append(c.calls, r.Call.Function.Name+r.Call.Function.Arguments)
		}
		if r.CallError != "" {
			c.errors = append(c.errors, r.CallError)
		}
	})
	for _, part := range parts(text, inThink, step) {
		if p.stopped {
			break // the generation is stopped at once
		}
		p.Add([]policy.Part{part})
	}
	p.Close()
	c.stopped = p.stopped
	return c
}

func TestReplyParser(t *testing.T) {
	hermes := "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"
	for _, c := range []struct {
		name    string
		text    string
		inThink bool
		tools   bool
		stops   []string
		want    collected
	}{
		{name: "plain", text: "Hello, world.\n", want: collected{content: "Hello, world.\n"}},
		{name: "reasoning opened by the prompt", text: "\nLet me think.\n\n</think>\n\nThe answer is 4.", inThink: true,
			want: collected{reasoning: "Let me think.", content: "The answer is 4."}},
		{name: "reasoning opened by the model", text: "<think>\nHmm.\nYes.\n</think>\n\nDone", want: collected{reasoning: "Hmm.\nYes.", content: "Done"}},
		{name: "empty reasoning", text: "<think>\n\n</think>\n\nOK", want: collected{content: "OK"}},
		{name: "reasoning cut by the length limit", text: "\nstep 1\n", inThink: true, want: collected{reasoning: "step 1\n"}},
		{name: "tool call after content", text: "I will check.\n\n" + hermes, tools: true,
			want: collected{content: "I will check.", calls: []string{`get_weather{"city":"Paris"}`}}},
		{name: "two xml calls after reasoning", inThink: true, tools: true,
			text: "need data</think>\n\n<tool_call>\n<function=a>\n<parameter=x>\n1\n</parameter>\n</function>\n</tool_call>\n<tool_call>\n<function=b>\n</function>\n</tool_call>",
			want: collected{reasoning: "need data", calls: []string{`a{"x":1}`, `b{}`}}},
		{name: "tool calls off: text stays content", text: hermes, want: collected{content: hermes}},
		{name: "malformed call is reported, not passed on", tools: true, text: "<tool_call>\n{\"name\": \"f\", \"arguments\": {oops}}\n</tool_call>",
			want: collected{content: "<tool_call>\n{\"name\": \"f\", \"arguments\": {oops}}\n</tool_call>", errors: []string{"tool call is not valid JSON: invalid character 'o' looking for beginning of object key string"}}},
		{name: "unterminated call", tools: true, text: "<tool_call>\n{\"name\": \"f\"",
			want: collected{content: "<tool_call>\n{\"name\": \"f\"", errors: []string{"unterminated <tool_call> (the generation ended before </tool_call>)"}}},
		{name: "stop sequence", text: "one two STOP three", stops: []string{"STOP"}, want: collected{content: "one two ", stopped: true}},
		{name: "earliest of two stop sequences", text: "a--b##c", stops: []string{"##", "--"}, want: collected{content: "a", stopped: true}},
		{name: "partial stop sequence at the end is content", text: "abc ST", stops: []string{"STOP"}, want: collected{content: "abc ST"}},
		{name: "stop sequences do not apply to reasoning", text: "<think>STOP</think>ok", stops: []string{"STOP"},
			want: collected{reasoning: "STOP", content: "ok"}},
	} {
		for _, step := range []int{1, 2, 3, 1 << 20} {
			t.Run(fmt.Sprintf("%s/step%d", c.name, step), func(t *testing.T) {
				got := parseAll(c.text, c.inThink, c.tools, c.stops, step)
				if !reflect.DeepEqual(got, c.want) {
					t.Errorf("got  %#v\nwant %#v", got, c.want)
				}
			})
		}
	}
}

// TestReplyParserStreamsEarly: text that cannot start a marker is emitted
// at once, not held until the end.
func TestReplyParserStreamsEarly(t *testing.T) {
	var got []string
	p := newReplyParser(true, nil, []string{"END"}, func(r replyPart) { got = append(got, r.Content) })
	for _, s := range []string{"Hello", " wor", "ld <", "tool"} {
		p.Write(s)
	}
	if want := "Hello| wor|ld"; strings.Join(got, "|") != want {
		t.Errorf("streamed %q, want %q (only the possible marker start and the space before it held back)", strings.Join(got, "|"), want)
	}
}
