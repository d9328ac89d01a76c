package main

import (
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/fm-moe/fm/pkg/checkpoint"
)

// barProgress shows one byte progress bar (bytes, rate, ETA) per phase on
// stderr; newProgress returns nil (no bar) when stderr is not a terminal or
// --quiet was given.
type barProgress struct{ bar *progressbar.ProgressBar }

func newProgress(quiet bool) checkpoint.Progress {
	if quiet || !term.IsTerminal(int(os.Stderr.Fd())) {
		return nil
	}
	return &barProgress{}
}

func (p *barProgress) Start(phase string, total int64) {
	p.bar = nil
	if total <= 0 {
		return // nothing to do in this phase: no bar
	}
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

func (p *barProgress) Add(n int64) {
	if p.bar != nil {
		p.bar.Add64(n)
	}
}

// Done ends the phase's line. The library reports every byte of a phase that
// completed; one that stopped short (an error, Ctrl-C) keeps its bar where it
// stopped rather than claiming 100% above the error message.
func (p *barProgress) Done() {
	if p.bar == nil {
		return
	}
	if p.bar.State().CurrentNum >= p.bar.GetMax64() {
		p.bar.Finish()
	} else {
		p.bar.Exit()
	}
	p.bar = nil
}
