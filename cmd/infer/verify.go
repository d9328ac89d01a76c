package main

import (
	"fmt"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/fm-moe/fm/pkg/layout"
)

func newVerifyCmd() *cobra.Command {
	var model string
	var jobs int
	var quiet bool
	cmd := &cobra.Command{
		Use:   "verify --model OUT",
		Short: "Check every file of a prepared directory against its manifest",
		Long: `verify hashes model_weights.bin and every expert file of every expert set
recorded in OUT/model_weights.json (XXH3-128, in parallel) and compares sizes
and checksums with the manifest. Each bad file is named on stderr; the exit
status is non-zero when any file is bad or missing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := layout.ReadManifest(model)
			if err != nil {
				return err
			}
			var progress func(int64)
			if !quiet && term.IsTerminal(int(os.Stderr.Fd())) {
				bar := progressbar.NewOptions64(m.TotalSize(),
					progressbar.OptionSetWriter(os.Stderr),
					progressbar.OptionSetDescription("verify"),
					progressbar.OptionShowBytes(true),
					progressbar.OptionShowCount(),
					progressbar.OptionSetPredictTime(true),
					progressbar.OptionThrottle(100*time.Millisecond),
					progressbar.OptionFullWidth(),
					progressbar.OptionOnCompletion(func() { os.Stderr.WriteString("\n") }))
				defer bar.Finish()
				progress = func(n int64) { bar.Add64(n) }
			}
			start := time.Now()
			problems, err := layout.Verify(cmd.Context(), model, jobs, progress)
			if err != nil {
				return err
			}
			for _, p := range problems {
				fmt.Fprintln(os.Stderr, "bad file:", p.Error())
			}
			files := len(m.VerifyTargets(model))
			if len(problems) > 0 {
				return fmt.Errorf("%s: %d of %d files do not match the manifest", model, len(problems), files)
			}
			if !quiet {
				secs := time.Since(start).Seconds()
				fmt.Fprintf(os.Stderr, "fm-infer verify: %d files, %s, all match (%.2fs, %.2f GB/s)\n", files, layout.FormatBytes(m.TotalSize()), secs, float64(m.TotalSize())/secs/1e9)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&model, "model", "", "prepared model directory (made by fm-extract and fm-repack)")
	cmd.Flags().IntVarP(&jobs, "jobs", "j", 0, "parallel readers (default: max(4, CPUs))")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress bar and no summary")
	cmd.MarkFlagRequired("model")
	return cmd
}
