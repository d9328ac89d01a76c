package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/fm-moe/fm/pkg/tokenizer"
)

func newTokenizeCmd() *cobra.Command {
	var (
		model  string
		text   string
		decode bool
	)
	cmd := &cobra.Command{
		Use:   "tokenize --model OUT_OR_TOKENIZER_JSON [--text TEXT] [--decode]",
		Short: "Print the token ids of a text (or, with --decode, the text of ids)",
		Long: `tokenize turns text into the token ids the model sees, exactly as HuggingFace
tokenizers would (no special tokens are added; special tokens written in the
text, such as <|im_start|>, are recognised). It prints the ids as one JSON array.

--model is a prepared model directory (its tokenizer.bin, else tokenizer.json),
a checkpoint directory, or a tokenizer.json / tokenizer.bin file.

The text is --text, or else all of standard input, byte for byte: a trailing
newline from echo is part of the text (use printf or --text to avoid it).

With --decode the input is a JSON array of ids instead, and the decoded text is
printed byte for byte, without an added newline.`,
		Example: `  fm-infer tokenize --model out/ --text "Hello, world!"
  [9707,11,1879,0]
  printf 'Hello' | fm-infer tokenize --model checkpoint/tokenizer.json
  fm-infer tokenize --model out/ --decode --text "[9707,11,1879,0]"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			tok, err := tokenizer.Load(model)
			if err != nil {
				return err
			}
			input := text
			if !cmd.Flags().Changed("text") {
				data, err := io.ReadAll(cmd.InOrStdin())
				if err != nil {
					return fmt.Errorf("reading standard input: %w", err)
				}
				input = string(data)
			}
			out := cmd.OutOrStdout()
			if decode {
				var ids []int
				if err := json.Unmarshal([]byte(input), &ids); err != nil {
					return fmt.Errorf("--decode wants a JSON array of token ids: %w", err)
				}
				for i, id := range ids {
					if _, ok := tok.TokenBytes(id); !ok {
						return fmt.Errorf("id %d (position %d) is not a token of %s (vocabulary size %d)", id, i, model, tok.VocabSize())
					}
				}
				_, err := io.WriteString(out, tok.Decode(ids))
				return err
			}
			ids := tok.Encode(input)
			if ids == nil {
				ids = []int{}
			}
			js, err := json.Marshal(ids)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(out, "%s\n", js)
			return err
		},
	}
	cmd.Flags().StringVarP(&model, "model", "m", "", "prepared model directory, checkpoint directory, or tokenizer.json/tokenizer.bin file (required)")
	cmd.Flags().StringVar(&text, "text", "", "text to tokenize (default: read standard input)")
	cmd.Flags().BoolVar(&decode, "decode", false, "read a JSON array of ids and print their text")
	_ = cmd.MarkFlagRequired("model")
	return cmd
}
