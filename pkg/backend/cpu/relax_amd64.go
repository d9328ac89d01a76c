//go:build !noasm

package cpu

// cpuRelax tells the core that the caller is spinning on a flag (PAUSE): the
// poll costs its hyperthread sibling less and leaves the loop without a
// memory-order flush when the flag changes.
//
//go:noescape
func cpuRelax()
