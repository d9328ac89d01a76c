package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/fm-moe/fm/pkg/sample"
)

// GenerationConfigName is the file in a prepared directory (copied from the
// checkpoint by fm-extract) whose sampling keys give the model's defaults.
const GenerationConfigName = "generation_config.json"

// RandomSeed, as Sampling.Seed, asks for a seed taken from the clock (the
// llama.cpp convention); Resolve reports the seed it picked in Params.Seed.
const RandomSeed = -1

// Sampling holds the settings a request sets explicitly; a nil field takes
// the default. Field names follow generation_config.json (and the OpenAI API).
type Sampling struct {
	Temperature       *float32 // ≥ 0; 0 is greedy
	TopK              *int     // ≥ 0; 0 disables
	TopP              *float32 // [0, 1]; 1 disables
	MinP              *float32 // [0, 1]; 0 disables
	RepetitionPenalty *float32 // > 0; 1 disables
	RepeatLastN       *int     // ≥ 0; 0 is the whole context
	Seed              *int64   // ≥ 0, or RandomSeed (also the default)
}

// Default settings when neither the request nor generation_config.json sets
// them: Qwen's recommendations (non-thinking: temperature 0.7, top-p 0.8,
// top-k 20; thinking: temperature 0.6, top-p 0.95), plus a mild repetition
// penalty of 1.1 over the last 64 tokens, which keeps small models out of the
// loops they otherwise fall into (measured on tiny-code).
const (
	DefaultTemperature         = 0.7
	DefaultThinkingTemperature = 0.6
	DefaultTopK                = 20
	DefaultTopP                = 0.8
	DefaultThinkingTopP        = 0.95
	DefaultRepetitionPenalty   = 1.1
	DefaultRepeatLastN         = 64
)

// generationConfig holds the sampling keys of generation_config.json.
type generationConfig struct {
	DoSample          *bool    `json:"do_sample"`
	Temperature       *float32 `json:"temperature"`
	TopK              *int     `json:"top_k"`
	TopP              *float32 `json:"top_p"`
	MinP              *float32 `json:"min_p"`
	RepetitionPenalty *float32 `json:"repetition_penalty"`
}

// Defaults returns the sampling settings of the prepared directory dir:
// generation_config.json's keys (a missing file is fine) over the defaults
// above; do_sample false means greedy. Out-of-range values in the file are an
// error naming the file and the key. The seed is left 0 (see Resolve).
func Defaults(dir string, thinking bool) (sample.Params, error) {
	p := sample.Params{Temperature: DefaultTemperature, TopK: DefaultTopK, TopP: DefaultTopP,
		RepeatPenalty: DefaultRepetitionPenalty, RepeatLastN: DefaultRepeatLastN}
	if thinking {
		p.Temperature, p.TopP = DefaultThinkingTemperature, DefaultThinkingTopP
	}
	path := filepath.Join(dir, GenerationConfigName)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return p, err
	}
	var g generationConfig
	if err := json.Unmarshal(b, &g); err != nil {
		return p, fmt.Errorf("%s: %w", path, err)
	}
	file := Sampling{Temperature: g.Temperature, TopK: g.TopK, TopP: g.TopP, MinP: g.MinP, RepetitionPenalty: g.RepetitionPenalty}
	if err := file.Check(); err != nil {
		return p, fmt.Errorf("%s: %w", path, err)
	}
	p = file.apply(p)
	if g.DoSample != nil && !*g.DoSample {
		p.Temperature = 0
	}
	return p, nil
}

// Resolve returns the settings for a request: s over Defaults(dir, thinking),
// with the seed chosen (RandomSeed or nil: from the clock; the result's Seed
// is the one used, so it can be printed and the run repeated).
func Resolve(dir string, thinking bool, s Sampling) (sample.Params, error) {
	if err := s.Check(); err != nil {
		return sample.Params{}, err
	}
	p, err := Defaults(dir, thinking)
	if err != nil {
		return p, err
	}
	p = s.apply(p)
	if s.Seed != nil && *s.Seed != RandomSeed {
		p.Seed = uint64(*s.Seed)
	} else {
		// Printed seeds should be typeable: keep them below 2^53 and positive.
		p.Seed = uint64(time.Now().UnixNano()) & (1<<53 - 1)
	}
	return p, nil
}

func (s Sampling) apply(p sample.Params) sample.Params {
	if s.Temperature != nil {
		p.Temperature = *s.Temperature
	}
	if s.TopK != nil {
		p.TopK = *s.TopK
	}
	if s.TopP != nil {
		p.TopP = *s.TopP
	}
	if s.MinP != nil {
		p.MinP = *s.MinP
	}
	if s.RepetitionPenalty != nil {
		p.RepeatPenalty = *s.RepetitionPenalty
	}
	if s.RepeatLastN != nil {
		p.RepeatLastN = *s.RepeatLastN
	}
	return p
}

// Check range-checks the settings that are set; the error names the setting
// (generation_config.json spelling) and the allowed range.
func (s Sampling) Check() error {
	floats := []struct {
		name   string
		v      *float32
		lo, hi float64
		open   bool // lo excluded
	}{
		{"temperature", s.Temperature, 0, math.MaxFloat32, false},
		{"top_p", s.TopP, 0, 1, false},
		{"min_p", s.MinP, 0, 1, false},
		{"repetition_penalty", s.RepetitionPenalty, 0, math.MaxFloat32, true},
	}
	for _, f := range floats {
		if f.v == nil {
			continue
		}
		v := float64(*f.v)
		if math.IsNaN(v) || math.IsInf(v, 0) || v < f.lo || v > f.hi || (f.open && v == f.lo) {
			want := fmt.Sprintf("in [%g, %g]", f.lo, f.hi)
			switch {
			case f.open:
				want = fmt.Sprintf("> %g", f.lo)
			case f.hi == math.MaxFloat32:
				want = fmt.Sprintf("≥ %g", f.lo)
			}
			return fmt.Errorf("%s %v: want a finite number %s", f.name, *f.v, want)
		}
	}
	if s.TopK != nil && *s.TopK < 0 {
		return fmt.Errorf("top_k %d: want ≥ 0 (0 disables it)", *s.TopK)
	}
	if s.RepeatLastN != nil && *s.RepeatLastN < 0 {
		return fmt.Errorf("repeat_last_n %d: want ≥ 0 (0 is the whole context)", *s.RepeatLastN)
	}
	if s.Seed != nil && *s.Seed < 0 && *s.Seed != RandomSeed {
		return fmt.Errorf("seed %d: want ≥ 0, or %d for a random seed", *s.Seed, RandomSeed)
	}
	return nil
}
