package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/fm-moe/fm/pkg/engine"
	"github.com/fm-moe/fm/pkg/internal/prepare"
	"github.com/fm-moe/fm/pkg/policy"
	"github.com/fm-moe/fm/pkg/sample"
	"github.com/fm-moe/fm/pkg/tokenizer"
)

// The integration tests run the trained tiny-code model (GatedDeltaNet and
// full-attention layers), converted once for the package at 16 bits.
var (
	tinyDir string
	tinyEng *engine.Engine
	tinyTok *tokenizer.Tokenizer
)

const modelName = "tiny-code"

func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "fm-server-test-")
		if err != nil {
			panic(err)
		}
		defer os.RemoveAll(dir)
		if err := prepare.Into("../../testdata/models/tiny-code", dir, 16); err != nil {
			panic(err)
		}
		tinyDir = dir
		if tinyEng, err = engine.Open(context.Background(), engine.Options{Dir: dir}); err != nil {
			panic(err)
		}
		defer tinyEng.Close()
		if tinyTok, err = tokenizer.Load(dir); err != nil {
			panic(err)
		}
		return m.Run()
	}())
}

// greedy are the sampling settings of the tests: temperature 0 (the
// repetition penalty of the defaults still applies, as in fm-infer run).
var greedy = policy.Sampling{Temperature: ptr[float32](0)}

// newServer starts a server on the real model (fresh prefix cache) on a
// loopback listener; edit adjusts the options.
func newServer(t *testing.T, edit func(*Options)) (*httptest.Server, *Server) {
	t.Helper()
	o := Options{
		Model:      modelName,
		ModelDir:   tinyDir,
		Tokenizer:  tinyTok,
		Generator:  tinyEng.NewPrefixCache(256 << 20),
		StopTokens: policy.StopTokens(tinyEng.Dir.Manifest.Config.EOSTokenIDs, tinyTok),
		Sampling:   greedy,
		CtxSize:    tinyEng.ContextSize(),
	}
	if edit != nil {
		edit(&o)
	}
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts, s
}

// post sends a JSON body and decodes the JSON answer into out (when not nil).
func post(t *testing.T, url, body string, out any) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s: %v\n%s", url, err, b)
		}
	}
	return resp.StatusCode, string(b)
}

// engineReply is what fm-infer run generates for a chat prompt: the
// engine on a fresh state with the same settings, decoded.
func engineReply(t *testing.T, msgs []tokenizer.Message, maxTokens int) (string, int) {
	t.Helper()
	text, err := tinyTok.FormatChat(msgs, tokenizer.ChatOptions{AddGenerationPrompt: true, EnableThinking: true})
	if err != nil {
		t.Fatal(err)
	}
	ids := tinyTok.Encode(text)
	p, err := policy.Resolve(tinyDir, false, greedy)
	if err != nil {
		t.Fatal(err)
	}
	stop := policy.StopTokens(tinyEng.Dir.Manifest.Config.EOSTokenIDs, tinyTok)
	res, err := tinyEng.Generate(context.Background(), tinyEng.Model.NewState(), ids, engine.GenerateOptions{
		MaxTokens: maxTokens, Sampler: sample.New(p), Stop: stop, History: ids})
	if err != nil {
		t.Fatal(err)
	}
	toks := res.Tokens
	if res.StopReason == engine.StopToken {
		toks = toks[:len(toks)-1]
	}
	return tinyTok.Decode(toks), len(ids)
}

