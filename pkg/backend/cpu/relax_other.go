//go:build !amd64 || noasm

package cpu

// cpuRelax is the spin-wait hint of relax_amd64.s; elsewhere a poll is a plain
// load.
func cpuRelax() {}
