package server

import (
	"fmt"
	"strings"
)

// replyParser splits generated text, as it streams in, into the parts of an
// API reply: reasoning (between <think> and </think>), content, and tool
// calls (<tool_call> blocks). It holds back only text that may still turn
// out to be the start of a marker or of a stop sequence, so streamed deltas
// arrive as soon as they are certain. The newline trimming follows the Qwen
// templates, which render reasoning and content stripped of the newlines
// next to the think tags, so a reply sent back in the next turn renders as
// the model saw it.
type replyParser struct {
	mode  replyMode
	buf   string // text not yet assigned to a part
	tools bool   // parse <tool_call> blocks
	specs map[string]toolSpec
	stops []string

	// emit receives each part as it is decided.
	emit func(replyPart)

	calls   int
	stopped bool // a stop sequence was generated
}

type replyMode int

const (
	modeStart      replyMode = iota // nothing seen: a <think> may open
	modeThink                       // inside the reasoning
	modeThinkBody                   // inside the reasoning, leading newlines dropped
	modeAfterThink                  // after </think>: drop newlines, then content
	modeContent
	modeTool // inside a <tool_call> block
	modeDone // a stop sequence ended the reply
)

// replyPart is one decided piece of the reply; exactly one field is set.
type replyPart struct {
	Reasoning string
	Content   string
	Call      *toolCall
	CallError string
}

// newReplyParser starts a parser. inThink says that the prompt already
// opened the reasoning (a generation prompt ending in "<think>\n"); think
// says that a leading <think> in the output opens it. With tools, tool-call
// blocks are parsed; stops are the request's stop sequences.
func newReplyParser(inThink, think, tools bool, specs map[string]toolSpec, stops []string, emit func(replyPart)) *replyParser {
	p := &replyParser{mode: modeContent, tools: tools, specs: specs, stops: stops, emit: emit}
	switch {
	case inThink:
		p.mode = modeThink
	case think:
		p.mode = modeStart
	}
	return p
}

// Write adds generated text.
func (p *replyParser) Write(text string) {
	p.buf += text
	for p.step(false) {
	}
}

// Close decides what is still held back: the generation has ended.
func (p *replyParser) Close() {
	for p.step(true) {
	}
}

// step makes one decision; it reports whether another may follow.
func (p *replyParser) step(final bool) bool {
	switch p.mode {
	case modeStart:
		t := strings.TrimLeft(p.buf, " \t\r\n")
		switch {
		case strings.HasPrefix(t, "<think>"):
			p.buf, p.mode = t[len("<think>"):], modeThink
			return true
		case !final && strings.HasPrefix("<think>", t):
			return false // wait: maybe the opening tag
		}
		p.mode = modeContent
		return true
	case modeThink, modeThinkBody:
		if p.mode == modeThink {
			p.buf = strings.TrimLeft(p.buf, "\n")
			if p.buf == "" && !final {
				return false
			}
			p.mode = modeThinkBody
		}
		if i := strings.Index(p.buf, "</think>"); i >= 0 {
			p.out(replyPart{Reasoning: strings.TrimRight(p.buf[:i], "\n")})
			p.buf, p.mode = p.buf[i+len("</think>"):], modeAfterThink
			return true
		}
		if final {
			p.out(replyPart{Reasoning: p.buf})
			p.buf = ""
			return false
		}
		// Hold back a partial "</think>" and trailing newlines (they are
		// dropped when the reasoning ends there).
		keep := max(partialSuffix(p.buf, "</think>"), len(p.buf)-len(strings.TrimRight(p.buf, "\n")))
		p.out(replyPart{Reasoning: p.buf[:len(p.buf)-keep]})
		p.buf = p.buf[len(p.buf)-keep:]
		return false
	case modeAfterThink:
		p.buf = strings.TrimLeft(p.buf, "\n")
		if p.buf == "" && !final {
			return false
		}
		p.mode = modeContent
		return true
	case modeContent:
		return p.content(final)
	case modeTool:
		i := strings.Index(p.buf, toolCallClose)
		if i < 0 {
			if final {
				p.out(replyPart{CallError: "unterminated <tool_call> (the generation ended before </tool_call>)"})
				p.out(replyPart{Content: toolCallOpen + p.buf})
				p.buf = ""
			}
			return false
		}
		body := p.buf[:i]
		p.buf = strings.TrimLeft(p.buf[i+len(toolCallClose):], " \t\r\n")
		p.mode = modeContent
		name, args, err := parseToolCall(body, p.specs)
		if err != nil {
			p.out(replyPart{CallError: err.Error()})
			p.out(replyPart{Content: toolCallOpen + body + toolCallClose})
			return true
		}
		c := &toolCall{ID: fmt.Sprintf("call_%s_%d", randomID(), p.calls), Type: "function"}
		idx := p.calls
		c.Index = &idx
		c.Function.Name, c.Function.Arguments = name, args
		p.calls++
		p.out(replyPart{Call: c})
		return true
	}
	return false
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
	if p.tools {
		keep = max(keep, len(p.buf)-len(strings.TrimRight(p.buf, " \t\r\n")))
	}
	p.out(replyPart{Content: p.buf[:len(p.buf)-keep]})
	p.buf = p.buf[len(p.buf)-keep:]
	return false
}

func (p *replyParser) out(r replyPart) {
	if r.Reasoning == "" && r.Content == "" && r.Call == nil && r.CallError == "" {
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