// TestRawHTTPErrors: malformed and invalid requests get the OpenAI error
// shape with the right status, naming what was wrong.
func TestRawHTTPErrors(t *testing.T) {
	ts, _ := newServer(t, func(o *Options) { o.MaxBodyBytes = 2048; o.CtxSize = 64 })
	keyed, _ := newServer(t, func(o *Options) { o.APIKey = "sekrit" })
	user := `"messages": [{"role": "user", "content": "hi"}]`
	for _, c := range []struct {
		name, method, url, body, auth string
		status                        int
		param, code, msg              string
	}{
		{name: "malformed JSON", body: `{"messages": [`, status: 400, msg: "malformed JSON"},
		{name: "syntax error", body: `{"messages": [}`, status: 400, msg: "malformed JSON at byte"},
		{name: "empty body", body: ``, status: 400, msg: "empty request body"},
		{name: "two objects", body: `{` + user + `} {}`, status: 400, msg: "text after the JSON object"},
		{name: "messages not an array", body: `{"messages": "hi"}`, status: 400, param: "messages", msg: "want an array"},
		{name: "max_tokens a string", body: `{` + user + `, "max_tokens": "ten"}`, status: 400, param: "max_tokens", msg: "got a JSON string, want a number"},
		{name: "temperature a string", body: `{` + user + `, "temperature": "hot"}`, status: 400, param: "temperature"},
		{name: "stream not a boolean", body: `{` + user + `, "stream": 1}`, status: 400, param: "stream"},
		{name: "content an object", body: `{"messages": [{"role": "user", "content": {"a": 1}}]}`, status: 400, msg: "content"},
		{name: "image part", body: `{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}`, status: 400, msg: "only text parts"},
		{name: "oversized body", body: `{` + user + `, "x": "` + strings.Repeat("a", 4096) + `"}`, status: 413, code: "request_too_large", msg: "larger than 2048 bytes"},
		{name: "unknown model", body: `{"model": "gpt-5", ` + user + `}`, status: 404, param: "model", code: "model_not_found", msg: `"gpt-5" does not exist`},
		{name: "unknown model in the path", method: "GET", url: "/v1/models/gpt-5", status: 404, code: "model_not_found"},
		{name: "no messages", body: `{"messages": []}`, status: 400, param: "messages"},
		{name: "bad role", body: `{"messages": [{"role": "wizard", "content": "x"}]}`, status: 400, param: "messages[0].role"},
		{name: "n above 1", body: `{` + user + `, "n": 2}`, status: 400, param: "n"},
		{name: "negative temperature", body: `{` + user + `, "temperature": -1}`, status: 400, msg: "temperature"},
		{name: "top_p above 1", body: `{` + user + `, "top_p": 1.5}`, status: 400, msg: "top_p"},
		{name: "max_tokens zero", body: `{` + user + `, "max_tokens": 0}`, status: 400, param: "max_tokens", msg: "at least 1"},
		{name: "max_tokens beyond the context", body: `{` + user + `, "max_tokens": 100}`, status: 400, param: "max_tokens", code: "context_length_exceeded", msg: "lower max_tokens to at most"},
		{name: "prompt beyond the context", body: `{"messages": [{"role": "user", "content": "` + strings.Repeat("word ", 80) + `"}]}`, status: 400, code: "context_length_exceeded", msg: "--ctx-size"},
		{name: "stop list too long", body: `{` + user + `, "stop": ["a", "b", "c", "d", "e"]}`, status: 400, param: "stop"},
		{name: "stop wrong type", body: `{` + user + `, "stop": 5}`, status: 400, msg: "stop"},
		{name: "tools on a template without tools", body: `{` + user + `, "tools": [{"type": "function", "function": {"name": "f"}}]}`, status: 400, param: "tools", msg: "no tool calling"},
		{name: "tool_choice without tools", body: `{` + user + `, "tool_choice": "required"}`, status: 400, param: "tool_choice"},
		{name: "bad tool_choice", body: `{` + user + `, "tool_choice": "always"}`, status: 400, msg: "tool_choice"},
		{name: "tool call arguments not JSON", body: `{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]}`,
			status: 400, param: "messages[1].tool_calls[0].function.arguments"},
		{name: "logprobs", body: `{` + user + `, "logprobs": true}`, status: 400, param: "logprobs"},
		{name: "json mode", body: `{` + user + `, "response_format": {"type": "json_object"}}`, status: 400, param: "response_format"},
		{name: "completion prompt batch", url: "/v1/completions", body: `{"prompt": ["a", "b"]}`, status: 400, msg: "one prompt per request"},
		{name: "completion echo", url: "/v1/completions", body: `{"prompt": "a", "echo": true}`, status: 400, param: "echo"},
		{name: "unknown route", method: "GET", url: "/v1/engines", status: 404, msg: "no route"},
		{name: "wrong method", method: "GET", url: "/v1/chat/completions", status: 405},
		{name: "missing API key", url: "keyed", body: `{` + user + `}`, status: 401, code: "invalid_api_key"},
		{name: "wrong API key", url: "keyed", body: `{` + user + `}`, auth: "Bearer guess", status: 401, code: "invalid_api_key"},
	} {
		t.Run(c.name, func(t *testing.T) {
			method, url := c.method, ts.URL+"/v1/chat/completions"
			if method == "" {
				method = "POST"
			}
			switch {
			case c.url == "keyed":
				url = keyed.URL + "/v1/chat/completions"
			case c.url != "":
				url = ts.URL + c.url
			}
			req, _ := http.NewRequest(method, url, strings.NewReader(c.body))
			if c.auth != "" {
				req.Header.Set("Authorization", c.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.status, b)
			}
			var e errorBody
			if err := json.Unmarshal(b, &e); err != nil || e.Error == nil || e.Error.Message == "" || e.Error.Type == "" {
				t.Fatalf("not an OpenAI error body: %s", b)
			}
			if c.param != "" && (e.Error.Param == nil || *e.Error.Param != c.param) {
				t.Errorf("param %v, want %q: %s", e.Error.Param, c.param, b)
			}
			if c.code != "" && (e.Error.Code == nil || *e.Error.Code != c.code) {
				t.Errorf("code %v, want %q: %s", e.Error.Code, c.code, b)
			}
			if !strings.Contains(e.Error.Message, c.msg) {
				t.Errorf("message %q does not say %q", e.Error.Message, c.msg)
			}
		})
	}
	// The right key opens the door; /health needs none.
	req, _ := http.NewRequest("GET", keyed.URL+"/v1/models", nil)
	req.Header.Set("Authorization", "Bearer sekrit")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("models with the right key: %v %v", resp, err)
	}
	if resp, err := http.Get(keyed.URL + "/health"); err != nil || resp.StatusCode != 200 {
		t.Errorf("health: %v %v", resp, err)
	}
}

