package server

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fm-moe/fm/pkg/engine"
	"github.com/fm-moe/fm/pkg/tokenizer"
)

// TestPrefixReuseIdentity: a conversation continued over HTTP reuses the
// model state of its earlier turns (attention KV cache and GatedDeltaNet
// state) and replies byte for byte what a server without that state replies;
// a conversation that rewrites an earlier answer reuses only the part before
// the rewrite.
func TestPrefixReuseIdentity(t *testing.T) {
	warm, _ := newServer(t, nil)
	chat := func(url string, msgs []map[string]string) (string, usage) {
		t.Helper()
		b, _ := json.Marshal(map[string]any{"messages": msgs, "max_tokens": 32})
		var r chatCompletion
		if code, body := post(t, url+"/v1/chat/completions", string(b), &r); code != 200 {
			t.Fatalf("%d %s", code, body)
		}
		return *r.Choices[0].Message.Content, r.Usage
	}
	msg := func(role, content string) map[string]string {
		return map[string]string{"role": role, "content": content}
	}
	turn1 := []map[string]string{msg("system", "You are a Python expert."), msg("user", "def quicksort(xs):")}
	a1, u1 := chat(warm.URL, turn1)
	if u1.PromptTokensDetails.CachedTokens != 0 {
		t.Errorf("first request reused %d tokens", u1.PromptTokensDetails.CachedTokens)
	}
	for _, c := range []struct {
		name   string
		msgs   []map[string]string
		reused func(int) bool
	}{
		{"continued", append(turn1[:2:2], msg("assistant", a1), msg("user", "Now add type hints.")),
			// Everything the first request fed: its prompt and all of its
			// reply but the last token (which was sampled, not fed).
			func(n int) bool { return n == u1.PromptTokens+u1.CompletionTokens-1 }},
		// Another answer than the model's: back to the state at the end of
		// the first prompt (ChatML renders the assistant turn's opening
		// exactly as the generation prompt).
		{"answer rewritten", append(turn1[:2:2], msg("assistant", "pass"), msg("user", "Why?")),
			func(n int) bool { return n == u1.PromptTokens }},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, u := chat(warm.URL, c.msgs)
			if !c.reused(u.PromptTokensDetails.CachedTokens) {
				t.Errorf("reused %d of %d prompt tokens (the first turn had %d)", u.PromptTokensDetails.CachedTokens, u.PromptTokens, u1.PromptTokens)
			}
			cold, _ := newServer(t, nil)
			want, uc := chat(cold.URL, c.msgs)
			if uc.PromptTokensDetails.CachedTokens != 0 {
				t.Fatalf("cold server reused %d tokens", uc.PromptTokensDetails.CachedTokens)
			}
			if got != want {
				t.Errorf("with reuse: %q\nfresh:      %q", got, want)
			}
			t.Logf("%d of %d prompt tokens reused; reply identical (%d bytes)", u.PromptTokensDetails.CachedTokens, u.PromptTokens, len(got))
		})
	}
}

// TestRealModelWithTools: the HTTP path with tools and reasoning on the
// real model (its template forced to Qwen3.5, so the prompt declares the
// tools and opens <think>): a well-formed answer, whatever the tiny model
// makes of it.
func TestRealModelWithTools(t *testing.T) {
	ts, _ := newServer(t, func(o *Options) { o.ChatFormat = tokenizer.ChatQwen35 })
	var r chatCompletion
	code, body := post(t, ts.URL+"/v1/chat/completions", `{"messages": [{"role": "user", "content": "list files"}], "max_tokens": 12,
		"tools": [{"type": "function", "function": {"name": "ls", "parameters": {"type": "object", "properties": {"dir": {"type": "string"}}}}}]}`, &r)
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	c := r.Choices[0]
	if c.FinishReason != "length" && c.FinishReason != "stop" && c.FinishReason != "tool_calls" {
		t.Errorf("finish reason %q", c.FinishReason)
	}
	if r.Usage.CompletionTokens < 1 || r.Usage.CompletionTokens > 12 {
		t.Errorf("usage %+v", r.Usage)
	}
	// The prompt opened <think>, so the reply starts as reasoning.
	if c.Message.ReasoningContent == "" {
		t.Errorf("no reasoning_content: %s", body)
	}
	// Thinking off: the template closes the block, the reply is content.
	var off chatCompletion
	code, body = post(t, ts.URL+"/v1/chat/completions", `{"messages": [{"role": "user", "content": "list files"}], "max_tokens": 12,
		"chat_template_kwargs": {"enable_thinking": false}}`, &off)
	if code != 200 || off.Choices[0].Message.ReasoningContent != "" || off.Choices[0].Message.Content == nil {
		t.Errorf("thinking off: %d %s", code, body)
	}
}

// blockingGen is a model that never finishes on its own: it waits for its
// context (or release) and reports when it started and how it ended.
type blockingGen struct {
	started chan struct{}
	release chan struct{}
	ended   chan error
}

