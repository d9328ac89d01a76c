package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/fm-moe/fm/pkg/cli"
	"github.com/fm-moe/fm/pkg/policy"
	"github.com/fm-moe/fm/pkg/server"
	"github.com/fm-moe/fm/pkg/tokenizer"
)

func newServeCmd() *cobra.Command {
	var (
		ef         policy.EngineFlags
		sf         policy.SamplingFlags
		addr       string
		apiKey     string
		name       string
		chatFormat string
		parallel   int
		queue      int
		maxBodyKiB int
		cacheMiB   int
		timeout    time.Duration
		grace      time.Duration
	)
	cmd := &cobra.Command{
		Use:   "serve -m OUT [--addr 127.0.0.1:8080] [--api-key KEY] [flags]",
		Short: "Serve the model over an OpenAI-compatible HTTP API",
		Long: `serve answers the OpenAI API on --addr: POST /v1/chat/completions and
/v1/completions (whole, or streamed as server-sent events with "stream": true),
GET /v1/models and GET /health.

It listens on the loopback interface unless --addr names another; then it warns
when no --api-key is set, because anyone who can reach the port can use the
model. With --api-key every /v1 route needs "Authorization: Bearer KEY"
(FM_API_KEY in the environment works too).

Chat requests are rendered with the model's chat template, tools included;
the model's reasoning comes back as reasoning_content, its tool calls as
tool_calls. "chat_template_kwargs": {"enable_thinking": false} turns thinking
off where the template allows it.

A request that extends an earlier conversation continues from the model state
saved at that conversation's last turn boundary instead of processing the
whole prompt again (usage.prompt_tokens_details.cached_tokens says how many
tokens it skipped); --prompt-cache-mb bounds the memory those states take.

At most --parallel generations run at once, the others wait in arrival order
(at most --queue of them). A client that disconnects stops its generation at
the next token. Ctrl-C or SIGTERM stops accepting, lets running requests
finish for --shutdown-grace (then stops their generations), and exits.`,
		Example: `  fm-infer serve -m out/q35
  curl http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' \
    -d '{"messages": [{"role": "user", "content": "Hello"}]}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			stderr := cmd.ErrOrStderr()
			if apiKey == "" {
				apiKey = os.Getenv("FM_API_KEY")
			}
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return fmt.Errorf("--addr %q: %v (want HOST:PORT)", addr, err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			e, tok, err := ef.OpenWithTokenizer(ctx, stderr)
			if err != nil {
				return err
			}
			defer e.Close()
			cache := e.NewPrefixCache(int64(cacheMiB) << 20)
			defer cache.Clear() // the snapshots' device memory, before the engine closes
			if name == "" {
				name = filepath.Base(filepath.Clean(ef.Model))
			}
			srv, err := server.New(server.Options{
				Model:        name,
				ModelDir:     ef.Model,
				Tokenizer:    tok,
				Generator:    cache,
				StopTokens:   policy.StopTokens(e.Dir.Manifest.Config.EOSTokenIDs, tok),
				Sampling:     sf.Sampling(),
				ChatFormat:   tokenizer.ChatFormat(chatFormat),
				CtxSize:      e.ContextSize(),
				Parallel:     parallel,
				MaxQueue:     queue,
				MaxBodyBytes: int64(maxBodyKiB) << 10,
				Timeout:      timeout,
				// The server reads 0 as its default; the flag's 0 means none.
				ShutdownGrace: cmp.Or(grace, -1),
				APIKey:        apiKey,
				Log:           stderr,
			})
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return err
			}
			fmt.Fprintf(stderr, "model: %s\n", policy.Summary(e, &ef))
			fmt.Fprintf(stderr, "serving %q on http://%s (context %d tokens, %d parallel, chat format %s)\n",
				name, ln.Addr(), e.ContextSize(), max(parallel, 1), srv.ChatFormat())
			if ip := net.ParseIP(host); (ip == nil || !ip.IsLoopback()) && host != "localhost" && apiKey == "" {
				fmt.Fprintf(stderr, "WARNING: listening on %s without --api-key: anyone who can reach this port can use the model\n", ln.Addr())
			}
			err = srv.Serve(ctx, ln)
			if errors.Is(ctx.Err(), context.Canceled) {
				fmt.Fprintln(stderr, "stopped")
			}
			return err
		},
	}
	ef.Register(cmd.Flags())
	sf.Register(cmd.Flags())
	fs := cmd.Flags()
	fs.StringVar(&addr, "addr", "127.0.0.1:8080", "address to listen on (another interface than loopback exposes the model: set --api-key)")
	fs.StringVar(&apiKey, "api-key", "", "require this key as a bearer token on /v1 (default: $FM_API_KEY)")
	fs.StringVar(&name, "model-name", "", "the model id clients use (default: the model directory's name)")
	fs.StringVar(&chatFormat, "chat-format", "", "override the chat format detected from the template: chatml, qwen3, qwen3-instruct, qwen3-thinking or qwen3.5")
	cli.Int(fs, &parallel, "parallel", "", 1, 1, 1024, "generations running at once")
	cli.Int(fs, &queue, "queue", "", 64, 1, 1<<20, "requests that may wait for a free slot; more get 503")
	cli.Int(fs, &maxBodyKiB, "max-body-kb", "", 4096, 1, math.MaxInt32>>10, "largest request body in KiB")
	cli.Int(fs, &cacheMiB, "prompt-cache-mb", "", 1024, 0, math.MaxInt32>>1, "memory in MiB for model states kept for prefix reuse (0: no reuse)")
	cli.Duration(fs, &timeout, "timeout", "", 10*time.Minute, time.Millisecond, math.MaxInt64, "longest a request may take, waiting included")
	cli.Duration(fs, &grace, "shutdown-grace", "", 30*time.Second, 0, 24*time.Hour,
		"on Ctrl-C or SIGTERM, how long running requests may finish before their generations stop (0: stop at once)")
	return cmd
}
