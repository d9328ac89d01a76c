// Command fm-requant2bit is not implemented yet.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "fm-requant2bit: not implemented yet")
	os.Exit(1)
}
