package server

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fm-moe/fm/pkg/engine"
	"github.com/fm-moe/fm/pkg/policy"
	"github.com/fm-moe/fm/pkg/tokenizer"
)

// Generator runs one generation over a whole prompt (pkg/engine's
// PrefixCache): marks are turn boundaries inside ids worth keeping a state
// snapshot at; Result.CachedTokens reports the prompt tokens it reused.
type Generator interface {
	Generate(ctx context.Context, ids []int, marks []int, opts engine.GenerateOptions) (*engine.Result, error)
}

// Options configure a Server. Model, ModelDir, Tokenizer, Generator and
// CtxSize are required.
type Options struct {
	// Model is the name clients use (listed by /v1/models); requests naming
	// another model get a 404.
	Model     string
	Tokenizer *tokenizer.Tokenizer
	Generator Generator
	// StopTokens end a generation (the config's eos ids and the chat end
	// tokens).
	StopTokens []int
	// ModelDir is the prepared directory, whose generation_config.json
	// holds the model's sampling defaults ("": none).
	ModelDir string
	// Sampling holds the server's sampling settings (its command-line
	// flags): over the model's defaults, under each request's.
	Sampling policy.Sampling
	// ChatFormat overrides the format detected from the model's template.
	ChatFormat tokenizer.ChatFormat
	// CtxSize is the most tokens (prompt plus completion) a request may use.
	CtxSize int
	// Parallel is the most generations running at once (0: 1); MaxQueue the
	// most requests waiting for one (0: 64). Beyond that a request gets 503.
	Parallel, MaxQueue int
	// MaxBodyBytes bounds a request body (0: 4 MiB).
	MaxBodyBytes int64
	// Timeout bounds a request from arrival to its last byte, queueing
	// included (0: 10 minutes).
	Timeout time.Duration
	// ShutdownGrace is how long Serve lets running requests finish after its
	// context ends before it stops their generations (0: 30 s; negative:
	// none, they stop at once).
	ShutdownGrace time.Duration
	// APIKey, when set, is required as "Authorization: Bearer KEY" on /v1.
	APIKey string
	// Log receives one line per request (nil: none).
	Log io.Writer
}

// Server serves the API; see the package doc.
type Server struct {
	o        Options
	format   tokenizer.ChatFormat
	queue    *queue
	log      *log.Logger
	draining atomic.Bool
	created  int64
	seed     atomic.Uint64
}

// New checks the options and returns a server.
func New(o Options) (*Server, error) {
	if o.Model == "" || o.ModelDir == "" || o.Tokenizer == nil || o.Generator == nil {
		return nil, errors.New("server: Model, ModelDir, Tokenizer and Generator are required")
	}
	if o.CtxSize <= 0 {
		return nil, fmt.Errorf("server: context size %d: must be positive", o.CtxSize)
	}
	if o.Parallel < 0 || o.MaxQueue < 0 || o.MaxBodyBytes < 0 || o.Timeout < 0 {
		return nil, errors.New("server: Parallel, MaxQueue, MaxBodyBytes and Timeout must not be negative")
	}
	if o.Parallel == 0 {
		o.Parallel = 1
	}
	if o.MaxQueue == 0 {
		o.MaxQueue = 64
	}
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = 4 << 20
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Minute
	}
	if o.ShutdownGrace == 0 {
		o.ShutdownGrace = 30 * time.Second
	}
	if err := o.Sampling.Check(); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s := &Server{o: o, queue: newQueue(o.Parallel, o.MaxQueue), created: time.Now().Unix()}
	s.format = o.ChatFormat
	if s.format == "" {
		var err error
		if s.format, err = o.Tokenizer.ChatFormat(); err != nil {
			return nil, fmt.Errorf("%w (choose one with the chat-format option)", err)
		}
	} else if _, err := tokenizer.FormatChat(s.format, []tokenizer.Message{{Role: "user", Content: "x"}}, tokenizer.ChatOptions{}); err != nil {
		return nil, err
	}
	if o.Log != nil {
		s.log = log.New(o.Log, "", log.LstdFlags)
	}
	s.seed.Store(uint64(time.Now().UnixNano()))
	return s, nil
}

// ChatFormat is the chat template rendering the server uses.
func (s *Server) ChatFormat() tokenizer.ChatFormat { return s.format }

// Handler returns the API's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", s.health)
	mux.HandleFunc("GET /v1/models", s.auth(s.models))
	mux.HandleFunc("GET /v1/models/{id}", s.auth(s.model))
	mux.HandleFunc("POST /v1/chat/completions", s.auth(s.chat))
	mux.HandleFunc("POST /v1/completions", s.auth(s.completions))
	// Anything else gets an answer in the API's error shape too.
	methods := map[string]string{"/health": "GET", "/v1/models": "GET", "/v1/chat/completions": "POST", "/v1/completions": "POST"}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if m, ok := methods[r.URL.Path]; ok {
			w.Header().Set("Allow", m)
			writeError(w, &apiError{Status: http.StatusMethodNotAllowed, Type: "invalid_request_error",
				Message: fmt.Sprintf("%s %s: use %s", r.Method, r.URL.Path, m)})
			return
		}
		writeError(w, &apiError{Status: http.StatusNotFound, Type: "invalid_request_error",
			Message: fmt.Sprintf("no route %s %s", r.Method, r.URL.Path)})
	})
	return mux
}

