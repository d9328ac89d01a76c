package policy

import (
	"errors"
	"fmt"
	"math"

	"github.com/spf13/pflag"

	"github.com/fm-moe/fm/pkg/cli"
)

// SamplingFlags are the sampling flags of fm-infer run and chat (and the
// server's defaults). Only the flags given on the command line become
// settings; the rest take Defaults. --temp is llama.cpp's spelling of
// --temperature.
type SamplingFlags struct {
	temperature, topP, minP, repeatPenalty float32
	topK, repeatLastN                      int
	seed                                   int64
	fs                                     *pflag.FlagSet
}

// Register defines the flags on fs.
func (f *SamplingFlags) Register(fs *pflag.FlagSet) {
	f.fs = fs
	inf := math.MaxFloat32
	cli.NoDefault(cli.Float32(fs, &f.temperature, "temperature", "", DefaultTemperature, 0, inf,
		fmt.Sprintf("sampling temperature; 0 is greedy (default: generation_config.json, else %g, or %g when thinking)", DefaultTemperature, DefaultThinkingTemperature)))
	cli.NoDefault(cli.Float32(fs, &f.temperature, "temp", "", DefaultTemperature, 0, inf, "same as --temperature"))
	cli.NoDefault(cli.Int(fs, &f.topK, "top-k", "", DefaultTopK, 0, math.MaxInt32,
		fmt.Sprintf("keep only the K most likely tokens; 0 disables (default: generation_config.json, else %d)", DefaultTopK)))
	cli.NoDefault(cli.Float32(fs, &f.topP, "top-p", "", DefaultTopP, 0, 1,
		fmt.Sprintf("nucleus sampling mass in [0, 1]; 1 disables (default: generation_config.json, else %g, or %g when thinking)", DefaultTopP, DefaultThinkingTopP)))
	cli.NoDefault(cli.Float32(fs, &f.minP, "min-p", "", 0, 0, 1, "drop tokens less likely than P times the most likely, P in [0, 1] (default: generation_config.json, else 0 = off)"))
	cli.NoDefault(cli.Float32Func(fs, &f.repeatPenalty, "repeat-penalty", "", DefaultRepetitionPenalty, func(v float64) error {
		if v <= 0 {
			return errors.New("want a number > 0 (1 disables the penalty)")
		}
		return nil
	},
		fmt.Sprintf("penalize tokens among the last --repeat-last-n (transformers style), > 0; 1 disables (default: generation_config.json, else %g)", DefaultRepetitionPenalty)))
	cli.Int(fs, &f.repeatLastN, "repeat-last-n", "", DefaultRepeatLastN, 0, math.MaxInt32, "how many recent tokens the repeat penalty looks at; 0 means the whole context")
	cli.Int64Func(fs, &f.seed, "seed", "s", RandomSeed, func(v int64) error {
		if v < 0 && v != RandomSeed {
			return fmt.Errorf("want ≥ 0, or %d for a random seed", RandomSeed)
		}
		return nil
	}, "random seed; -1 picks one from the clock (the seed used is printed on stderr)")
}

// Sampling returns the settings given on the command line.
func (f *SamplingFlags) Sampling() Sampling {
	changed := func(names ...string) bool {
		for _, n := range names {
			if f.fs != nil && f.fs.Changed(n) {
				return true
			}
		}
		return false
	}
	var s Sampling
	if changed("temperature", "temp") {
		s.Temperature = &f.temperature
	}
	if changed("top-k") {
		s.TopK = &f.topK
	}
	if changed("top-p") {
		s.TopP = &f.topP
	}
	if changed("min-p") {
		s.MinP = &f.minP
	}
	if changed("repeat-penalty") {
		s.RepetitionPenalty = &f.repeatPenalty
	}
	s.RepeatLastN = &f.repeatLastN
	s.Seed = &f.seed
	return s
}
