package server

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestParseToolCall(t *testing.T) {
	var weather tool
	if err := json.Unmarshal([]byte(`{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object",
		"properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "metric": {"type": "boolean"},
		"temp": {"type": "number"}, "opts": {"type": "object"}, "tags": {"type": "array"}}}}}`), &weather); err != nil {
		t.Fatal(err)
	}
	specs := toolSpecs([]tool{weather})
	for _, c := range []struct {
		name, body string
		specs      map[string]toolSpec
		wantName   string
		wantArgs   string
		wantErr    string
	}{
		{name: "hermes", body: "\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 3}}\n",
			specs: specs, wantName: "get_weather", wantArgs: `{"city":"Paris","days":3}`},
		{name: "hermes key order kept", body: `{"name": "f", "arguments": {"z": 1, "a": {"y": [1, 2]}}}`,
			wantName: "f", wantArgs: `{"z":1,"a":{"y":[1,2]}}`},
		{name: "hermes string arguments", body: `{"name": "f", "arguments": "{\"a\": 1}"}`, wantName: "f", wantArgs: `{"a":1}`},
		{name: "hermes no arguments", body: `{"name": "f"}`, wantName: "f", wantArgs: `{}`},
		{name: "xml typed", body: "\n<function=get_weather>\n<parameter=city>\nNew York\n</parameter>\n<parameter=days>\n3\n</parameter>\n" +
			"<parameter=metric>\nTrue\n</parameter>\n<parameter=temp>\n-2.5\n</parameter>\n<parameter=opts>\n{\"a\": [1]}\n</parameter>\n" +
			"<parameter=tags>\n[\"x\"]\n</parameter>\n</function>\n",
			specs: specs, wantName: "get_weather", wantArgs: `{"city":"New York","days":3,"metric":true,"temp":-2.5,"opts":{"a":[1]},"tags":["x"]}`},
		{name: "xml string stays a string", body: "<function=get_weather>\n<parameter=city>\n42\n</parameter>\n</function>",
			specs: specs, wantName: "get_weather", wantArgs: `{"city":"42"}`},
		{name: "xml multi-line value", body: "<function=write>\n<parameter=text>\nline 1\nline 2\n</parameter>\n</function>",
			wantName: "write", wantArgs: `{"text":"line 1\nline 2"}`},
		{name: "xml untyped values", body: "<function=f>\n<parameter=n>\n7\n</parameter>\n<parameter=b>\nFalse\n</parameter>\n<parameter=s>\nhi there\n</parameter>\n</function>",
			wantName: "f", wantArgs: `{"n":7,"b":false,"s":"hi there"}`},
		{name: "xml no parameters", body: "<function=now>\n</function>", wantName: "now", wantArgs: `{}`},

		{name: "not json", body: `{"name": "f", "arguments": {"a": 1}`, wantErr: "not valid JSON"},
		{name: "no name", body: `{"arguments": {}}`, wantErr: `no "name"`},
		{name: "arguments not an object", body: `{"name": "f", "arguments": [1]}`, wantErr: "not a JSON object"},
		{name: "trailing text", body: `{"name": "f"} and more`, wantErr: "text after"},
		{name: "unknown tool", body: `{"name": "launch", "arguments": {}}`, specs: specs, wantErr: "not among the request's tools"},
		{name: "xml unclosed function", body: "<function=f>\n<parameter=a>\n1\n</parameter>\n", wantErr: "no closing </function>"},
		{name: "xml unclosed parameter", body: "<function=f>\n<parameter=a>\n1\n</function>", wantErr: "no closing </parameter>"},
		{name: "xml bad integer", body: "<function=get_weather>\n<parameter=days>\nthree\n</parameter>\n</function>", specs: specs, wantErr: "not an integer"},
		{name: "xml bad boolean", body: "<function=get_weather>\n<parameter=metric>\nyes\n</parameter>\n</function>", specs: specs, wantErr: "not a boolean"},
		{name: "xml stray text", body: "<function=f>\nhello\n</function>", wantErr: "unexpected text"},
		{name: "xml repeated parameter", body: "<function=f>\n<parameter=a>\n1\n</parameter>\n<parameter=a>\n2\n</parameter>\n</function>", wantErr: "given twice"},
	} {
		t.Run(c.name, func(t *testing.T) {
			name, args, err := parseToolCall(c.body, c.specs)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if name != c.wantName || args != c.wantArgs {
				t.Errorf("got %s(%s), want %s(%s)", name, args, c.wantName, c.wantArgs)
			}
			if !json.Valid([]byte(args)) {
				t.Errorf("arguments %q are not valid JSON", args)
			}
		})
	}
}
