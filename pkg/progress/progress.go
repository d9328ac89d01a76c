package progress

import "sync"

// Reporter receives progress reports. Start announces a phase and its total
// bytes; Add reports bytes done; Done ends the phase. A phase that completed
// has reported exactly its total; one that failed or was cancelled has
// reported less. Implementations need not be safe for concurrent use: wrap
// one in Sync before handing it to parallel workers.
type Reporter interface {
	Start(phase string, total int64)
	Add(n int64)
	Done()
}

type nop struct{}

func (nop) Start(string, int64) {}
func (nop) Add(int64)           {}
func (nop) Done()               {}

// Nop reports nothing.
var Nop Reporter = nop{}

// OrNop returns r, or Nop when r is nil.
func OrNop(r Reporter) Reporter {
	if r == nil {
		return Nop
	}
	return r
}

// Sync returns a Reporter whose Add may be called from several goroutines
// (the calls reach r one at a time); a nil r reports nothing.
func Sync(r Reporter) Reporter {
	if r == nil {
		return Nop
	}
	return &syncReporter{r: r}
}

type syncReporter struct {
	mu sync.Mutex
	r  Reporter
}

func (s *syncReporter) Start(phase string, total int64) { s.r.Start(phase, total) }
func (s *syncReporter) Done()                           { s.r.Done() }
func (s *syncReporter) Add(n int64) {
	s.mu.Lock()
	s.r.Add(n)
	s.mu.Unlock()
}
