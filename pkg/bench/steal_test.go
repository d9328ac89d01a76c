package bench

import (
	"math"
	"testing"
)

func TestParseProcStat(t *testing.T) {
	for _, c := range []struct {
		name, text string
		want       cpuTimes
		ok         bool
	}{
		{"linux", "cpu  110385 0 9723 498152 8894 0 3325 39569 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nintr 5\n",
			cpuTimes{busy: 110385 + 0 + 9723 + 0 + 3325, steal: 39569}, true},
		{"cpu line later", "intr 5\ncpu  1 2 3 4 5 6 7 8\n", cpuTimes{busy: 1 + 2 + 3 + 6 + 7, steal: 8}, true},
		{"no steal column", "cpu  1 2 3 4 5 6 7\n", cpuTimes{}, false},
		{"no cpu line", "cpu0 1 2 3 4 5 6 7 8\n", cpuTimes{}, false},
		{"garbage", "cpu  1 2 x 4 5 6 7 8\n", cpuTimes{}, false},
	} {
		got, ok := parseProcStat(c.text)
		if got != c.want || ok != c.ok {
			t.Errorf("%s: %+v %v, want %+v %v", c.name, got, ok, c.want, c.ok)
		}
	}
}

func TestStealRatio(t *testing.T) {
	// The GPU host's 16-thread run of PERF round twelve: user 4349, system
	// 477, softirq 124 ticks busy, 2174 stolen.
	a := cpuTimes{busy: 1000, steal: 500}
	b := cpuTimes{busy: 1000 + 4349 + 477 + 124, steal: 500 + 2174}
	if got, want := stealRatio(a, b), 2174.0/(4349+477+124+2174); math.Abs(got-want) > 1e-12 {
		t.Fatalf("stealRatio %v, want %v", got, want)
	}
	if got := stealRatio(a, a); got != 0 {
		t.Fatalf("nothing ran: %v, want 0", got)
	}
	if got := stealRatio(b, a); got != 0 {
		t.Fatalf("counters going back (a reset): %v, want 0", got)
	}
}
