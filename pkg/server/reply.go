package server

import (
	"fmt"
	"strings"

	"github.com/fm-moe/fm/pkg/policy"
)

// replyParser splits a generated reply, as it streams in, into the parts
// of an API answer: reasoning, content, and tool calls (<tool_call> blocks).
// policy.ThinkSplitter tells reasoning from answer by the think tokens; this
// parser trims the newlines next to the tags (the Qwen templates render
// reasoning and content stripped of them, so a reply sent back in the next
// turn renders as the model saw it), finds tool calls and stop sequences in
// the answer, and holds back only text that may still turn out to be the
// start of one, so streamed deltas go out as soon as they are certain.
type replyParser struct {
	mode  replyMode
	buf   string // answer text not yet assigned to a part
	tools bool   // parse <tool_call> blocks
	specs map[string]toolSpec
	stops []string

	// Reasoning: newlines held back (dropped if </think> follows), and
	// whether any reasoning text was sent (leading newlines are dropped).
	heldNL        string
	reasoningSent bool
	afterThink    bool // drop the newlines that follow </think>
	afterCall     bool // drop the whitespace that follows </tool_call>

	// emit receives each part as it is decided.
	emit func(replyPart)

	calls   int        // valid calls
	indexes int        // call indexes given out (announced or valid calls)
	cs      callStream // the open call's streaming
	stopped bool       // a stop sequence was generated
}

type replyMode int

const (
	modeContent replyMode = iota
	modeTool              // inside a <tool_call> block
	modeDone              // a stop sequence ended the reply
)

// replyPart is one decided piece of the reply; exactly one field is set
// (Streamed goes with Call).
type replyPart struct {
	Reasoning string
	Content   string
	// CallDelta is a piece of a call being generated, for streams only: the
	// announcement (index, id, name) or an argument fragment (index and
	// arguments). The call ends with its Call (Streamed set: every piece of
	// it was sent as deltas) or with a CallError.
	CallDelta *toolCall
	Call      *toolCall
	Streamed  bool
	CallError string
}

// newReplyParser starts a parser. With tools, tool-call blocks are parsed;
// stops are the request's stop sequences.
func newReplyParser(tools bool, specs map[string]toolSpec, stops []string, emit func(replyPart)) *replyParser {
	return &replyParser{tools: tools, specs: specs, stops: stops, emit: emit}
}

// Add takes the splitter's parts of one generated token.
func (p *replyParser) Add(parts []policy.Part) {
	for _, part := range parts {
		switch part.Kind {
		case policy.Reasoning:
			p.reasoning(part.Text)
		case policy.OpenTag:
			p.heldNL, p.reasoningSent = "", false
		case policy.CloseTag:
			p.heldNL, p.afterThink = "", true
		case policy.Answer:
			p.Write(part.Text)
		}
	}
}

func (p *replyParser) reasoning(text string) {
	if !p.reasoningSent {
		text = strings.TrimLeft(text, "\n")
		if text == "" {
			return
		}
	}
	text = p.heldNL + text
	body := strings.TrimRight(text, "\n")
	p.heldNL = text[len(body):]
	if body != "" {
		p.reasoningSent = true
		p.out(replyPart{Reasoning: body})
	}
}

// Write adds answer text.
func (p *replyParser) Write(text string) {
	if p.afterThink {
		text = strings.TrimLeft(text, "\n")
		if text == "" {
			return
		}
		p.afterThink = false
	}
	if p.afterCall {
		text = strings.TrimLeft(text, " \t\r\n")
		if text == "" {
			return
		}
		p.afterCall = false
	}
	p.buf += text
	for p.step(false) {
	}
}

// Close decides what is still held back: the generation has ended.
func (p *replyParser) Close() {
	if p.heldNL != "" && p.mode != modeDone {
		// The reasoning was cut off (by the length limit): keep all of it.
		p.out(replyPart{Reasoning: p.heldNL})
		p.heldNL = ""
	}
	for p.step(true) {
	}
}

