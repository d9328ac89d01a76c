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

	"github.com/fm-moe/fm/pkg/cli"
	"github.com/fm-moe/fm/pkg/engine"
	"github.com/fm-moe/fm/pkg/layout"
	"github.com/fm-moe/fm/pkg/tokenizer"
)

func newVerifyCmd() *cobra.Command {
	var model string
	var jobs int
	var quiet, quick bool
	cmd := &cobra.Command{
		Use:   "verify -m OUT [--quick]",
		Short: "Check that a prepared directory matches its manifest and opens",
		Long: `verify proves that a prepared directory runs:

  - the manifest matches its own checksum (manifest_checksum) and its values
    are in range: config values, every tensor and expert component inside its
    file, no two arrays on the same bytes;
  - model_weights.bin and every expert file of every expert set hash
    (XXH3-128, in parallel) to the manifest's checksums and have its sizes
    (--quick checks presence and sizes only);
  - the tokenizer files are there, and tokenizer.bin and vocab.bin pass their
    CRC;
  - the model opens with each expert set — every tensor the architecture needs
    is present with the shape the config implies, the expert components fit —
    and one token runs through it to finite logits.

Each bad file is named on stderr, and the exit status is non-zero when any
check fails, or when no expert set is recorded yet (fm-repack has not
finished: rerun it, it resumes).`,
		Example: `  fm-extract SRC out/model && fm-repack SRC out/model
  fm-infer verify -m out/model
  fm-infer verify -m out/model --quick     # seconds: no hashing`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := layout.ReadManifest(model)
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%s: no %s: not a prepared directory (make one with fm-extract and fm-repack)", model, layout.ManifestName)
			}
			if err != nil {
				return err
			}
			stderr := cmd.ErrOrStderr()
			if m.ManifestChecksum == "" {
				fmt.Fprintf(stderr, "note: %s records no manifest_checksum (written by an older fm); re-run fm-extract to add one\n", filepath.Join(model, layout.ManifestName))
			}
			var bar *progressbar.ProgressBar
			var progress func(int64)
			if !quiet && !quick && term.IsTerminal(int(os.Stderr.Fd())) && m.TotalSize() > 0 {
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
			problems, err := verifyAll(cmd.Context(), model, m, jobs, quick, progress)
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
				fmt.Fprintln(stderr, "bad file:", p.Error())
			}
			files := len(m.VerifyTargets(model)) + len(m.Tokenizer)
			if len(problems) > 0 {
				noun := "problems"
				if len(problems) == 1 {
					noun = "problem"
				}
				return fmt.Errorf("%s: %d %s, the directory does not match its manifest (%d files checked)", model, len(problems), noun, files)
			}
			hashed := time.Since(start)
			// The files are what the manifest says; now prove they make a model.
			for _, set := range m.Experts {
				if err := opensAndRuns(cmd.Context(), model, set.Dir); err != nil {
					return fmt.Errorf("%s: the files match the manifest, but the model does not run with %s: %w", model, set.Dir, err)
				}
			}
			if !quiet {
				secs := hashed.Seconds()
				what := fmt.Sprintf("all match (%.2fs, %.2f GB/s)", secs, float64(m.TotalSize())/secs/1e9)
				if quick {
					what = "all present with the manifest's sizes (not hashed: --quick)"
				}
				fmt.Fprintf(stderr, "fm-infer verify: %d files, %s, %s; the model opens and runs with %d expert set(s)\n",
					files, layout.FormatBytes(m.TotalSize()), what, len(m.Experts))
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&model, "model", "m", "", "prepared model directory (made by fm-extract and fm-repack)")
	cli.Int(cmd.Flags(), &jobs, "jobs", "j", 0, 0, 4096, "parallel readers (0: max(4, CPUs))")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress bar and no summary")
	cmd.Flags().BoolVar(&quick, "quick", false, "check presence and sizes, not checksums (seconds instead of a full read)")
	cmd.MarkFlagRequired("model")
	return cmd
}

// verifyAll runs layout.Verify (sizes and checksums of the dense and expert
// files, presence of the tokenizer files, an expert set recorded) and adds
// the self-checks of tokenizer.bin and vocab.bin, whose CRC-32C trailers the
// tokenizer package verifies; the manifest records no checksum for them.
func verifyAll(ctx context.Context, dir string, m *layout.Manifest, jobs int, quick bool, progress func(int64)) ([]layout.Problem, error) {
	var problems []layout.Problem
	var err error
	if quick {
		problems, err = layout.VerifyQuick(ctx, dir, jobs)
	} else {
		problems, err = layout.Verify(ctx, dir, jobs, progress)
	}
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

// opensAndRuns opens the model with one expert set exactly as fm-infer run
// does (the dense checksum was just verified) — so every check the runtime
// makes on tensor names, shapes and expert components applies — and runs one
// token through it: the logits must be finite.
func opensAndRuns(ctx context.Context, dir, set string) error {
	e, err := engine.Open(ctx, engine.Options{Dir: dir, ExpertsDir: set, SkipDenseChecksum: true})
	if err != nil {
		return err
	}
	defer e.Close()
	id := 0
	if b := e.Dir.Manifest.Config.BOSTokenID; b != nil {
		id = *b
	}
	_, err = e.Logits(ctx, []int{id}, false)
	return err
}
