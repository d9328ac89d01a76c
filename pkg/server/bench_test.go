package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fm-moe/fm/pkg/engine"
	"github.com/fm-moe/fm/pkg/policy"
	"github.com/fm-moe/fm/pkg/sample"
)

// The server's cost over the engine, and what prefix reuse saves, on the
// trained tiny-code model (docs/PERF.md). tiny-code decodes a token in a few
// milliseconds, so the HTTP and JSON work per token weighs far more than on
// a real model: this is the worst case for the overhead ratio.
//
//	go test -run '^$' -bench . -benchtime 5x ./pkg/server

// benchPrompt is a code prompt of about 150 tokens.
func benchPrompt(b *testing.B) string {
	text, err := os.ReadFile("../../testdata/models/tiny-code/heldout.txt")
	if err != nil {
		b.Fatal(err)
	}
	ids := tinyTok.Encode(string(text))
	return tinyTok.Decode(ids[:150])
}

const benchTokens = 64

// timing is one generation's time to the first token and decode rate.
type timing struct {
	ttft   time.Duration
	tokens int
	decode time.Duration // from the first token to the last
}

func (t *timing) rate() float64 { return float64(t.tokens-1) / t.decode.Seconds() }

// BenchmarkOverhead compares the same greedy generation (150-token raw
// prompt, 64 tokens, no stop token) run by the engine directly — the code
// path of fm-infer run, the ceiling — and through the server on loopback,
// streamed, timed by the client. Sub-benchmarks alternate within each
// iteration so that load from other processes hits both alike.
func BenchmarkOverhead(b *testing.B) {
	prompt := benchPrompt(b)
	ids := tinyTok.Encode(prompt)
	params, err := policy.Resolve(tinyDir, false, greedy)
	if err != nil {
		b.Fatal(err)
	}
	ts := benchServer(b, func(o *Options) { o.StopTokens = nil; o.Generator = tinyEng.NewPrefixCache(0) })
	var eng, srv []timing
	warm := true // the first round maps the weights in: not counted
	for b.Loop() {
		if warm {
			eng, srv, warm = nil, nil, false
			b.ResetTimer()
		}
		// Engine alone.
		var t timing
		start := time.Now()
		var first time.Time
		res, err := tinyEng.Generate(context.Background(), tinyEng.Model.NewState(), ids, engine.GenerateOptions{
			MaxTokens: benchTokens, Sampler: sample.New(params), History: ids,
			Stream: tinyTok.NewStreamDecoder(),
			OnText: func(string) {
				if first.IsZero() {
					first = time.Now()
				}
			},
		})
		if err != nil {
			b.Fatal(err)
		}
		end := time.Now()
		t.ttft, t.decode, t.tokens = first.Sub(start), end.Sub(first), len(res.Tokens)
		eng = append(eng, t)

		// Through the server.
		body, _ := json.Marshal(map[string]any{"prompt": prompt, "max_tokens": benchTokens, "stream": true,
			"stream_options": map[string]any{"include_usage": true}})
		srv = append(srv, stream(b, ts+"/v1/completions", string(body)))
	}
	// Medians: a run slowed by another process's burst does not count.
	report := func(name string, ts []timing) (ttft, rate float64) {
		tt := make([]float64, len(ts))
		rr := make([]float64, len(ts))
		for i, t := range ts {
			tt[i], rr[i] = t.ttft.Seconds()*1e3, t.rate()
		}
		ttft, rate = median(tt), median(rr)
		b.Logf("%-6s TTFT %.2f ms, decode %.1f tok/s (median of %d runs; TTFT %.1f–%.1f ms, decode %.0f–%.0f tok/s)",
			name, ttft, rate, len(ts), slices.Min(tt), slices.Max(tt), slices.Min(rr), slices.Max(rr))
		return ttft, rate
	}
	et, er := report("engine", eng)
	st, sr := report("server", srv)
	b.ReportMetric(st/et, "ttft-ratio")
	b.ReportMetric(sr/er, "decode-ratio")
	b.ReportMetric(st, "server-ttft-ms")
	b.ReportMetric(sr, "server-tok/s")
	b.ReportMetric(et, "engine-ttft-ms")
	b.ReportMetric(er, "engine-tok/s")
}

