package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Qwen models write a tool call as a <tool_call>…</tool_call> block, in one
// of two bodies:
//
//   - hermes JSON (Qwen3, Qwen3-2507, Qwen3-Next):
//     {"name": "get_weather", "arguments": {"city": "Paris"}}
//   - XML (Qwen3.5, Qwen3-Coder):
//     <function=get_weather>
//     <parameter=city>
//     Paris
//     </parameter>
//     </function>
//
// parseToolCall accepts either (a model's template names one, but the body
// says which it is) and returns the function name and its arguments as the
// API's JSON-encoded object, keys in the generated order.

const (
	toolCallOpen  = "<tool_call>"
	toolCallClose = "</tool_call>"
)

// toolSpec is what the parser needs to know about a declared function.
type toolSpec struct {
	name string
	// types maps a parameter to its JSON-schema type ("" when not declared).
	types map[string]string
}

// toolSpecs reads the declared functions' names and parameter types.
func toolSpecs(tools []tool) map[string]toolSpec {
	specs := map[string]toolSpec{}
	for _, t := range tools {
		s := toolSpec{name: t.Function.Name, types: map[string]string{}}
		var schema struct {
			Properties map[string]struct {
				Type any `json:"type"`
			} `json:"properties"`
		}
		if json.Unmarshal(t.Function.Parameters, &schema) == nil {
			for k, p := range schema.Properties {
				if typ, ok := p.Type.(string); ok {
					s.types[k] = typ
				}
			}
		}
		specs[s.name] = s
	}
	return specs
}

// parseToolCall parses the body of one <tool_call> block. With declared
// tools, the function must be one of them.
func parseToolCall(body string, specs map[string]toolSpec) (name, args string, err error) {
	body = strings.TrimSpace(body)
	if strings.HasPrefix(body, "<function=") {
		name, args, err = parseXMLCall(body, specs)
	} else {
		name, args, err = parseJSONCall(body)
	}
	if err != nil {
		return "", "", err
	}
	if len(specs) > 0 {
		if _, ok := specs[name]; !ok {
			return "", "", fmt.Errorf("call to %q, which is not among the request's tools", name)
		}
	}
	return name, args, nil
}

func parseJSONCall(body string) (string, string, error) {
	var call struct {
		Name      *string         `json:"name"`
		Arguments json.RawMessage `json:"arguments"`
	}
	dec := json.NewDecoder(strings.NewReader(body))
	if err := dec.Decode(&call); err != nil {
		return "", "", fmt.Errorf("tool call is not valid JSON: %v", err)
	}
	if dec.More() {
		return "", "", errors.New("tool call: text after the JSON object")
	}
	if call.Name == nil || *call.Name == "" {
		return "", "", errors.New(`tool call: no "name"`)
	}
	args := bytes.TrimSpace(call.Arguments)
	if len(args) == 0 || string(args) == "null" {
		return *call.Name, "{}", nil
	}
	if args[0] == '"' {
		// Some models write the arguments as a JSON-encoded string.
		var s string
		if err := json.Unmarshal(args, &s); err != nil {
			return "", "", err
		}
		args = []byte(strings.TrimSpace(s))
	}
	if len(args) == 0 || args[0] != '{' || !json.Valid(args) {
		return "", "", fmt.Errorf("tool call %q: arguments are not a JSON object", *call.Name)
	}
	var out bytes.Buffer
	if err := json.Compact(&out, args); err != nil {
		return "", "", err
	}
	return *call.Name, out.String(), nil
}

func parseXMLCall(body string, specs map[string]toolSpec) (string, string, error) {
	rest := strings.TrimPrefix(body, "<function=")
	name, rest, ok := strings.Cut(rest, ">")
	name = strings.TrimSpace(name)
	if !ok || name == "" || strings.ContainsAny(name, "<\n") {
		return "", "", errors.New("tool call: malformed <function=NAME> tag")
	}
	rest = strings.TrimSpace(rest)
	if !strings.HasSuffix(rest, "</function>") {
		return "", "", fmt.Errorf("tool call %q: no closing </function>", name)
	}
	rest = strings.TrimSpace(strings.TrimSuffix(rest, "</function>"))
	types := specs[name].types
	var out bytes.Buffer
	out.WriteByte('{')
	seen := map[string]bool{}
	for rest != "" {
		if !strings.HasPrefix(rest, "<parameter=") {
			return "", "", fmt.Errorf("tool call %q: unexpected text %q (want <parameter=KEY>)", name, clip(rest))
		}
		key, after, ok := strings.Cut(rest[len("<parameter="):], ">")
		if !ok || key == "" || strings.ContainsAny(key, "<\n") {
			return "", "", fmt.Errorf("tool call %q: malformed <parameter=KEY> tag", name)
		}
		value, after, ok := strings.Cut(after, "</parameter>")
		if !ok {
			return "", "", fmt.Errorf("tool call %q: parameter %q has no closing </parameter>", name, key)
		}
		if seen[key] {
			return "", "", fmt.Errorf("tool call %q: parameter %q given twice", name, key)
		}
		seen[key] = true
		// The template writes "<parameter=KEY>\nVALUE\n</parameter>".
		value = strings.TrimPrefix(value, "\n")
		value = strings.TrimSuffix(value, "\n")
		js, err := xmlValue(value, types[key])
		if err != nil {
			return "", "", fmt.Errorf("tool call %q: parameter %q: %v", name, key, err)
		}
		if out.Len() > 1 {
			out.WriteByte(',')
		}
		kb, _ := json.Marshal(key)
		out.Write(kb)
		out.WriteByte(':')
		out.Write(js)
		rest = strings.TrimSpace(after)
	}
	out.WriteByte('}')
	return name, out.String(), nil
}

// xmlValue converts an XML parameter's text to JSON by the declared type.
// The template prints objects and arrays as JSON and scalars with Python's
// str() (so booleans as True/False); without a declared type a value that is
// valid JSON is taken as such, anything else as a string.
func xmlValue(v, typ string) ([]byte, error) {
	str := func() ([]byte, error) { return json.Marshal(v) }
	t := strings.TrimSpace(v)
	switch typ {
	case "string":
		return str()
	case "integer":
		if _, err := strconv.ParseInt(t, 10, 64); err != nil {
			return nil, fmt.Errorf("%q is not an integer", clip(t))
		}
		return []byte(t), nil
	case "number":
		if !json.Valid([]byte(t)) || strings.ContainsAny(t, `"{[tfn`) {
			return nil, fmt.Errorf("%q is not a number", clip(t))
		}
		return []byte(t), nil
	case "boolean":
		switch t {
		case "true", "True":
			return []byte("true"), nil
		case "false", "False":
			return []byte("false"), nil
		}
		return nil, fmt.Errorf("%q is not a boolean", clip(t))
	case "object", "array":
		if !json.Valid([]byte(t)) || (typ == "object") != strings.HasPrefix(t, "{") {
			return nil, fmt.Errorf("%q is not a JSON %s", clip(t), typ)
		}
		var out bytes.Buffer
		err := json.Compact(&out, []byte(t))
		return out.Bytes(), err
	}
	switch t {
	case "True":
		return []byte("true"), nil
	case "False":
		return []byte("false"), nil
	case "None":
		return []byte("null"), nil
	}
	if t != "" && json.Valid([]byte(t)) {
		var out bytes.Buffer
		err := json.Compact(&out, []byte(t))
		return out.Bytes(), err
	}
	return str()
}

// clip shortens text quoted in an error message.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
