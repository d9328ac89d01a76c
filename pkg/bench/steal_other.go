//go:build !linux

package bench

// readCPUTimes has no source outside Linux (no /proc/stat): the report then
// leaves cpu_steal_ratio out.
func readCPUTimes() (cpuTimes, bool) { return cpuTimes{}, false }
