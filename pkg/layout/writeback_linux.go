package layout

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback starts writing f's dirty pages to disk without waiting
// (sync_file_range WRITE). A converter writes thousands of files and then
// syncs the file system once; started as each file is finished, the write-back
// overlaps the rest of the conversion instead of all waiting for that final
// sync. Only a hint: errors surface at the sync.
func startWriteback(f *os.File) {
	_ = unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
}
