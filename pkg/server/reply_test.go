package server

import (
	"encoding/json"
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

// TestToolCallStreaming: a hermes tool call is announced (index, id, name)
// as soon as its name is complete and its arguments have begun, and its
// arguments follow as fragments that add up to the finished call's compact
// arguments. A call that turns out malformed after it was announced never
// gets its closing brace — the fragments a client holds are not a JSON
// object — and is reported in tool_call_errors; unknown functions, the XML
// format and bodies that do not start with the name are sent whole.
func TestToolCallStreaming(t *testing.T) {
	specs := map[string]toolSpec{"get_weather": {name: "get_weather"}, "f": {name: "f"}}
	for _, c := range []struct {
		name     string
		body     string // inside <tool_call>…</tool_call>
		open     bool   // the generation ends inside the block
		wantArgs string // the finished call's arguments ("": no valid call)
		streamed bool   // announced before the end
	}{
		{name: "hermes", body: "\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 2}}\n",
			wantArgs: `{"city":"Paris","days":2}`, streamed: true},
		{name: "nested, braces in strings", body: `{"name":"f","arguments":{ "q": "a } \" {", "n": [1, {"x": null}], "t": true }}`,
			wantArgs: `{"q":"a } \" {","n":[1,{"x":null}],"t":true}`, streamed: true},
		{name: "empty arguments", body: `{"name": "f", "arguments": {}}`, wantArgs: `{}`, streamed: true},
		{name: "malformed arguments", body: `{"name": "f", "arguments": {oops}}`, streamed: true},
		{name: "text after the object", body: `{"name": "f", "arguments": {"a": 1}} extra`, streamed: true},
		{name: "cut off", body: `{"name": "f", "arguments": {"a": [1, 2`, open: true, streamed: true},
		{name: "unknown function", body: `{"name": "rm", "arguments": {"path": "/"}}`},
		{name: "name after arguments", body: `{"arguments": {"a": 1}, "name": "f"}`, wantArgs: `{"a":1}`},
		{name: "xml", body: "\n<function=f>\n<parameter=a>\n1\n</parameter>\n</function>\n", wantArgs: `{"a":1}`},
	} {
		for _, step := range []int{1, 3, 1 << 20} {
			t.Run(fmt.Sprintf("%s/step%d", c.name, step), func(t *testing.T) {
				text := "Checking." + toolCallOpen + c.body
				if !c.open {
					text += toolCallClose
				}
				var (
					deltas   []toolCall
					final    []replyPart
					errs     []string
					finished bool // a Call or CallError came
				)
				p := newReplyParser(true, specs, nil, func(r replyPart) {
					switch {
					case r.CallDelta != nil:
						if finished {
							t.Errorf("a delta after the call ended: %+v", *r.CallDelta)
						}
						deltas = append(deltas, *r.CallDelta)
					case r.Call != nil:
						final, finished = append(final, r), true
					case r.CallError != "":
						errs, finished = append(errs, r.CallError), true
					}
				})
				for s := text; s != ""; {
					n := min(step, len(s))
					p.Write(s[:n])
					s = s[n:]
				}
				p.Close()
				var args strings.Builder
				for i, d := range deltas {
					if d.Index == nil || *d.Index != 0 {
						t.Fatalf("delta %d without index 0: %+v", i, d)
					}
					if (i == 0) != (d.ID != "") || (i == 0) != (d.Function.Name != "") {
						t.Errorf("delta %d: id %q, name %q (only the first names the call)", i, d.ID, d.Function.Name)
					}
					args.WriteString(d.Function.Arguments)
				}
				streamed := len(deltas) > 0 && (len(final) == 0 || final[0].Streamed)
				if step == 1 && streamed != c.streamed {
					t.Errorf("streamed %v, want %v (%d deltas)", streamed, c.streamed, len(deltas))
				}
				if c.wantArgs == "" {
					if len(final) != 0 || len(errs) != 1 {
						t.Fatalf("malformed call: calls %+v, errors %q", final, errs)
					}
					if json.Valid([]byte(args.String())) {
						t.Errorf("the fragments of a malformed call add up to valid JSON %s", args.String())
					}
					return
				}
				if len(final) != 1 || len(errs) != 0 {
					t.Fatalf("calls %+v, errors %q", final, errs)
				}
				call := final[0].Call
				if call.Function.Arguments != c.wantArgs || call.Function.Name == "" || call.ID == "" {
					t.Errorf("call %+v, want arguments %s", *call, c.wantArgs)
				}
				if final[0].Streamed {
					if args.String() != call.Function.Arguments || deltas[0].ID != call.ID || deltas[0].Function.Name != call.Function.Name {
						t.Errorf("deltas %+v add up to %s, the call is %+v", deltas, args.String(), *call)
					}
					if step == 1 && len(deltas) < 3 {
						t.Errorf("%d deltas: the arguments were not streamed", len(deltas))
					}
				}
			})
		}
	}
}
