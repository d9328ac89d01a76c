package server

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fm-moe/fm/pkg/backend"
	"github.com/fm-moe/fm/pkg/backend/backendtest"
	"github.com/fm-moe/fm/pkg/engine"
)

// endings wraps a Generator and reports each generation's error once it has
// returned (so every state it made has been released or kept by then).
type endings struct {
	Generator
	ended chan error
}

func (g *endings) Generate(ctx context.Context, ids, marks []int, opts engine.GenerateOptions) (*engine.Result, error) {
	res, err := g.Generator.Generate(ctx, ids, marks, opts)
	g.ended <- err
	return res, err
}

// TestServerReleasesStates: whatever ends a request — a whole or streamed
// reply, a continued conversation (a prefix-cache hit), a stop sequence, a
// timeout, a client that hangs up mid-stream, a device that cannot copy a
// snapshot — the model states behind it are released: between requests the
// only live states are the prefix cache's snapshots, and none after Clear.
// The real model runs on the CPU backend wrapped to count its states.
func TestServerReleasesStates(t *testing.T) {
	dev, err := backend.Open("cpu", backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	counting := backendtest.NewCounting(dev)
	e, err := engine.Open(context.Background(), engine.Options{Dir: tinyDir, Device: counting, SkipDenseChecksum: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	cache := e.NewPrefixCache(64 << 20)
	gen := &endings{Generator: cache, ended: make(chan error, 1)}
	const chat = `{"messages": [{"role": "user", "content": "def quicksort(xs):"}], "max_tokens": 8`
	for _, c := range []struct {
		name    string
		edit    func(*Options)
		body    string
		hangUp  bool // read a few events, then disconnect
		noClone bool // the device cannot copy states
		want    int  // status (0: the client hung up)
		wantErr bool // the generation ends with an error
	}{
		{name: "whole", body: chat + `}`, want: 200},
		{name: "continued", body: `{"messages": [{"role": "user", "content": "def quicksort(xs):"},
			{"role": "assistant", "content": "pass"}, {"role": "user", "content": "again"}], "max_tokens": 8}`, want: 200},
		{name: "streamed", body: chat + `, "stream": true}`, want: 200},
		{name: "stop sequence", body: chat + `, "max_tokens": 64, "stop": [" ", "\n", "(", "="]}`, want: 200, wantErr: true},
		{name: "no clones", body: chat + `}`, noClone: true, want: 200},
		{name: "timeout", edit: func(o *Options) { o.Timeout = 300 * time.Millisecond; o.StopTokens = nil },
			body: `{"prompt": "def main():", "max_tokens": 4000}`, want: http.StatusGatewayTimeout, wantErr: true},
		{name: "client hangs up", edit: func(o *Options) { o.StopTokens = nil },
			body: `{"prompt": "def main():", "max_tokens": 4000, "stream": true}`, hangUp: true, wantErr: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			counting.SetCloneError(nil)
			if c.noClone {
				counting.SetCloneError(errors.New("out of device memory"))
			}
			ts, _ := newServer(t, func(o *Options) {
				o.Generator = gen
				if c.edit != nil {
					c.edit(o)
				}
			})
			path := "/v1/chat/completions"
			if strings.Contains(c.body, `"prompt"`) {
				path = "/v1/completions"
			}
			if c.hangUp {
				ctx, cancel := context.WithCancel(context.Background())
				req, _ := http.NewRequestWithContext(ctx, "POST", ts.URL+path, strings.NewReader(c.body))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				hangUp(t, resp, 3, cancel)
			} else if code, body := post(t, ts.URL+path, c.body, nil); code != c.want {
				t.Errorf("status %d, want %d: %s", code, c.want, body)
			}
			select {
			case err := <-gen.ended:
				if (err != nil) != c.wantErr {
					t.Errorf("generation ended with %v, want an error %v", err, c.wantErr)
				}
			case <-time.After(time.Minute):
				t.Fatal("no generation ended")
			}
			s := cache.Stats()
			if live := counting.Live(); live != s.Entries {
				t.Errorf("%d states alive, the prefix cache holds %d", live, s.Entries)
			}
			t.Logf("%d snapshots, %d hits, %d states made so far", s.Entries, s.Hits, counting.Made())
		})
	}
	if s := cache.Stats(); s.Hits == 0 {
		t.Error("no request started from a snapshot")
	}
	cache.Clear()
	if live := counting.Live(); live != 0 {
		t.Errorf("after Clear: %d states alive", live)
	}
	if err := counting.Misuse(); err != nil {
		t.Error(err)
	}
}
