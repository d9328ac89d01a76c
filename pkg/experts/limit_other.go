//go:build !unix

package experts

func openFileLimit() int { return 1024 }
