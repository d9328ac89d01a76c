//go:build !linux

package bench

import "os"

func fadviseDontNeed(*os.File) {}
