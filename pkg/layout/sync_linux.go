package layout

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// SyncFS flushes the file system holding dir (syncfs(2)), so that files written
// there are durable before a manifest that vouches for them is renamed in.
func SyncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("%s: syncfs: %w", dir, err)
	}
	return nil
}
