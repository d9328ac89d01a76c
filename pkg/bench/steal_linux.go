package bench

import "os"

// readCPUTimes samples /proc/stat; ok is false where it cannot be read.
func readCPUTimes() (cpuTimes, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuTimes{}, false
	}
	return parseProcStat(string(b))
}
