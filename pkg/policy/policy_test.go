package policy

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/fm-moe/fm/pkg/backend"
	"github.com/fm-moe/fm/pkg/layout"
	"github.com/fm-moe/fm/pkg/sample"
	"github.com/fm-moe/fm/pkg/tokenizer"
)

func ptr[T any](v T) *T { return &v }

func writeGenConfig(t *testing.T, body string) string {
	t.Helper()
	dir := t.TempDir()
	if body != "" {
		if err := os.WriteFile(filepath.Join(dir, GenerationConfigName), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestResolve: explicit settings over generation_config.json over Qwen's
// recommendations; the seed is explicit or picked, never silently random.
func TestResolve(t *testing.T) {
	for _, tc := range []struct {
		name     string
		genCfg   string
		thinking bool
		s        Sampling
		want     sample.Params // Seed checked separately
	}{
		{"defaults", "", false, Sampling{}, sample.Params{Temperature: 0.7, TopK: 20, TopP: 0.8, RepeatPenalty: 1.1, RepeatLastN: 64}},
		{"thinking defaults", "", true, Sampling{}, sample.Params{Temperature: 0.6, TopK: 20, TopP: 0.95, RepeatPenalty: 1.1, RepeatLastN: 64}},
		{"file", `{"temperature": 0.3, "top_k": 5, "top_p": 0.5, "min_p": 0.1, "repetition_penalty": 1.3}`, false, Sampling{},
			sample.Params{Temperature: 0.3, TopK: 5, TopP: 0.5, MinP: 0.1, RepeatPenalty: 1.3, RepeatLastN: 64}},
		{"do_sample false is greedy", `{"do_sample": false, "temperature": 0.9}`, false, Sampling{},
			sample.Params{TopK: 20, TopP: 0.8, RepeatPenalty: 1.1, RepeatLastN: 64}},
		{"explicit over file", `{"temperature": 0.3, "top_k": 5}`, false, Sampling{Temperature: ptr[float32](0), TopK: ptr(0), RepeatLastN: ptr(0)},
			sample.Params{TopP: 0.8, RepeatPenalty: 1.1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Resolve(writeGenConfig(t, tc.genCfg), tc.thinking, tc.s)
			if err != nil {
				t.Fatal(err)
			}
			got := p
			got.Seed = 0
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	dir := writeGenConfig(t, "")
	if p, err := Resolve(dir, false, Sampling{Seed: ptr[int64](42)}); err != nil || p.Seed != 42 {
		t.Errorf("seed 42: %v %v", p.Seed, err)
	}
	a, _ := Resolve(dir, false, Sampling{Seed: ptr[int64](RandomSeed)})
	if a.Seed == 0 || a.Seed >= 1<<53 {
		t.Errorf("random seed %d: want a printable positive seed below 2^53", a.Seed)
	}
}

// TestResolveRefuses: out-of-range settings, from a request or from the file,
// are errors naming the setting (and the file).
func TestResolveRefuses(t *testing.T) {
	for _, tc := range []struct {
		name   string
		genCfg string
		s      Sampling
		want   string
	}{
		{"top_p", "", Sampling{TopP: ptr[float32](2)}, "top_p 2"},
		{"min_p", "", Sampling{MinP: ptr[float32](-0.5)}, "min_p -0.5"},
		{"penalty zero", "", Sampling{RepetitionPenalty: ptr[float32](0)}, "repetition_penalty 0"},
		{"temperature NaN", "", Sampling{Temperature: ptr(float32(math.NaN()))}, "temperature NaN"},
		{"temperature negative", "", Sampling{Temperature: ptr[float32](-1)}, "temperature -1"},
		{"top_k", "", Sampling{TopK: ptr(-3)}, "top_k -3"},
		{"repeat_last_n", "", Sampling{RepeatLastN: ptr(-1)}, "repeat_last_n -1"},
		{"seed", "", Sampling{Seed: ptr[int64](-5)}, "seed -5"},
		{"file value", `{"top_p": 7}`, Sampling{}, GenerationConfigName + ": top_p 7"},
		{"file JSON", `{"top_p": `, Sampling{}, GenerationConfigName},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Resolve(writeGenConfig(t, tc.genCfg), false, tc.s)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func loadTokenizer(t *testing.T) *tokenizer.Tokenizer {
	t.Helper()
	tok, err := tokenizer.Load("../../testdata/golden/qwen35moe-tiny/hf")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestThinkSplitter: reasoning, tags and answer come apart, in order, and
// their concatenation is the decoded text; a prompt that opened <think>
// starts the reply inside it.
func TestThinkSplitter(t *testing.T) {
	tok := loadTokenizer(t)
	open, ok1 := tok.TokenID(ThinkOpen)
	closeID, ok2 := tok.TokenID(ThinkClose)
	if !ok1 || !ok2 {
		t.Fatal("tokenizer lacks the think tags")
	}
	enc := func(s string) []int { return tok.Encode(s) }
	for _, tc := range []struct {
		name   string
		prompt []int
		reply  []int
		want   string // kinds: A answer, R reasoning, < open tag, > close tag, per part
	}{
		{"open in reply", nil, concat([]int{open}, enc("plan é"), []int{closeID}, enc("\n\nanswer")), "<R>A"},
		{"opened by the prompt", []int{open}, concat(enc("plan"), []int{closeID}, enc("ok")), "R>A"},
		{"closed in the prompt", []int{open, closeID}, enc("just answer"), "A"},
		{"no tags", nil, enc("plain"), "A"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewThinkSplitter(tok, tc.prompt)
			var kinds, text strings.Builder
			var reasoning, answer string
			add := func(parts []Part) {
				for _, p := range parts {
					k := "AR<>"[p.Kind]
					if kinds.Len() == 0 || kinds.String()[kinds.Len()-1] != k {
						kinds.WriteByte(k)
					}
					text.WriteString(p.Text)
					switch p.Kind {
					case Reasoning:
						reasoning += p.Text
					case Answer:
						answer += p.Text
					}
				}
			}
			for _, id := range tc.reply {
				add(s.Add(id))
			}
			add(s.Flush())
			if kinds.String() != tc.want {
				t.Errorf("parts %q, want %q", kinds.String(), tc.want)
			}
			if want := tok.Decode(tc.reply); text.String() != want {
				t.Errorf("text %q, want the decoded reply %q", text.String(), want)
			}
			r, a := SplitReasoning(text.String())
			if strings.TrimSpace(r) != strings.TrimSpace(reasoning) || a != strings.TrimLeft(answer, "\n") {
				t.Errorf("SplitReasoning = %q, %q; streamed %q, %q", r, a, reasoning, answer)
			}
		})
	}
}

func concat(parts ...[]int) []int {
	var out []int
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestStopTokens(t *testing.T) {
	tok := loadTokenizer(t)
	end, _ := tok.TokenID("<|im_end|>")
	got := StopTokens([]int{end, 7}, tok)
	if got[0] != end || got[1] != 7 {
		t.Fatalf("StopTokens = %v: the config's ids come first", got)
	}
	seen := map[int]bool{}
	for _, id := range got {
		if seen[id] {
			t.Fatalf("StopTokens = %v: duplicate %d", got, id)
		}
		seen[id] = true
	}
}

// TestContext: the default is the model's limit, capped by memory; an
// explicit size above the limit is an error naming the flag.
func TestContext(t *testing.T) {
	c := &layout.Config{MaxPositionEmbeddings: 4096, NumKeyValueHeads: 2, HeadDim: 128,
		LayerTypes: []string{layout.FullAttention, layout.LinearAttention, layout.FullAttention}}
	per := int64(2 * 2 * 2 * 128 * 4) // layers × K,V × heads × dim × float32
	for _, tc := range []struct {
		name      string
		requested int
		avail     int64
		want      int
		note, err string
	}{
		{"default", 0, 0, 4096, "", ""},
		{"default, memory is ample", 0, 1 << 40, 4096, "", ""},
		{"default, capped", 0, 2 * 1000 * per, 1000, "capped at 1000", ""},
		{"explicit", 512, 0, 512, "", ""},
		{"explicit, large for memory", 4000, 2 * 1000 * per, 4000, "more than half", ""},
		{"explicit above the model", 8192, 0, 0, "", "--ctx-size 8192"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, note, err := Context(c, tc.requested, tc.avail)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want || !strings.Contains(note, tc.note) || (tc.note == "" && note != "") {
				t.Fatalf("Context = %d, %q, %v; want %d, note with %q", got, note, err, tc.want, tc.note)
			}
		})
	}
}

// TestExpertsSelector: --experts Nbit picks the set with those bits (the
// one fm-repack wrote first), --2bit/--3bit are its aliases, and a missing
// set names the command that writes it.
func TestExpertsSelector(t *testing.T) {
	m := &layout.Manifest{Experts: []layout.ExpertSet{
		{Dir: layout.ExpertsDir, Bits: 4}, {Dir: layout.Experts2BitDir, Bits: 2}}}
	for _, tc := range []struct {
		f         EngineFlags
		want, err string
	}{
		{EngineFlags{}, "", ""},
		{EngineFlags{Experts: "4bit"}, layout.ExpertsDir, ""},
		{EngineFlags{Experts: "2bit"}, layout.Experts2BitDir, ""},
		{EngineFlags{TwoBit: true}, layout.Experts2BitDir, ""},
		{EngineFlags{TwoBit: true, Experts: "2bit"}, layout.Experts2BitDir, ""},
		{EngineFlags{TwoBit: true, Experts: "4bit"}, "", "exclude each other"},
		{EngineFlags{ThreeBit: true}, "", "fm-requant2bit --bits 3"},
		{EngineFlags{Experts: "8bit"}, "", "fm-repack --bits 8"},
		{EngineFlags{Experts: "four"}, "", `--experts "four"`},
		{EngineFlags{Experts: "2bits"}, "", `--experts "2bits"`},
	} {
		got, err := tc.f.expertsDir(m)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%+v: error %v, want %q", tc.f, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%+v: %q, %v; want %q", tc.f, got, err, tc.want)
		}
	}
}

func TestMatmulFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want backend.Matmul
		err  string
	}{
		{nil, backend.MatmulExact, ""},
		{[]string{"--matmul", "exact"}, backend.MatmulExact, ""},
		{[]string{"--matmul", "int8"}, backend.MatmulInt8, ""},
		{[]string{"--matmul", "fast"}, "", `"--matmul"`},
	} {
		var f EngineFlags
		fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
		fs.SetOutput(io.Discard)
		f.Register(fs)
		err := fs.Parse(tc.args)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: error %v, want one naming %s", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil || f.Matmul != tc.want {
			t.Errorf("%v: %q, %v; want %q", tc.args, f.Matmul, err, tc.want)
		}
	}
}

func TestWorkers(t *testing.T) {
	for _, c := range []struct {
		threads, cpus, want int
		note                bool
	}{
		{0, 8, 8, false},
		{1, 8, 1, false},
		{8, 8, 8, false},
		{9, 8, 8, true},
		{64, 2, 2, true},
	} {
		got, note := Workers(c.threads, c.cpus)
		if got != c.want || (note != "") != c.note {
			t.Errorf("Workers(%d, %d) = %d, %q; want %d, a note: %v", c.threads, c.cpus, got, note, c.want, c.note)
		}
		if c.note && !strings.Contains(note, fmt.Sprintf("--threads %d", c.threads)) {
			t.Errorf("note %q does not name the flag's value", note)
		}
	}
}