// BenchmarkPrefixReuse: the time to the first token of a follow-up turn
// after a long conversation (~1500 tokens), with the conversation's state
// reused and with reuse off. Each iteration asks a different follow-up
// question, so reuse always starts from the first turn's state.
func BenchmarkPrefixReuse(b *testing.B) {
	text, err := os.ReadFile("../../testdata/models/tiny-code/heldout.txt")
	if err != nil {
		b.Fatal(err)
	}
	long := tinyTok.Decode(tinyTok.Encode(string(text))[:1500])
	first := []map[string]string{{"role": "user", "content": "Review this code:\n" + long}}
	for _, c := range []struct {
		name string
		mib  int64
	}{{"reuse", 256}, {"no-reuse", 0}} {
		b.Run(c.name, func(b *testing.B) {
			ts := benchServer(b, func(o *Options) { o.Generator = tinyEng.NewPrefixCache(c.mib << 20) })
			msg, _ := json.Marshal(map[string]any{"messages": first, "max_tokens": 8})
			var r chatCompletion
			resp, err := http.Post(ts+"/v1/chat/completions", "application/json", strings.NewReader(string(msg)))
			if err != nil {
				b.Fatal(err)
			}
			json.NewDecoder(resp.Body).Decode(&r)
			resp.Body.Close()
			answer := *r.Choices[0].Message.Content
			var total time.Duration
			var cached int
			i := 0
			for b.Loop() {
				msgs := append(first[:1:1], map[string]string{"role": "assistant", "content": answer},
					map[string]string{"role": "user", "content": fmt.Sprintf("Question %d: what does it return?", i)})
				i++
				body, _ := json.Marshal(map[string]any{"messages": msgs, "max_tokens": 2, "stream": true,
					"stream_options": map[string]any{"include_usage": true}})
				t := stream(b, ts+"/v1/chat/completions", string(body))
				total += t.ttft
				cached = lastCached
			}
			ms := total.Seconds() * 1e3 / float64(i)
			b.ReportMetric(ms, "ttft-ms")
			b.ReportMetric(float64(cached), "cached-tokens")
			b.Logf("%s: TTFT %.1f ms, %d of the prompt's %d tokens reused", c.name, ms, cached, lastPrompt)
		})
	}
}

func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// lastCached is the cached-token count of the latest stream (benchmarks
// run one at a time).
var lastCached, lastPrompt int

// stream posts a streaming request and times it from the client: the first
// chunk with text, the last, and the completion tokens from the usage chunk.
func stream(b *testing.B, url, body string) timing {
	b.Helper()
	start := time.Now()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var t timing
	var first, last time.Time
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || line == "[DONE]" {
			continue
		}
		var c struct {
			Choices []struct {
				Text  string `json:"text"`
				Delta struct {
					Content, ReasoningContent string
				} `json:"delta"`
			} `json:"choices"`
			Usage *usage `json:"usage"`
		}
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			b.Fatal(err)
		}
		if c.Usage != nil {
			t.tokens = c.Usage.CompletionTokens
			lastCached, lastPrompt = c.Usage.PromptTokensDetails.CachedTokens, c.Usage.PromptTokens
		}
		if len(c.Choices) > 0 && (c.Choices[0].Text != "" || c.Choices[0].Delta.Content != "" || c.Choices[0].Delta.ReasoningContent != "") {
			if first.IsZero() {
				first = time.Now()
			}
			last = time.Now()
		}
	}
	if first.IsZero() {
		b.Fatalf("%s: no text streamed", url)
	}
	t.ttft, t.decode = first.Sub(start), last.Sub(first)
	return t
}

// benchServer starts a server for a benchmark and returns its URL.
func benchServer(b *testing.B, edit func(*Options)) string {
	b.Helper()
	o := Options{Model: modelName, ModelDir: tinyDir, Tokenizer: tinyTok,
		StopTokens: policy.StopTokens(tinyEng.Dir.Manifest.Config.EOSTokenIDs, tinyTok), Sampling: greedy, CtxSize: tinyEng.ContextSize()}
	edit(&o)
	s, err := New(o)
	if err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	b.Cleanup(ts.Close)
	return ts.URL
}
