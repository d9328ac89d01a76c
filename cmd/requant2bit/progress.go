package main

import (
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/fm-moe/fm/pkg/requant"
)

// barProgress shows one byte progress bar (bytes, rate, ETA) per phase on
// stderr; newProgress returns nil (no bar) when stderr is not a terminal or
// --quiet was given.
type barProgress struct{ bar *progressbar.ProgressBar }

func newProgress(quiet bool) requant.Progress {
	if quiet || !term.IsTerminal(int(os.Stderr.Fd())) {
		return nil
	}
	return &barProgress{}
}

func (p *barProgress) Start(phase string, total int64) {
	p.bar = progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetDescription(phase),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionFullWidth(),
		progressbar.OptionOnCompletion(func() { os.Stderr.WriteString("\n") }),
	)
}

func (p *barProgress) Add(n int64) { p.bar.Add64(n) }

func (p *barProgress) Done() { p.bar.Finish() }
