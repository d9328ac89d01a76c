package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fm-moe/fm/pkg/checkpoint"
	"github.com/fm-moe/fm/pkg/layout"
	"github.com/fm-moe/fm/pkg/tokenizer"
)

const verifySource = "../../testdata/golden/qwen3moe-tiny/hf"

// prepareForVerify runs fm-extract's and (when repack) fm-repack's conversion.
func prepareForVerify(t *testing.T, repack bool) string {
	t.Helper()
	dir := t.TempDir()
	opts := checkpoint.Options{LoadTokenizer: func(p string) (checkpoint.TokenizerWriter, error) { return tokenizer.Load(p) }}
	if _, err := checkpoint.Extract(context.Background(), verifySource, dir, opts); err != nil {
		t.Fatal(err)
	}
	if repack {
		if _, err := checkpoint.Repack(context.Background(), verifySource, dir, opts); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func runVerify(dir string) (stderr string, err error) {
	cmd := newVerifyCmd()
	var e bytes.Buffer
	cmd.SetOut(&e)
	cmd.SetErr(&e)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true // as under the fm-infer root
	cmd.SetArgs([]string{"--model", dir})
	err = cmd.ExecuteContext(context.Background())
	return e.String(), err
}

// flipByte changes one byte of a file in place.
func flipByte(t *testing.T, path string, at int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[at] ^= 0x55
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// fm-infer verify names every bad file on stderr (one line each) and fails;
// a clean directory passes with a summary.
func TestVerifyCommand(t *testing.T) {
	dir := prepareForVerify(t, true)
	stderr, err := runVerify(dir)
	if err != nil || !strings.Contains(stderr, "all match") {
		t.Fatalf("clean directory: %v\n%s", err, stderr)
	}
	m, err := layout.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	set := m.ExpertSet(layout.ExpertsDir)
	corrupt, missing := set.Path(dir, 1, 5), set.Path(dir, 2, 0)
	flipByte(t, corrupt, 4000)
	os.Remove(missing)
	dense := filepath.Join(dir, layout.DenseName)
	if err := os.Truncate(dense, m.Dense.Size-4096); err != nil {
		t.Fatal(err)
	}
	tokBin := filepath.Join(dir, tokenizer.BinaryFile)
	flipByte(t, tokBin, 100)
	vocab := filepath.Join(dir, tokenizer.VocabFile)
	os.Remove(vocab)

	stderr, err = runVerify(dir)
	if err == nil || !strings.Contains(err.Error(), "5 problems") {
		t.Fatalf("err = %v", err)
	}
	want := map[string]string{
		corrupt: "checksum mismatch",
		missing: "missing",
		dense:   "size",
		tokBin:  "checksum mismatch",
		vocab:   "missing",
	}
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if len(lines) != len(want) {
		t.Fatalf("want one line per bad file, got:\n%s", stderr)
	}
	for path, cause := range want {
		found := false
		for _, l := range lines {
			found = found || strings.HasPrefix(l, "bad file: "+path+": ") && strings.Contains(l, cause)
		}
		if !found {
			t.Errorf("no line names %s (%s):\n%s", path, cause, stderr)
		}
	}
}

// A directory fm-repack has not completed does not pass, and one without a
// manifest is named as not prepared.
func TestVerifyIncomplete(t *testing.T) {
	dir := prepareForVerify(t, false)
	stderr, err := runVerify(dir)
	if err == nil || !strings.Contains(stderr, filepath.Join(dir, layout.ExpertsDir)) || !strings.Contains(stderr, "run fm-repack") {
		t.Fatalf("extract only: %v\n%s", err, stderr)
	}
	empty := t.TempDir()
	if _, err := runVerify(empty); err == nil || !strings.Contains(err.Error(), "not a prepared directory") {
		t.Fatalf("no manifest: %v", err)
	}
}

// rewriteManifest edits the manifest and writes it back with a valid
// manifest_checksum, as a buggy writer (not a hand edit) would.
func rewriteManifest(t *testing.T, dir string, edit func(m *layout.Manifest)) {
	t.Helper()
	m, err := layout.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	edit(m)
	b, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	// Written without layout.WriteManifest's validation, as a foreign tool
	// might; the checksum is made to match so only the semantic checks can
	// catch it.
	var c layout.Manifest
	json.Unmarshal(b, &c)
	c.ManifestChecksum = ""
	if c.ManifestChecksum, err = c.Digest(); err != nil {
		t.Fatal(err)
	}
	b, _ = json.MarshalIndent(&c, "", " ")
	if err := os.WriteFile(filepath.Join(dir, layout.ManifestName), append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyProvesItRuns is defect 2 of issue 9: verify passed manifests that
// run rejects or runs wrongly. Each damage here leaves every file's checksum
// intact; verify must still fail, naming what is wrong, and so must run.
func TestVerifyProvesItRuns(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(t *testing.T, dir string)
		want string
	}{
		{"hand-edited manifest", func(t *testing.T, dir string) {
			p := filepath.Join(dir, layout.ManifestName)
			b, _ := os.ReadFile(p)
			i := strings.Index(string(b), `"rms_norm_eps": `)
			j := i + strings.IndexByte(string(b[i:]), ',')
			os.WriteFile(p, []byte(string(b[:i])+`"rms_norm_eps": -1`+string(b[j:])), 0o644)
		}, "manifest checksum mismatch"},
		{"rms_norm_eps -1", func(t *testing.T, dir string) {
			rewriteManifest(t, dir, func(m *layout.Manifest) { m.Config.RMSNormEps = -1 })
		}, "rms_norm_eps -1"},
		{"dense tensor entry deleted", func(t *testing.T, dir string) {
			rewriteManifest(t, dir, func(m *layout.Manifest) {
				for i, tt := range m.Tensors {
					if tt.Name == "layers.1.post_attention_layernorm" {
						m.Tensors = append(m.Tensors[:i], m.Tensors[i+1:]...)
						return
					}
				}
				t.Fatal("no tensor to delete")
			})
		}, "layers.1.post_attention_layernorm"},
		{"vocab_size disagrees with the embedding", func(t *testing.T, dir string) {
			rewriteManifest(t, dir, func(m *layout.Manifest) { m.Config.VocabSize -= 16 })
		}, "embed_tokens"},
		{"expert component offset moved", func(t *testing.T, dir string) {
			rewriteManifest(t, dir, func(m *layout.Manifest) { m.Experts[0].Components[0].Data.Offset = 4096 })
		}, "overlaps"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := prepareForVerify(t, true)
			tc.edit(t, dir)
			stderr, err := runVerify(dir)
			if err == nil || !strings.Contains(err.Error()+stderr, tc.want) {
				t.Fatalf("verify: %v\n%s\nwant %q", err, stderr, tc.want)
			}
			_, _, err = execute(t, newRunCmd(), "", "-m", dir, "-p", "x", "-n", "2", "--no-verify")
			if err == nil {
				t.Fatalf("run accepted the directory verify refuses")
			}
		})
	}
}

// TestVerifyQuick: --quick skips hashing (a flipped byte passes) but not
// sizes or the open-and-run check.
func TestVerifyQuick(t *testing.T) {
	dir := prepareForVerify(t, true)
	m, err := layout.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	set := m.ExpertSet(layout.ExpertsDir)
	// A flipped byte in the dense file's alignment padding: only hashing can
	// see it.
	var parts []layout.Part
	for _, tt := range m.Tensors {
		for _, p := range tt.Parts() {
			parts = append(parts, *p)
		}
	}
	slices.SortFunc(parts, func(a, b layout.Part) int { return cmp.Compare(a.Offset, b.Offset) })
	gap := int64(-1)
	for i := 1; i < len(parts) && gap < 0; i++ {
		if end := parts[i-1].Offset + parts[i-1].Size; end < parts[i].Offset {
			gap = end
		}
	}
	if gap < 0 {
		t.Fatal("the dense file has no padding to damage")
	}
	flipByte(t, filepath.Join(dir, layout.DenseName), int(gap))
	quick := func() (string, error) {
		cmd := newVerifyCmd()
		var e bytes.Buffer
		cmd.SetOut(&e)
		cmd.SetErr(&e)
		cmd.SetArgs([]string{"-m", dir, "--quick"})
		err := cmd.ExecuteContext(context.Background())
		return e.String(), err
	}
	if stderr, err := quick(); err != nil || !strings.Contains(stderr, "--quick") {
		t.Fatalf("--quick on a flipped padding byte: %v\n%s", err, stderr)
	}
	if _, err := runVerify(dir); err == nil {
		t.Fatal("full verify missed the flipped byte")
	}
	os.Truncate(set.Path(dir, 1, 5), 4096)
	if stderr, err := quick(); err == nil || !strings.Contains(stderr, "size 4096") {
		t.Fatalf("--quick on a truncated file: %v\n%s", err, stderr)
	}
}