// TestConcurrentRequests: 20 requests at once on 2 slots all succeed, and
// each gets exactly what it gets alone (greedy).
func TestConcurrentRequests(t *testing.T) {
	ts, srv := newServer(t, func(o *Options) { o.Parallel = 2 })
	prompts := []string{"def add(a, b):", "import os\n", "class Stack:", "for i in range(10):"}
	body := func(p string) string {
		b, _ := json.Marshal(map[string]any{"prompt": p, "max_tokens": 8, "temperature": 0})
		return string(b)
	}
	alone := map[string]string{}
	for _, p := range prompts {
		var c completion
		if code, b := post(t, ts.URL+"/v1/completions", body(p), &c); code != 200 {
			t.Fatalf("%d %s", code, b)
		}
		alone[p] = c.Choices[0].Text
	}
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := prompts[i%len(prompts)]
			resp, err := http.Post(ts.URL+"/v1/completions", "application/json", strings.NewReader(body(p)))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			var c completion
			if err := json.NewDecoder(resp.Body).Decode(&c); err != nil || resp.StatusCode != 200 {
				errs <- fmt.Errorf("request %d: status %d, %v", i, resp.StatusCode, err)
				return
			}
			if got := c.Choices[0].Text; got != alone[p] {
				errs <- fmt.Errorf("request %d (%q): %q, alone %q", i, p, got, alone[p])
			}
			if c.Usage == nil || c.Usage.CompletionTokens == 0 || c.Usage.PromptTokens == 0 {
				errs <- fmt.Errorf("request %d: usage %+v", i, c.Usage)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if r, w := srv.queue.load(); r != 0 || w != 0 {
		t.Errorf("after the burst: %d running, %d waiting", r, w)
	}
}

// recorder wraps a Generator and reports each generation's outcome.
type recorder struct {
	Generator
	started chan struct{}
	done    chan genOutcome
}

type genOutcome struct {
	res *engine.Result
	err error
}

func (r *recorder) Generate(ctx context.Context, ids, marks []int, opts engine.GenerateOptions) (*engine.Result, error) {
	r.started <- struct{}{}
	res, err := r.Generator.Generate(ctx, ids, marks, opts)
	r.done <- genOutcome{res, err}
	return res, err
}

// TestDisconnectStopsGeneration: a client that goes away mid-stream stops
// its generation at the next token.
func TestDisconnectStopsGeneration(t *testing.T) {
	rec := &recorder{started: make(chan struct{}, 1), done: make(chan genOutcome, 1)}
	const max = 3000
	ts, _ := newServer(t, func(o *Options) {
		rec.Generator = o.Generator
		o.Generator = rec
		o.StopTokens = nil // nothing ends it early but the client
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", ts.URL+"/v1/completions",
		strings.NewReader(fmt.Sprintf(`{"prompt": "def main():", "max_tokens": %d, "stream": true}`, max)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	<-rec.started
	hangUp(t, resp, 5, cancel)
	out := <-rec.done
	if out.err == nil || !strings.Contains(out.err.Error(), "context canceled") {
		t.Errorf("generation ended with %v, want context canceled", out.err)
	}
	if n := len(out.res.Tokens); n >= max || n < 5 {
		t.Errorf("generated all %d tokens after the client left", n)
	} else {
		t.Logf("stopped after %d of %d tokens", n, max)
	}
}

// hangUp reads n events of a streamed response, then disconnects (cancel
// ends the request's context).
func hangUp(t *testing.T, resp *http.Response, n int, cancel context.CancelFunc) {
	t.Helper()
	br := bufio.NewReader(resp.Body)
	for events := 0; events < n; {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(line, "data: {") {
			events++
		}
	}
	cancel()
	resp.Body.Close()
}
