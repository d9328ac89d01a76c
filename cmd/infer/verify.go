package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/fm-moe/fm/pkg/layout"
	"github.com/fm-moe/fm/pkg/tokenizer"
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
and checksums with the manifest; it also checks that the tokenizer files are
there and that tokenizer.bin and vocab.bin pass their CRC. Each bad file is
named on stderr, and the exit status is non-zero when any file is bad or
missing, or when no expert set is recorded yet (fm-repack has not finished:
rerun it, it resumes).`,
		Example: `  fm-extract SRC out/model && fm-repack SRC out/model
  fm-infer verify --model out/model`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := layout.ReadManifest(model)
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%s: no %s: not a prepared directory (make one with fm-extract and fm-repack)", model, layout.ManifestName)
			}
			if err != nil {
				return err
			}
			var bar *progressbar.ProgressBar
			var progress func(int64)
			if !quiet && term.IsTerminal(int(os.Stderr.Fd())) && m.TotalSize() > 0 {
				bar = progressbar.NewOptions64(m.TotalSize(),
					progressbar.OptionSetWriter(os.Stderr),
					progressbar.OptionSetDescription("verify"),
					progressbar.OptionShowBytes(true),
					progressbar.OptionShowCount(),
					progressbar.OptionSetPredictTime(true),
					progressbar.OptionThrottle(100*time.Millisecond),
					progressbar.OptionFullWidth(),
					progressbar.OptionOnCompletion(func() { os.Stderr.WriteString("\n") }))
				progress = func(n int64) { bar.Add64(n) }
			}
			start := time.Now()
			problems, err := verifyAll(cmd.Context(), model, m, jobs, progress)
			if bar != nil {
				// End the bar's line before anything else is printed: at 100%
				// when every file was checked, where it stopped otherwise.
				if err == nil {
					bar.Finish()
				} else {
					bar.Exit()
				}
			}
			if err != nil {
				return err
			}
			for _, p := range problems {
				fmt.Fprintln(cmd.ErrOrStderr(), "bad file:", p.Error())
			}
			files := len(m.VerifyTargets(model)) + len(m.Tokenizer)
			if len(problems) > 0 {
				noun := "problems"
				if len(problems) == 1 {
					noun = "problem"
				}
				return fmt.Errorf("%s: %d %s, the directory does not match its manifest (%d files checked)", model, len(problems), noun, files)
			}
			if !quiet {
				secs := time.Since(start).Seconds()
				fmt.Fprintf(cmd.ErrOrStderr(), "fm-infer verify: %d files, %s, all match (%.2fs, %.2f GB/s)\n", files, layout.FormatBytes(m.TotalSize()), secs, float64(m.TotalSize())/secs/1e9)
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

// verifyAll runs layout.Verify (sizes and checksums of the dense and expert
// files, presence of the tokenizer files, an expert set recorded) and adds
// the self-checks of tokenizer.bin and vocab.bin, whose CRC-32C trailers the
// tokenizer package verifies; the manifest records no checksum for them.
func verifyAll(ctx context.Context, dir string, m *layout.Manifest, jobs int, progress func(int64)) ([]layout.Problem, error) {
	problems, err := layout.Verify(ctx, dir, jobs, progress)
	if err != nil {
		return nil, err
	}
	check := map[string]func(io.Reader) error{
		tokenizer.BinaryFile: func(r io.Reader) error { _, err := tokenizer.LoadBinary(r); return err },
		tokenizer.VocabFile:  func(r io.Reader) error { _, err := tokenizer.ReadVocab(r); return err },
	}
	for _, name := range m.Tokenizer {
		path := filepath.Join(dir, name)
		f := check[name]
		if f == nil || slices.ContainsFunc(problems, func(p layout.Problem) bool { return p.Path == path }) {
			continue
		}
		b, err := os.ReadFile(path)
		if err == nil {
			err = f(bytes.NewReader(b))
		}
		if err != nil {
			problems = append(problems, layout.Problem{Path: path, Err: err})
		}
	}
	return problems, nil
}