// Serve answers on ln until ctx ends, then shuts down gracefully: it stops
// accepting, answers /health with 503, lets running requests finish for
// ShutdownGrace, then cancels their generations (they stop at the next
// token) and returns.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	base, cancel := context.WithCancel(context.Background())
	defer cancel()
	hs := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		// The whole request, body included, must arrive within a minute (a
		// slow sender cannot hold a connection open); replies are not bounded.
		ReadTimeout: time.Minute,
		IdleTimeout: 2 * time.Minute,
		BaseContext: func(net.Listener) context.Context { return base },
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.draining.Store(true)
	grace, cancelGrace := context.WithTimeout(context.Background(), s.o.ShutdownGrace)
	defer cancelGrace()
	err := hs.Shutdown(grace)
	if err != nil {
		// Requests still running: stop their generations and wait for the
		// handlers to notice.
		cancel()
		stop, cancelStop := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancelStop()
		err = hs.Shutdown(stop)
	}
	if e := <-errc; !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	return err
}

func (s *Server) auth(h http.HandlerFunc) http.HandlerFunc {
	if s.o.APIKey == "" {
		return h
	}
	want := []byte("Bearer " + s.o.APIKey)
	return func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			code := "invalid_api_key"
			writeError(w, &apiError{Status: http.StatusUnauthorized, Type: "invalid_request_error", Code: &code,
				Message: "missing or wrong API key (send Authorization: Bearer KEY)"})
			return
		}
		h(w, r)
	}
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	running, waiting := s.queue.load()
	status, code := "ok", http.StatusOK
	if s.draining.Load() {
		status, code = "shutting down", http.StatusServiceUnavailable
	}
	writeJSON(w, code, map[string]any{"status": status, "model": s.o.Model, "running": running, "waiting": waiting})
}

func (s *Server) models(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, modelList{Object: "list", Data: []modelInfo{s.modelInfo()}})
}

func (s *Server) model(w http.ResponseWriter, r *http.Request) {
	if err := s.checkModel(r.PathValue("id")); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.modelInfo())
}

func (s *Server) modelInfo() modelInfo {
	return modelInfo{ID: s.o.Model, Object: "model", Created: s.created, OwnedBy: "fm"}
}

// checkModel accepts the served model's name, or none.
func (s *Server) checkModel(name string) *apiError {
	if name == "" || name == s.o.Model {
		return nil
	}
	return &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Param: ptr("model"), Code: ptr("model_not_found"),
		Message: fmt.Sprintf("model %q does not exist; this server serves %q", name, s.o.Model)}
}

// decode reads a JSON request body into v, mapping every failure to a
// client error that says what was wrong.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) *apiError {
	// Any Content-Type is read as JSON: curl -d sends form encoding unless
	// told otherwise, and the body says what it is.
	body := http.MaxBytesReader(w, r.Body, s.o.MaxBodyBytes)
	dec := json.NewDecoder(body)
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("text after the JSON object")
	}
	if err == nil {
		_, err = io.Copy(io.Discard, body)
	}
	var (
		tooBig  *http.MaxBytesError
		typeErr *json.UnmarshalTypeError
		syntax  *json.SyntaxError
	)
	switch {
	case err == nil:
		return nil
	case errors.As(err, &tooBig):
		return &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: ptr("request_too_large"),
			Message: fmt.Sprintf("request body larger than %d bytes", tooBig.Limit)}
	case errors.As(err, &typeErr):
		// Fields of embedded structs are reported with the struct's name.
		typeErr.Field = strings.TrimPrefix(typeErr.Field, "samplingFields.")
		return badRequest(typeErr.Field, "field %q: got a JSON %s, want %s", typeErr.Field, typeErr.Value, jsonType(typeErr.Type.String()))
	case errors.As(err, &syntax):
		return badRequest("", "malformed JSON at byte %d: %v", syntax.Offset, err)
	case errors.Is(err, io.EOF):
		return badRequest("", "empty request body (want a JSON object)")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("", "malformed JSON: the body ends inside a value")
	}
	return badRequest("", "invalid request: %v", err)
}

// jsonType names a Go type the way an API user knows it.
func jsonType(goType string) string {
	switch {
	case strings.HasPrefix(goType, "[]"):
		return "an array"
	case goType == "string":
		return "a string"
	case strings.Contains(goType, "int"), strings.Contains(goType, "float"):
		return "a number"
	case goType == "bool":
		return "a boolean"
	}
	return "an object"
}

func badRequest(param, format string, args ...any) *apiError {
	e := &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Message: fmt.Sprintf(format, args...)}
	if param != "" {
		e.Param = &param
	}
	return e
}

func ptr[T any](v T) *T { return &v }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.Status, errorBody{Error: e})
}

// randomID is a short random hex string for response and call ids.
func randomID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (s *Server) logf(format string, args ...any) {
	if s.log != nil {
		s.log.Printf(format, args...)
	}
}
