// Command fm-repack is not implemented yet.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "fm-repack: not implemented yet")
	os.Exit(1)
}
