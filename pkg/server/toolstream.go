package server

import (
	"encoding/json"
	"strings"
)

// callStream streams the arguments of one hermes JSON tool call
// ({"name": NAME, "arguments": {...}}) while it is generated, as OpenAI
// clients expect: a first delta announces the call (index, id, name) once
// the name is complete and valid and the arguments object has begun, then
// the arguments follow as fragments, whitespace outside strings dropped, so
// that they add up to the compact arguments of the finished call.
//
// A call can still turn out malformed after it was announced (bad JSON,
// text after the object, the generation cut off), so the arguments'
// closing brace is held back until the whole <tool_call> block has been
// parsed: a client never holds a complete JSON object for a call that was
// not valid, and the error goes to tool_call_errors as for any malformed
// call. Calls in the XML format, or whose name does not come first, are
// sent whole at the end.
type callStream struct {
	off   int       // bytes of the call's body scanned
	call  *toolCall // the announced call (nil: not yet, or never)
	never bool      // this call is not streamed

	depth            int  // nesting inside the arguments object
	inString, escape bool // scanner state
	closed           bool // the arguments object is complete (its last brace held)
	sent             strings.Builder
}

// advance scans the body of an open call (everything after <tool_call>
// generated so far) and returns what to send: the announcement, when this
// scan made it, and the new argument text.
func (cs *callStream) advance(body string, specs map[string]toolSpec, index func() int) (announce *toolCall, args string) {
	if cs.never || cs.closed {
		return nil, ""
	}
	if cs.call == nil {
		name, n, ok, more := hermesHeader(body)
		if !ok {
			cs.never = !more
			return nil, ""
		}
		if _, known := specs[name]; len(specs) > 0 && !known {
			cs.never = true // reported as an unknown function at the end
			return nil, ""
		}
		i := index()
		cs.call = &toolCall{Index: &i, ID: "call_" + randomID(), Type: "function"}
		cs.call.Function.Name = name
		cs.off, cs.depth = n, 1
		announce = cs.call
	}
	var out strings.Builder
	if announce != nil {
		out.WriteByte('{') // the header's last byte
	}
	// Hold back what may be the start of </tool_call>.
	end := len(body) - partialSuffix(body, toolCallClose)
	for ; cs.off < end && !cs.closed && !cs.never; cs.off++ {
		c := body[cs.off]
		if cs.inString {
			out.WriteByte(c)
			switch {
			case cs.escape:
				cs.escape = false
			case c == '\\':
				cs.escape = true
			case c == '"':
				cs.inString = false
			}
			continue
		}
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
		case c == '"':
			cs.inString = true
			out.WriteByte(c)
		case c == '{' || c == '[':
			cs.depth++
			out.WriteByte(c)
		case c == '}' || c == ']':
			if cs.depth--; cs.depth == 0 {
				cs.closed = true // the final brace waits for the whole call
			} else {
				out.WriteByte(c)
			}
		case strings.IndexByte(",:-+.0123456789eEtrufalsn", c) >= 0:
			out.WriteByte(c)
		default:
			// Not JSON: the call is malformed; send no more of it.
			cs.never = true
		}
	}
	cs.sent.WriteString(out.String())
	return announce, out.String()
}

// hermesHeader matches the start of a hermes call body up to and including
// the opening brace of its arguments: {"name": "NAME", "arguments": {. It
// returns the name and the header's length (ok), or whether more text
// could still make one (more).
func hermesHeader(body string) (name string, n int, ok, more bool) {
	i := 0
	space := func() {
		for i < len(body) && strings.IndexByte(" \t\r\n", body[i]) >= 0 {
			i++
		}
	}
	// lit consumes s; on a mismatch it reports whether body ended inside s.
	lit := func(s string) (matched, need bool) {
		space()
		rest := body[i:]
		if strings.HasPrefix(rest, s) {
			i += len(s)
			return true, false
		}
		return false, strings.HasPrefix(s, rest)
	}
	for _, s := range []string{"{", `"name"`, ":"} {
		if m, need := lit(s); !m {
			return "", 0, false, need
		}
	}
	space()
	if i == len(body) {
		return "", 0, false, true
	}
	if body[i] != '"' {
		return "", 0, false, false
	}
	start := i
	for i++; ; i++ {
		if i >= len(body) {
			return "", 0, false, true
		}
		if body[i] == '\\' {
			i++
			continue
		}
		if body[i] == '"' {
			break
		}
	}
	if err := json.Unmarshal([]byte(body[start:i+1]), &name); err != nil || name == "" {
		return "", 0, false, false
	}
	i++
	for _, s := range []string{",", `"arguments"`, ":", "{"} {
		if m, need := lit(s); !m {
			return "", 0, false, need
		}
	}
	return name, i, true, false
}
