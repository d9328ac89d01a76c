package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"

	"github.com/spf13/cobra"
)

// Main runs root with a context that Ctrl-C cancels and exits non-zero with
// one line "name: error" on failure. interrupted is the message printed
// instead of "context canceled" after Ctrl-C (what was kept, how to resume).
func Main(name string, root *cobra.Command, interrupted string) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := root.ExecuteContext(ctx)
	stop()
	if err != nil {
		if errors.Is(err, context.Canceled) {
			err = errors.New(interrupted)
		}
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}
