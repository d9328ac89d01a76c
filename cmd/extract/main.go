// Command fm-extract is not implemented yet.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "fm-extract: not implemented yet")
	os.Exit(1)
}
