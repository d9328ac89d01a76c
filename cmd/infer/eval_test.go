package main

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fm-moe/fm/pkg/requant"
)

// evalText is a small English text for the golden models' tokenizer.
const evalText = `The quick brown fox jumps over the lazy dog. A journey of a thousand miles
begins with a single step. All that glitters is not gold; the early bird catches
the worm, and actions speak louder than words. Where there is a will, there is a
way: practice makes perfect, and knowledge is power. Fortune favours the bold.`

func evalJSON(t *testing.T, args ...string) map[string]any {
	t.Helper()
	out, stderr, err := execute(t, newEvalCmd(), "", append(args, "--json")...)
	if err != nil {
		t.Fatalf("eval %v: %v\n%s", args, err, stderr)
	}
	var r map[string]any
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("eval --json printed %q: %v", out, err)
	}
	return r
}

// TestEvalCommand: fm-infer eval prints the table and the JSON object of the
// contract; --compare against itself gives KL 0 and full agreement; --2bit
// and --3bit evaluate the requantized sets against the 16-bit directory;
// --decode agrees with prefill.
func TestEvalCommand(t *testing.T) {
	dir := convertGolden(t, filepath.Join(golden35, "hf"), 16)
	text := filepath.Join(t.TempDir(), "text.txt")
	if err := os.WriteFile(text, []byte(evalText), 0o644); err != nil {
		t.Fatal(err)
	}
	base := []string{"--model", dir, "--file", text, "--ctx", "16", "--no-verify"}

	out, _, err := execute(t, newEvalCmd(), "", append(base, "--compare", dir)...)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"perplexity", "KL", "0.00000", "top-1", "100.00%", "chunks × 16", "dense bf16"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}

	r := evalJSON(t, append(base, "--max-chunks", "3")...)
	if r["chunks"] != 3.0 || r["tokens"] != 48.0 || r["predictions"] != 45.0 || r["experts"] != "packed_experts" {
		t.Errorf("json: %v", r)
	}
	if _, ok := r["kl"]; ok {
		t.Error("json has kl without --compare")
	}
	ppl := r["perplexity"].(float64)
	if !(ppl > 1) || math.IsInf(ppl, 0) {
		t.Errorf("perplexity %v", ppl)
	}
	d := evalJSON(t, append(base, "--max-chunks", "3", "--decode")...)
	if rel := math.Abs(d["perplexity"].(float64)/ppl - 1); rel > 1e-4 {
		t.Errorf("decode perplexity %v, prefill %v", d["perplexity"], ppl)
	}

	for _, bits := range []int{2, 3} {
		if _, err := requant.Requantize(context.Background(), dir, requant.Options{Bits: bits}); err != nil {
			t.Fatal(err)
		}
		flag := map[int]string{2: "--2bit", 3: "--3bit"}[bits]
		q := evalJSON(t, append(base, "--max-chunks", "3", flag, "--compare", dir)...)
		if q["experts"] != requant.DirName(bits) || q["expert_bits"] != float64(bits) {
			t.Errorf("%s: evaluated experts %v (%v-bit)", flag, q["experts"], q["expert_bits"])
		}
		kl, top1 := q["kl"].(float64), q["top1"].(float64)
		if !(kl > 0) || !(top1 > 0 && top1 <= 1) || q["compare_perplexity"] != ppl {
			t.Errorf("%s: kl %v top1 %v compare_perplexity %v (16-bit %v)", flag, kl, top1, q["compare_perplexity"], ppl)
		}
		t.Logf("qwen35moe-tiny %s: perplexity %.3f (16-bit %.3f), KL %.4f, top-1 %.3f", flag, q["perplexity"], ppl, kl, top1)
	}

	k := evalJSON(t, append(base, "--max-chunks", "3", "--experts-per-token", "2", "--compare", dir)...)
	if k["experts_per_token"] != 2.0 || !(k["kl"].(float64) > 0) || !strings.Contains(k["compare_experts"].(string), "K=4") {
		t.Errorf("--experts-per-token 2: %v", k)
	}
}

func TestEvalCommandErrors(t *testing.T) {
	dir := convertGolden(t, filepath.Join(golden35, "hf"), 16)
	short := filepath.Join(t.TempDir(), "short.txt")
	os.WriteFile(short, []byte("Hello there."), 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--model", dir}, "--file (-f) is required"},
		{[]string{"--file", short}, "--model (-m) is required"},
		{[]string{"--model", dir, "--file", short}, "fewer than one chunk of 512"},
		{[]string{"--model", dir, "--file", short, "--ctx", "1"}, `"1" for "--ctx" flag: want an integer ≥ 2`},
		{[]string{"--model", dir, "--file", short, "--ctx", "2", "--2bit"}, "fm-requant2bit"},
		{[]string{"--model", dir, "--file", short, "--ctx", "2", "--2bit", "--3bit"}, "exclude each other"},
		{[]string{"--model", dir, "--file", short, "--ctx", "2", "--compare", t.TempDir()}, "--compare"},
		{[]string{"--model", dir, "--file", filepath.Join(dir, "missing.txt")}, "missing.txt"},
	} {
		if _, _, err := execute(t, newEvalCmd(), "", c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want %q", c.args, err, c.want)
		}
	}
}
