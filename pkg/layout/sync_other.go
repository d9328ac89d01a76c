//go:build !linux

package layout

import "syscall"

// SyncFS makes files written under dir durable before a manifest that vouches
// for them is renamed in. Without syncfs(2) (macOS), sync(2) flushes every file
// system, which is coarser but has the same effect for dir.
func SyncFS(dir string) error {
	syscall.Sync()
	return nil
}