func (g *blockingGen) Generate(ctx context.Context, ids, marks []int, opts engine.GenerateOptions) (*engine.Result, error) {
	g.started <- struct{}{}
	select {
	case <-ctx.Done():
		g.ended <- ctx.Err()
		return &engine.Result{}, ctx.Err()
	case <-g.release:
		g.ended <- nil
		return &engine.Result{Tokens: []int{1}, StopReason: engine.StopLength}, nil
	}
}

func newBlocking() *blockingGen {
	return &blockingGen{started: make(chan struct{}, 4), release: make(chan struct{}), ended: make(chan error, 4)}
}

// TestTimeout: a request that outlives its deadline gets a 504 and its
// generation stops.
func TestTimeout(t *testing.T) {
	gen := newBlocking()
	ts, _ := newServer(t, func(o *Options) { o.Generator = gen; o.Timeout = 200 * time.Millisecond })
	code, body := post(t, ts.URL+"/v1/completions", `{"prompt": "x"}`, nil)
	if code != http.StatusGatewayTimeout || !strings.Contains(body, `"code":"timeout"`) {
		t.Errorf("%d %s", code, body)
	}
	if err := <-gen.ended; err == nil {
		t.Error("the generation went on after the timeout")
	}
}

// TestGracefulShutdown: when Serve's context ends, a running request may
// finish within the grace period; one that does not is stopped, and Serve
// returns. A negative grace period stops it at once.
func TestGracefulShutdown(t *testing.T) {
	for _, c := range []struct {
		finish bool
		grace  time.Duration
	}{{true, 300 * time.Millisecond}, {false, 300 * time.Millisecond}, {false, -1}} {
		finish := c.finish
		gen := newBlocking()
		s, err := New(Options{Model: modelName, ModelDir: tinyDir, Tokenizer: tinyTok, Generator: gen,
			CtxSize: 4096, ShutdownGrace: c.grace})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, stop := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- s.Serve(ctx, ln) }()
		status := make(chan int, 1)
		go func() {
			resp, err := http.Post("http://"+ln.Addr().String()+"/v1/completions", "application/json", strings.NewReader(`{"prompt": "x"}`))
			if err != nil {
				status <- -1
				return
			}
			resp.Body.Close()
			status <- resp.StatusCode
		}()
		<-gen.started
		stopped := time.Now()
		stop()
		if finish {
			time.Sleep(50 * time.Millisecond)
			close(gen.release)
		}
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("finish=%v: Serve: %v", finish, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("finish=%v: Serve did not return", finish)
		}
		if c.grace < 0 && time.Since(stopped) > 5*time.Second { // not the 30 s default
			t.Errorf("grace %v: Serve took %v to stop a running request", c.grace, time.Since(stopped))
		}
		ended := <-gen.ended
		code := <-status
		if finish && (ended != nil || code != 200) {
			t.Errorf("a request finishing within the grace period: generation %v, status %d", ended, code)
		}
		if !finish && (ended == nil || code != http.StatusServiceUnavailable) {
			t.Errorf("a request outliving the grace period: generation %v, status %d (want it stopped, 503)", ended, code)
		}
		if _, err := http.Get("http://" + ln.Addr().String() + "/health"); err == nil {
			t.Error("still accepting after shutdown")
		}
	}
}

// TestStopSequence: a stop sequence ends the reply before it, with finish
// reason "stop", and stops the generation (whole and streamed).
func TestStopSequence(t *testing.T) {
	stop, _ := tinyTok.TokenID("<|im_end|>")
	gen := &stubGen{tok: tinyTok, stop: stop, reply: func(string) string { return "one two STOP three four five six" }}
	ts, _ := newServer(t, func(o *Options) { o.Generator = gen })
	var r chatCompletion
	code, body := post(t, ts.URL+"/v1/chat/completions", `{"messages": [{"role": "user", "content": "count"}], "stop": "STOP"}`, &r)
	if code != 200 || *r.Choices[0].Message.Content != "one two " || r.Choices[0].FinishReason != "stop" {
		t.Errorf("%d %s", code, body)
	}
	// The stub saw the cancellation: fewer tokens than the whole reply.
	if n := r.Usage.CompletionTokens; n >= len(tinyTok.Encode("one two STOP three four five six")) {
		t.Errorf("%d tokens generated: the stop sequence did not stop the generation", n)
	}
	code, body = post(t, ts.URL+"/v1/chat/completions", `{"messages": [{"role": "user", "content": "count"}], "stop": ["STOP"], "stream": true}`, nil)
	if code != 200 || !strings.Contains(body, `"content":" two"`) || strings.Contains(body, "STOP") || strings.Contains(body, "three") ||
		!strings.Contains(body, `"finish_reason":"stop"`) || !strings.HasSuffix(body, "data: [DONE]\n\n") {
		t.Errorf("streamed: %d %s", code, body)
	}
}