// step makes one decision about the answer text; it reports whether
// another may follow.
func (p *replyParser) step(final bool) bool {
	switch p.mode {
	case modeContent:
		return p.content(final)
	case modeTool:
		i := strings.Index(p.buf, toolCallClose)
		if i < 0 {
			if final {
				p.out(replyPart{CallError: "unterminated <tool_call> (the generation ended before </tool_call>)"})
				p.out(replyPart{Content: toolCallOpen + p.buf})
				p.buf = ""
				p.cs = callStream{}
			} else {
				p.streamCall()
			}
			return false
		}
		body := p.buf[:i]
		p.buf = strings.TrimLeft(p.buf[i+len(toolCallClose):], " \t\r\n")
		p.mode, p.afterCall = modeContent, p.buf == ""
		announced, sent := p.cs.call, p.cs.sent.String()
		p.cs = callStream{}
		name, args, err := parseToolCall(body, p.specs)
		if err == nil && announced != nil && (name != announced.Function.Name || !strings.HasPrefix(args, sent)) {
			// The streamed start does not fit the whole (a second "name"
			// key, say): the call is not trustworthy.
			err = fmt.Errorf("tool call %q: the body contradicts its streamed start", announced.Function.Name)
		}
		if err != nil {
			p.out(replyPart{CallError: err.Error()})
			p.out(replyPart{Content: toolCallOpen + body + toolCallClose})
			return true
		}
		c := announced
		if c == nil {
			idx := p.indexes
			p.indexes++
			c = &toolCall{Index: &idx, ID: "call_" + randomID(), Type: "function"}
		} else {
			// The rest of the arguments: at least the held closing brace.
			d := &toolCall{Index: c.Index}
			d.Function.Arguments = args[len(sent):]
			p.out(replyPart{CallDelta: d})
		}
		whole := *c
		whole.Function.Name, whole.Function.Arguments = name, args
		p.calls++
		p.out(replyPart{Call: &whole, Streamed: announced != nil})
		return true
	}
	return false
}

// streamCall sends what is certain of the open call: its announcement and
// argument fragments (see callStream).
func (p *replyParser) streamCall() {
	next := func() int { p.indexes++; return p.indexes - 1 }
	announce, args := p.cs.advance(p.buf, p.specs, next)
	if announce != nil {
		a := *announce
		p.out(replyPart{CallDelta: &a})
	}
	if args != "" {
		d := &toolCall{Index: p.cs.call.Index}
		d.Function.Arguments = args
		p.out(replyPart{CallDelta: d})
	}
}

// content handles modeContent: find the earliest stop sequence or tool-call
// opening; emit what is certainly content.
func (p *replyParser) content(final bool) bool {
	at, which := -1, ""
	markers := p.stops
	if p.tools {
		markers = append([]string{toolCallOpen}, markers...)
	}
	for _, m := range markers {
		if m == "" {
			continue
		}
		if i := strings.Index(p.buf, m); i >= 0 && (at < 0 || i < at) {
			at, which = i, m
		}
	}
	switch {
	case at >= 0 && which == toolCallOpen && p.tools:
		// Whitespace between the content and the call belongs to neither.
		p.out(replyPart{Content: strings.TrimRight(p.buf[:at], " \t\r\n")})
		p.buf, p.mode = p.buf[at+len(toolCallOpen):], modeTool
		return true
	case at >= 0:
		p.out(replyPart{Content: p.buf[:at]})
		p.buf, p.mode, p.stopped = "", modeDone, true
		return false
	case final:
		p.out(replyPart{Content: p.buf})
		p.buf = ""
		return false
	}
	keep := 0
	for _, m := range markers {
		keep = max(keep, partialSuffix(p.buf, m))
	}
	cut := len(p.buf) - keep
	if p.tools {
		// Hold whitespace too: it is dropped if a tool call follows.
		cut = len(strings.TrimRight(p.buf[:cut], " \t\r\n"))
	}
	p.out(replyPart{Content: p.buf[:cut]})
	p.buf = p.buf[cut:]
	return false
}

func (p *replyParser) out(r replyPart) {
	if r.Reasoning == "" && r.Content == "" && r.Call == nil && r.CallDelta == nil && r.CallError == "" {
		return
	}
	p.emit(r)
}

// partialSuffix is the length of the longest proper prefix of marker that
// s ends with.
func partialSuffix(s, marker string) int {
	for n := min(len(s), len(marker)-1); n > 0; n-- {
		if strings.HasSuffix(s, marker[:n]) {
			return n
		}
	}
	return 0
}
