package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/fm-moe/fm/pkg/engine"
	"github.com/fm-moe/fm/pkg/policy"
	"github.com/fm-moe/fm/pkg/sample"
	"github.com/fm-moe/fm/pkg/tokenizer"
)

var (
	errTimeout      = errors.New("request timed out")
	errStopSequence = errors.New("stop sequence generated")
)

func (s *Server) chat(w http.ResponseWriter, r *http.Request) {
	var req chatRequest
	if e := s.decode(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	j, e := s.prepareChat(&req)
	if e != nil {
		writeError(w, e)
		return
	}
	s.run(w, r, j)
}

func (s *Server) completions(w http.ResponseWriter, r *http.Request) {
	var req completionRequest
	if e := s.decode(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	j, e := s.prepareCompletion(&req)
	if e != nil {
		writeError(w, e)
		return
	}
	s.run(w, r, j)
}

// run queues the job, generates, and answers, streaming or whole.
func (s *Server) run(w http.ResponseWriter, r *http.Request, j *job) {
	start := time.Now()
	if s.draining.Load() {
		writeError(w, &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Message: "the server is shutting down"})
		return
	}
	ctx, cancel := context.WithTimeoutCause(r.Context(), s.o.Timeout, errTimeout)
	defer cancel()
	if err := s.queue.acquire(ctx); err != nil {
		switch {
		case errors.Is(err, errQueueFull):
			writeError(w, &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: ptr("server_busy"),
				Message: fmt.Sprintf("%d requests are already waiting (--parallel %d); try again later", s.o.MaxQueue, s.o.Parallel)})
		case errors.Is(err, errTimeout):
			writeError(w, timeoutError(s.o.Timeout, "waiting for a free slot"))
		}
		return // otherwise the client went away
	}
	defer s.queue.release()
	queued := time.Since(start)

	out := &reply{s: s, w: w, j: j, id: randomID(), created: time.Now().Unix()}
	if j.chat {
		out.id = "chatcmpl-" + out.id
	} else {
		out.id = "cmpl-" + out.id
	}
	out.begin()
	genCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	parser := newReplyParser(j.tools, j.specs, j.stops, out.part)
	if j.forced != "" {
		parser.Write(j.forced)
	}
	rs := &replyStream{parser: parser, stop: stop, start: start}
	if j.chat {
		rs.split = policy.NewThinkSplitter(s.o.Tokenizer, j.ids)
	} else {
		rs.dec = s.o.Tokenizer.NewStreamDecoder()
	}
	res, err := s.o.Generator.Generate(genCtx, j.ids, j.marks, engine.GenerateOptions{
		MaxTokens: j.maxTokens,
		Sampler:   sample.New(j.params),
		Stop:      s.o.StopTokens,
		Stream:    rs,
		// The text goes to the parser through rs; Generate only streams
		// when OnText is set.
		OnText: func(string) {},
	})
	if res == nil {
		res = &engine.Result{}
	}
	cause := context.Cause(genCtx)
	switch {
	case err == nil || errors.Is(cause, errStopSequence):
	case r.Context().Err() != nil && s.draining.Load():
		// Serve's grace period ended: say so, in case the client listens.
		out.fail(&apiError{Status: http.StatusServiceUnavailable, Type: "server_error",
			Message: fmt.Sprintf("the server is shutting down; generation stopped after %d tokens", len(res.Tokens))})
		return
	case r.Context().Err() != nil:
		s.logf("%s: client went away after %d tokens; generation stopped", out.id, len(res.Tokens))
		return
	case errors.Is(cause, errTimeout):
		out.fail(timeoutError(s.o.Timeout, fmt.Sprintf("after %d generated tokens", len(res.Tokens))))
		return
	default:
		out.fail(&apiError{Status: http.StatusInternalServerError, Type: "server_error", Message: "generation failed: " + err.Error()})
		return
	}
	parser.Close()
	reason := "length"
	switch {
	case parser.calls > 0:
		reason = "tool_calls"
	case parser.stopped || res.StopReason == engine.StopToken:
		reason = "stop"
	}
	u := usage{PromptTokens: len(j.ids), CompletionTokens: len(res.Tokens), TotalTokens: len(j.ids) + len(res.Tokens)}
	u.PromptTokensDetails.CachedTokens = res.CachedTokens
	out.finish(reason, u)
	s.logf("%s: %d prompt tokens (%d cached), %d generated, %s; queued %v, first text %v, total %v",
		out.id, u.PromptTokens, res.CachedTokens, u.CompletionTokens, reason,
		queued.Round(time.Millisecond), rs.first.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// replyStream is the generation's TextStream: it decodes each token (telling
// reasoning from answer in chat replies) into the reply parser, and stops
// the generation when the parser has seen a stop sequence.
type replyStream struct {
	parser *replyParser
	split  *policy.ThinkSplitter    // chat
	dec    *tokenizer.StreamDecoder // completions: all answer
	stop   context.CancelCauseFunc
	start  time.Time
	first  time.Duration // time to the first token
}

func (r *replyStream) Add(id int) string {
	if r.first == 0 {
		r.first = time.Since(r.start)
	}
	if r.split != nil {
		r.parser.Add(r.split.Add(id))
	} else {
		r.parser.Write(r.dec.Add(id))
	}
	if r.parser.stopped {
		r.stop(errStopSequence)
	}
	return ""
}

func (r *replyStream) Flush() string {
	if r.split != nil {
		r.parser.Add(r.split.Flush())
	} else {
		r.parser.Write(r.dec.Flush())
	}
	return ""
}

func timeoutError(limit time.Duration, when string) *apiError {
	return &apiError{Status: http.StatusGatewayTimeout, Type: "server_error", Code: ptr("timeout"),
		Message: fmt.Sprintf("request timed out (limit %v) %s", limit, when)}
}

// reply writes one response: as server-sent events while it is generated,
// or as one JSON body at the end.
type reply struct {
	s       *Server
	w       http.ResponseWriter
	rc      *http.ResponseController
	j       *job
	id      string
	created int64

	// Whole responses accumulate here.
	content, reasoning strings.Builder
	calls              []toolCall
	callErrors         []string
}

func (o *reply) begin() {
	if !o.j.stream {
		return
	}
	h := o.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	o.w.WriteHeader(http.StatusOK)
	o.rc = http.NewResponseController(o.w)
	if o.j.chat {
		o.event(o.chunk(delta{Role: "assistant", Content: ptr("")}, nil))
	} else {
		o.rc.Flush()
	}
}

// part adds a decided piece of the reply.
func (o *reply) part(p replyPart) {
	if !o.j.stream {
		o.content.WriteString(p.Content)
		o.reasoning.WriteString(p.Reasoning)
		if p.Call != nil {
			o.calls = append(o.calls, *p.Call)
		}
		if p.CallError != "" {
			o.callErrors = append(o.callErrors, p.CallError)
		}
		return
	}
	if !o.j.chat {
		o.event(o.completion(p.Content, nil, nil))
		return
	}
	var d delta
	switch {
	case p.Content != "":
		d.Content = &p.Content
	case p.Reasoning != "":
		d.ReasoningContent = &p.Reasoning
	case p.CallDelta != nil:
		d.ToolCalls = []toolCall{*p.CallDelta}
	case p.Call != nil && p.Streamed:
		return // every piece went out as a CallDelta
	case p.Call != nil:
		d.ToolCalls = []toolCall{*p.Call}
	case p.CallError != "":
		d.ToolCallErrors = []string{p.CallError}
	}
	o.event(o.chunk(d, nil))
}

func (o *reply) finish(reason string, u usage) {
	if o.j.stream {
		if o.j.chat {
			o.event(o.chunk(delta{}, &reason))
			if o.j.includeUsage {
				o.event(chatChunk{ID: o.id, Object: "chat.completion.chunk", Created: o.created, Model: o.s.o.Model, Choices: []chunkChoice{}, Usage: &u})
			}
		} else {
			o.event(o.completion("", &reason, nil))
			if o.j.includeUsage {
				c := o.completion("", nil, &u)
				c.Choices = []completionChoice{}
				o.event(c)
			}
		}
		fmt.Fprint(o.w, "data: [DONE]\n\n")
		o.rc.Flush()
		return
	}
	if !o.j.chat {
		c := o.completion(o.content.String(), &reason, &u)
		writeJSON(o.w, http.StatusOK, c)
		return
	}
	msg := responseMessage{Role: "assistant", ReasoningContent: o.reasoning.String(), ToolCalls: o.calls, ToolCallErrors: o.callErrors}
	if c := o.content.String(); c != "" || len(o.calls) == 0 {
		msg.Content = &c
	}
	for i := range msg.ToolCalls {
		msg.ToolCalls[i].Index = nil // only deltas carry an index
	}
	writeJSON(o.w, http.StatusOK, chatCompletion{ID: o.id, Object: "chat.completion", Created: o.created, Model: o.s.o.Model,
		Choices: []chatChoice{{Message: msg, FinishReason: reason}}, Usage: u})
}

// fail reports an error: as the response, or, once a stream has begun, as a
// final error event (the status line is already sent).
func (o *reply) fail(e *apiError) {
	if !o.j.stream {
		writeError(o.w, e)
		return
	}
	o.event(errorBody{Error: e})
}

func (o *reply) chunk(d delta, reason *string) chatChunk {
	return chatChunk{ID: o.id, Object: "chat.completion.chunk", Created: o.created, Model: o.s.o.Model,
		Choices: []chunkChoice{{Delta: d, FinishReason: reason}}}
}

func (o *reply) completion(text string, reason *string, u *usage) completion {
	return completion{ID: o.id, Object: "text_completion", Created: o.created, Model: o.s.o.Model,
		Choices: []completionChoice{{Text: text, FinishReason: reason}}, Usage: u}
}

// event writes one server-sent event and flushes it to the client. A write
// error means the client is gone; the request context says so too, and the
// generation stops at its next token.
func (o *reply) event(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	if _, err := fmt.Fprintf(o.w, "data: %s\n\n", b); err == nil {
		o.rc.Flush()
	}
}
