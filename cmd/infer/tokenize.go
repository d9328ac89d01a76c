package main

import (
	"errors"

	"github.com/spf13/cobra"
)

func newTokenizeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "tokenize",
		Short: "(not implemented yet)",
		RunE: func(cmd *cobra.Command, args []string) error {
			return errors.New("tokenize: not implemented yet")
		},
	}
}
