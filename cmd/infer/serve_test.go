package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer the command writes while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestServeCommand starts fm-infer serve on an ephemeral port, answers a
// chat request over HTTP, and stops cleanly when its context ends (as on
// SIGINT/SIGTERM). Bound beyond loopback without a key, it warns.
func TestServeCommand(t *testing.T) {
	dir := convertGolden(t, filepath.Join(golden35, "hf"), 16)
	for _, c := range []struct {
		addr string
		warn bool
	}{{"127.0.0.1:0", false}, {"0.0.0.0:0", true}} {
		ctx, stop := context.WithCancel(context.Background())
		defer stop()
		cmd := newServeCmd()
		var stderr syncBuffer
		cmd.SetErr(&stderr)
		cmd.SetOut(io.Discard)
		cmd.SetArgs([]string{"-m", dir, "--addr", c.addr, "--model-name", "golden", "--no-verify"})
		done := make(chan error, 1)
		go func() { done <- cmd.ExecuteContext(ctx) }()
		re := regexp.MustCompile(`on http://\S*:(\d+) `)
		var port string
		for deadline := time.Now().Add(20 * time.Second); port == ""; {
			if m := re.FindStringSubmatch(stderr.String()); m != nil {
				port = m[1]
			} else if time.Now().After(deadline) {
				t.Fatalf("serve did not start: %s", stderr.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
		resp, err := http.Post("http://127.0.0.1:"+port+"/v1/chat/completions", "application/json",
			strings.NewReader(`{"model": "golden", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}`))
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			Choices []struct {
				FinishReason string `json:"finish_reason"`
			}
			Usage struct {
				CompletionTokens int `json:"completion_tokens"`
			}
		}
		json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if resp.StatusCode != 200 || len(out.Choices) != 1 || out.Usage.CompletionTokens < 1 {
			t.Errorf("%s: status %d, %+v", c.addr, resp.StatusCode, out)
		}
		stop()
		if err := <-done; err != nil {
			t.Errorf("%s: serve returned %v", c.addr, err)
		}
		if warned := strings.Contains(stderr.String(), "WARNING"); warned != c.warn {
			t.Errorf("%s: warning printed %v, want %v:\n%s", c.addr, warned, c.warn, stderr.String())
		}
	}
}
