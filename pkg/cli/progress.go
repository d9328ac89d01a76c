package cli

import (
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Bar shows one byte progress bar (bytes, rate, ETA) per phase on stderr. It
// satisfies the Progress interfaces of pkg/checkpoint and pkg/requant. A nil
// *Bar shows nothing, so callers can pass NewBar's result unconditionally.
type Bar struct{ bar *progressbar.ProgressBar }

// NewBar returns a Bar, or nil when quiet or when stderr is not a terminal
// (logs and CI stay clean).
func NewBar(quiet bool) *Bar {
	if quiet || !term.IsTerminal(int(os.Stderr.Fd())) {
		return nil
	}
	return &Bar{}
}

// Start begins a phase of total bytes.
func (p *Bar) Start(phase string, total int64) {
	if p == nil {
		return
	}
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

// Add reports n more bytes done; safe from several goroutines.
func (p *Bar) Add(n int64) {
	if p != nil && p.bar != nil {
		p.bar.Add64(n)
	}
}

// Done ends the phase's line. The converters report every byte of a phase that
// completed; one that stopped short (an error, Ctrl-C) keeps its bar where it
// stopped rather than claiming 100% above the error message.
func (p *Bar) Done() {
	if p == nil || p.bar == nil {
		return
	}
	if p.bar.State().CurrentNum >= p.bar.GetMax64() {
		p.bar.Finish()
	} else {
		p.bar.Exit()
	}
	p.bar = nil
}
