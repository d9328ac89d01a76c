package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fm-moe/fm/pkg/engine"
	"github.com/fm-moe/fm/pkg/layout"
	"github.com/fm-moe/fm/pkg/policy"
)

func newLogitsCmd() *cobra.Command {
	var (
		ef     policy.EngineFlags
		tokens string
		out    string
		decode bool
	)
	cmd := &cobra.Command{
		Use:   "logits --model OUT --tokens 1,2,3 --out FILE.safetensors [--decode] [--2bit]",
		Short: "Write the next-token logits of every position of a token sequence",
		Long: `logits runs a sequence of token ids through the model from an empty state and
writes a safetensors file with one F32 tensor "logits" of shape [T, vocab_size]:
row t holds the logits for the token after input token t.

By default the whole sequence goes through the batched prefill path; --decode
feeds the tokens one at a time through the single-token decode path instead.
Both must agree with the reference implementation (transformers).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, err := parseIDs(tokens)
			if err != nil {
				return err
			}
			if err := checkOutFile(out, ef.Model); err != nil {
				return err
			}
			ctx := cmd.Context()
			e, err := ef.Open(ctx, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer e.Close()
			V := e.Model.Config().VocabSize
			for _, id := range ids {
				if id >= V {
					return fmt.Errorf("--tokens: id %d is outside the vocabulary [0, %d)", id, V)
				}
			}
			logits, err := e.Logits(ctx, ids, decode)
			if err != nil {
				return contextHint(err)
			}
			return engine.WriteLogits(out, logits, len(ids), V)
		},
	}
	ef.Register(cmd.Flags())
	cmd.Flags().StringVar(&tokens, "tokens", "", "comma-separated token ids")
	cmd.Flags().StringVar(&out, "out", "", "output safetensors file")
	cmd.Flags().BoolVar(&decode, "decode", false, "feed tokens one at a time through the decode path")
	return cmd
}

// parseIDs parses "1,2,3" (spaces and a surrounding [] allowed).
func parseIDs(s string) ([]int, error) {
	s = strings.Trim(strings.TrimSpace(s), "[]")
	if s == "" {
		return nil, errors.New("--tokens: no token ids")
	}
	var ids []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v < 0 {
			return nil, fmt.Errorf("--tokens: %q is not a token id", strings.TrimSpace(f))
		}
		ids = append(ids, v)
	}
	return ids, nil
}

// checkOutFile refuses an --out that is a directory or one of the files a
// prepared directory consists of (the logits would replace the manifest, a
// weight file or the tokenizer).
func checkOutFile(out, model string) error {
	if out == "" {
		return errors.New("--out is required")
	}
	if st, err := os.Stat(out); err == nil && st.IsDir() {
		return fmt.Errorf("--out %s is a directory; give a file name such as %s", out, filepath.Join(out, "logits.safetensors"))
	}
	if model == "" {
		return nil
	}
	absOut, err1 := filepath.Abs(out)
	absModel, err2 := filepath.Abs(model)
	if err1 != nil || err2 != nil {
		return nil
	}
	rel, err := filepath.Rel(absModel, absOut)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return nil // outside the model directory
	}
	top := strings.SplitN(filepath.ToSlash(rel), "/", 2)[0]
	switch {
	case top == layout.ManifestName, top == layout.DenseName, top == policy.GenerationConfigName,
		top == "config.json", strings.HasPrefix(top, "tokenizer"), strings.HasPrefix(top, layout.ExpertsDir):
		return fmt.Errorf("--out %s would overwrite %s of the model directory %s; write the logits elsewhere", out, top, model)
	}
	return nil
}
