package cpu

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// adviseHugePages marks the huge-page-aligned interior of b MADV_HUGEPAGE.
// Errors (a kernel without THP, or THP off) leave b on small pages, as it was.
func adviseHugePages(b []byte) {
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	lo := (start + hugePageSize - 1) &^ (hugePageSize - 1)
	hi := (start + uintptr(len(b))) &^ (hugePageSize - 1)
	if hi <= lo {
		return
	}
	_ = unix.Madvise(b[lo-start:hi-start], unix.MADV_HUGEPAGE)
}
