package engine

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fm-moe/fm/pkg/experts"
	"github.com/fm-moe/fm/pkg/model"
)

// PeakRSS is the process's peak resident set size in bytes (getrusage
// ru_maxrss, which Linux reports in KiB), 0 when unavailable.
func PeakRSS() int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Maxrss * 1024
}

// FormatBytes renders a byte count with a binary unit.
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, u := float64(n), 0
	for v >= unit && u < 5 {
		v /= unit
		u++
	}
	return fmt.Sprintf("%.1f %ciB", v, "BKMGTP"[u])
}

// WriteTiming prints the --timing report: tok/s for prefill and decode, the
// per-layer time breakdown of the decode phase (per token) and of the prefill,
// expert I/O per token, and memory.
func (e *Engine) WriteTiming(w io.Writer, s *Stats) {
	fmt.Fprintf(w, "\n--- timing ---\n")
	fmt.Fprintf(w, "prefill: %d tokens in %v = %.1f tok/s\n", s.PromptTokens, s.Prefill.Round(time.Microsecond), s.PrefillTokensPerSecond())
	fmt.Fprintf(w, "decode:  %d tokens in %v = %.2f tok/s\n", s.DecodedTokens, s.Decode.Round(time.Microsecond), s.DecodeTokensPerSecond())
	if s.DecodedTokens > 0 {
		fmt.Fprintf(w, "\ndecode, per token:\n")
		writeProfile(w, &s.DecodeProfile, s.DecodedTokens, e.Model)
		writeIO(w, &s.DecodeIO, s.DecodedTokens)
	}
	if s.PromptTokens > 0 {
		fmt.Fprintf(w, "\nprefill, whole prompt:\n")
		writeProfile(w, &s.PrefillProfile, 1, e.Model)
		writeIO(w, &s.PrefillIO, 1)
	}
	fmt.Fprintf(w, "\nmemory: peak RSS %s = dense weights touched (≤ %s mapped) + KV/state %s + expert buffers (peak %s, cache budget %s) + runtime\n",
		FormatBytes(s.PeakRSS), FormatBytes(e.Dir.Manifest.Dense.Size), FormatBytes(s.StateBytes),
		FormatBytes(e.storeStats().PeakBufferBytes), FormatBytes(e.opts.Store.CacheBytes))
	if st := e.storeStats(); st.VerifiedBytes > 0 {
		fmt.Fprintf(w, "expert checksums: %s hashed on first read in %v (%.2f GB/s, summed over I/O workers; --no-verify-experts skips it)\n",
			FormatBytes(st.VerifiedBytes), st.VerifyTime.Round(time.Microsecond), float64(st.VerifiedBytes)/st.VerifyTime.Seconds()/1e9)
	}
}

func writeProfile(w io.Writer, p *model.Profile, per int, m *model.Model) {
	div := func(d time.Duration) string {
		return (d / time.Duration(per)).Round(time.Microsecond).String()
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "layer\ttype\t")
	for ph := model.Phase(0); ph < model.NumPhases; ph++ {
		fmt.Fprintf(tw, "%v\t", ph)
	}
	fmt.Fprintf(tw, "total\t\n")
	types := m.Config().LayerTypes
	for i, l := range p.Layers {
		var tot time.Duration
		fmt.Fprintf(tw, "%d\t%s\t", i, shortType(types[i]))
		for _, d := range l {
			fmt.Fprintf(tw, "%s\t", div(d))
			tot += d
		}
		fmt.Fprintf(tw, "%s\t\n", div(tot))
	}
	fmt.Fprintf(tw, "all\t\t")
	for ph := model.Phase(0); ph < model.NumPhases; ph++ {
		fmt.Fprintf(tw, "%s\t", div(p.PhaseTotal(ph)))
	}
	fmt.Fprintf(tw, "%s\t\n", div(p.Total()-p.Head))
	tw.Flush()
	fmt.Fprintf(w, "embedding + final norm + lm_head: %s; total %s\n", div(p.Head), div(p.Total()))
}

func shortType(t string) string {
	if t == "full_attention" {
		return "attn"
	}
	return "delta"
}

func writeIO(w io.Writer, s *experts.Stats, per int) {
	if s.Experts == 0 {
		return
	}
	f := float64(per)
	fmt.Fprintf(w, "experts: %.1f requested, %.1f read from files (%.1f%% cache/shared hits), %.2f MB read, fetch time %v (summed over concurrent fetches; the expert I/O column is the wait that was not hidden)\n",
		float64(s.Experts)/f, float64(s.Misses)/f, 100*s.HitRate(), float64(s.Bytes)/f/1e6,
		(s.WaitTime / time.Duration(per)).Round(time.Microsecond))
}
