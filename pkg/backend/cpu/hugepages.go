package cpu

import "os"

// Transparent huge pages for the CPU-only copies the device makes of weights
// (row-interleaved dense matrices, the packed expert cache's slabs) and for
// the attention layers' KV caches (kvcache.go: there the point is fewer page
// faults, not fewer TLB misses): with THP
// in "madvise" mode (the common default, and the development VM's) these
// heap copies would sit on 4 KiB pages, and a product streaming tens of MB
// from DRAM pays a TLB miss (a two-level walk under virtualization) every
// 4 KiB. On huge pages, paired products over DRAM-sized copies ran
// 1.06–1.09× faster (BenchmarkHugePagesAB; docs/PERF.md, "Huge pages for the
// packed weights"). The copies stay Go memory (the GC frees them); hugeBytes
// only asks the kernel to back the 2 MiB-aligned part of a fresh allocation
// with huge pages before it is touched. FM_HUGEPAGES=0 turns this off for
// A/B measurements.

// hugePageSize is the size of a transparent huge page on amd64 and arm64 Linux.
const hugePageSize = 2 << 20

// hugePagesOff turns the advice off (FM_HUGEPAGES=0).
var hugePagesOff = os.Getenv("FM_HUGEPAGES") == "0"

// hugeBytes returns a zeroed buffer of n bytes; if it spans at least one
// aligned huge page, that part is advised to use huge pages (see above).
func hugeBytes(n int) []byte {
	b := make([]byte, n)
	if !hugePagesOff && n >= 2*hugePageSize {
		adviseHugePages(b)
	}
	return b
}
