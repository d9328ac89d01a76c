package bench

import (
	"strconv"
	"strings"
)

// cpuTimes are the machine-wide CPU time counters of /proc/stat's "cpu"
// line (clock ticks): what the CPUs spent running (user, nice, system,
// irq, softirq) and what the hypervisor took from them (steal: time a
// virtual CPU wanted to run while the host ran something else).
type cpuTimes struct {
	busy, steal uint64
}

// parseProcStat reads the "cpu" line of /proc/stat's text: "cpu  user nice
// system idle iowait irq softirq steal …". ok is false when the line is
// missing or has too few fields (a kernel without the steal column).
func parseProcStat(text string) (t cpuTimes, ok bool) {
	for line := range strings.Lines(text) {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "cpu" {
			continue
		}
		if len(f) < 9 {
			return cpuTimes{}, false
		}
		var v [8]uint64
		for i := range v {
			n, err := strconv.ParseUint(f[1+i], 10, 64)
			if err != nil {
				return cpuTimes{}, false
			}
			v[i] = n
		}
		// user, nice, system, (idle, iowait), irq, softirq, steal
		return cpuTimes{busy: v[0] + v[1] + v[2] + v[5] + v[6], steal: v[7]}, true
	}
	return cpuTimes{}, false
}

// stealRatio is the share of the CPU time wanted between a and b that the
// hypervisor took: Δsteal / (Δbusy + Δsteal); 0 when nothing ran.
func stealRatio(a, b cpuTimes) float64 {
	busy, steal := b.busy-a.busy, b.steal-a.steal
	if b.busy < a.busy || b.steal < a.steal || busy+steal == 0 {
		return 0
	}
	return float64(steal) / float64(busy+steal)
}
