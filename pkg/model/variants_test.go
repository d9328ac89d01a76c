package model_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fm-moe/fm/pkg/backend"
	"github.com/fm-moe/fm/pkg/internal/hfload"
	"github.com/fm-moe/fm/pkg/layout"
	"github.com/fm-moe/fm/pkg/model"
)

// renamed is a Weights whose tensors can be hidden or served under other names.
type renamed struct {
	w     model.Weights
	alias map[string]string // name asked → name served ("" hides it)
}

func (r renamed) Tensor(name string) *layout.Tensor {
	if a, ok := r.alias[name]; ok {
		if a == "" {
			return nil
		}
		t := *r.w.Tensor(a)
		t.Name = name
		return &t
	}
	return r.w.Tensor(name)
}

func (r renamed) Bytes(p layout.Part) []byte { return r.w.Bytes(p) }

func logitsOf(t *testing.T, m *model.Model, ids []int) []float32 {
	t.Helper()
	out, err := m.Forward(context.Background(), m.NewState(), ids, true)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var someIDs = []int{17, 400, 3, 999, 2500, 64, 1200}

// TestTiedEmbeddings: without lm_head and with tie_word_embeddings the output
// projection is the embedding; serving the embedding as lm_head must give the
// same logits bit for bit.
func TestTiedEmbeddings(t *testing.T) {
	for _, src := range []string{"hf", "mlx4"} {
		ck, err := hfload.Load(filepath.Join(goldenDir, "qwen3moe-tiny", src))
		if err != nil {
			t.Fatal(err)
		}
		asHead, err := model.New(&ck.Config, renamed{ck, map[string]string{"lm_head": "embed_tokens"}}, ck, model.Options{})
		if err != nil {
			t.Fatal(err)
		}
		cfg := ck.Config
		cfg.TieWordEmbeddings = true
		tied, err := model.New(&cfg, renamed{ck, map[string]string{"lm_head": ""}}, ck, model.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if a, b := logitsOf(t, asHead, someIDs), logitsOf(t, tied, someIDs); fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("%s: tied embeddings differ from the embedding served as lm_head", src)
		}
		cfg.TieWordEmbeddings = false
		if _, err := model.New(&cfg, renamed{ck, map[string]string{"lm_head": ""}}, ck, model.Options{}); err == nil ||
			!strings.Contains(err.Error(), `"lm_head" missing`) {
			t.Errorf("%s: missing lm_head without tying: %v", src, err)
		}
	}
}

// TestExpertsPerToken: lowering K fetches fewer experts and changes the
// output; raising it is refused.
func TestExpertsPerToken(t *testing.T) {
	ck, err := hfload.Load(filepath.Join(goldenDir, "qwen35moe-tiny", "hf"))
	if err != nil {
		t.Fatal(err)
	}
	full, err := model.New(&ck.Config, ck, ck, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	k2, err := model.New(&ck.Config, ck, ck, model.Options{ExpertsPerToken: 2})
	if err != nil {
		t.Fatal(err)
	}
	if full.ExpertsPerToken() != 4 || k2.ExpertsPerToken() != 2 {
		t.Fatalf("K = %d and %d, want 4 and 2", full.ExpertsPerToken(), k2.ExpertsPerToken())
	}
	fetched := func(m *model.Model) int64 {
		st := m.NewState()
		st.Profile = &model.Profile{}
		for _, id := range someIDs {
			if _, err := m.Forward(context.Background(), st, []int{id}, false); err != nil {
				t.Fatal(err)
			}
		}
		return st.Profile.ExpertsFetched
	}
	layers := int64(ck.Config.NumLayers * len(someIDs))
	if f, f2 := fetched(full), fetched(k2); f != 4*layers || f2 != 2*layers {
		t.Errorf("experts fetched in decode: %d with K=4, %d with K=2; want %d and %d", f, f2, 4*layers, 2*layers)
	}
	if c := hfload.CompareRow(logitsOf(t, k2, someIDs), logitsOf(t, full, someIDs)); c.RelErr < 1e-3 {
		t.Errorf("K=2 logits equal K=4's (rel diff %g)", c.RelErr)
	}
	if _, err := model.New(&ck.Config, ck, ck, model.Options{ExpertsPerToken: 5}); err == nil {
		t.Error("raising K accepted")
	}
}

// TestMissingAndMisshapenTensors: New names the tensor and the expectation.
func TestMissingAndMisshapenTensors(t *testing.T) {
	ck, err := hfload.Load(filepath.Join(goldenDir, "qwen3next-tiny", "hf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		alias map[string]string
		want  string
	}{
		{map[string]string{"layers.2.linear_attn.in_proj_z": ""}, `tensor "layers.2.linear_attn.in_proj_z" missing`},
		{map[string]string{"layers.1.linear_attn.in_proj_z": "layers.1.linear_attn.in_proj_qkv"}, `tensor "layers.1.linear_attn.in_proj_z": want shape [192 128], got [320 128]`},
		{map[string]string{"layers.3.self_attn.q_norm": "norm"}, `tensor "layers.3.self_attn.q_norm": want 64 elements`},
	} {
		_, err := model.New(&ck.Config, renamed{ck, tc.alias}, ck, model.Options{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.alias, err, tc.want)
		}
	}
}

// TestForwardRejectsBadTokens names the offending id.
func TestForwardRejectsBadTokens(t *testing.T) {
	m := loadHF(t, filepath.Join(goldenDir, "qwen3moe-tiny", "hf"), model.Options{})
	if _, err := m.Forward(context.Background(), m.NewState(), []int{1, 4032}, false); err == nil || !strings.Contains(err.Error(), "token 4032") {
		t.Errorf("out-of-vocabulary id: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Forward(ctx, m.NewState(), []int{1, 2}, false); err != context.Canceled {
		t.Errorf("cancelled context: %v", err)
	}
}

// TestChunkingAndExpertBatches: the prefill chunk size and the number of
// experts fetched per batch (with read-ahead of the next batch) change only
// the schedule: fetching in batches of 3 gives bit-identical logits, and any
// chunk size the same logits up to float32 rounding.
func TestChunkingAndExpertBatches(t *testing.T) {
	dir := "../../testdata/models/tiny-code"
	ck, err := hfload.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]int, 150)
	for i := range ids {
		ids[i] = (i*7919 + 13) % ck.Config.VocabSize
	}
	base, err := model.New(&ck.Config, ck, ck, model.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := logitsOf(t, base, ids)
	V := ck.Config.VocabSize
	for _, opts := range []model.Options{{ExpertBatch: 3}, {PrefillChunk: 1}, {PrefillChunk: 7}, {PrefillChunk: 64, ExpertBatch: 5}} {
		m, err := model.New(&ck.Config, ck, ck, opts)
		if err != nil {
			t.Fatal(err)
		}
		got := logitsOf(t, m, ids)
		for r := range ids {
			c := hfload.CompareRow(got[r*V:(r+1)*V], want[r*V:(r+1)*V])
			if opts.PrefillChunk == 0 && c.RelErr != 0 {
				t.Fatalf("%+v row %d: rel diff %g, want bit-identical", opts, r, c.RelErr)
			}
			if c.RelErr > 1e-5 {
				t.Fatalf("%+v row %d: rel diff %g", opts, r, c.RelErr)
			}
		}
	}
}

// failingExperts fails the fetch of one expert and counts buffers handed out
// and given back.
type failingExperts struct {
	model.Experts
	layer, expert     int
	fetched, released atomic.Int64
}

func (f *failingExperts) FetchExperts(ctx context.Context, layer int, ids []int, data [][]byte) (func(), error) {
	for _, id := range ids {
		if layer == f.layer && id == f.expert {
			return nil, fmt.Errorf("read layer_%02d_expert_%04d.bin: input/output error", layer, id)
		}
	}
	release, err := f.Experts.FetchExperts(ctx, layer, ids, data)
	if err != nil {
		return nil, err
	}
	f.fetched.Add(1)
	return func() { f.released.Add(1); release() }, nil
}

// TestExpertReadError: a failed expert read fails Forward with an error naming
// the layer and expert, and every buffer that was fetched is released.
func TestExpertReadError(t *testing.T) {
	ck, err := hfload.Load(filepath.Join(goldenDir, "qwen35moe-tiny", "hf"))
	if err != nil {
		t.Fatal(err)
	}
	// Fail each expert of layer 2 in turn until one the prompt routes to fails.
	fe := &failingExperts{Experts: ck, layer: 2}
	for e := 0; e < ck.Config.NumExperts && err == nil; e++ {
		fe.expert = e
		m, nerr := model.New(&ck.Config, ck, fe, model.Options{ExpertBatch: 4})
		if nerr != nil {
			t.Fatal(nerr)
		}
		_, err = m.Forward(context.Background(), m.NewState(), someIDs, false)
	}
	if err == nil {
		t.Fatal("no expert of layer 2 was ever fetched")
	}
	if want := fmt.Sprintf("layer 2 expert %d: read layer_02_expert_%04d.bin: input/output error", fe.expert, fe.expert); !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not contain %q", err, want)
	}
	if f, r := fe.fetched.Load(), fe.released.Load(); f != r {
		t.Errorf("%d fetches, %d releases", f, r)
	}
}

// slowExperts is an expert source whose every fetch takes a few milliseconds
// (a disk read), and which has none of the optional interfaces.
type slowExperts struct{ model.Experts }

func (s slowExperts) FetchExperts(ctx context.Context, layer int, ids []int, data [][]byte) (func(), error) {
	time.Sleep(2 * time.Millisecond)
	return s.Experts.FetchExperts(ctx, layer, ids, data)
}

// instantExperts is an expert source that says it needs no reads.
type instantExperts struct{ model.Experts }

func (instantExperts) FetchesInstantly() bool { return true }

// restCounter is a CPU device that counts the model's Rest calls (and batches
// experts, as the CPU does).
type restCounter struct {
	backend.Device
	rests atomic.Int64
}

func (r *restCounter) ExpertFFNs(out, x backend.Tensor, es []backend.Expert, rows [][]int, weights [][]float32) {
	r.Device.(backend.ExpertBatcher).ExpertFFNs(out, x, es, rows, weights)
}

func (r *restCounter) Rest() {
	r.rests.Add(1)
	r.Device.(backend.Rester).Rest()
}

// TestRestBeforeExpertWait: the model tells the device to rest before it
// waits for an expert read that has not finished, and never when its experts
// need no read; the logits do not change.
func TestRestBeforeExpertWait(t *testing.T) {
	ck, err := hfload.Load(filepath.Join(goldenDir, "qwen35moe-tiny", "hf"))
	if err != nil {
		t.Fatal(err)
	}
	cpu, err := backend.Open("cpu", backend.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cpu.Close()
	if _, ok := cpu.(backend.Rester); !ok {
		t.Fatal("the CPU device does not implement backend.Rester")
	}
	run := func(experts model.Experts) ([]float32, int64) {
		dev := &restCounter{Device: cpu}
		m, err := model.New(&ck.Config, ck, experts, model.Options{Device: dev})
		if err != nil {
			t.Fatal(err)
		}
		logits, err := m.Forward(context.Background(), m.NewState(), someIDs, false)
		if err != nil {
			t.Fatal(err)
		}
		return logits, dev.rests.Load()
	}
	instant, n := run(instantExperts{ck})
	if n != 0 {
		t.Errorf("%d rests with experts in memory, want none", n)
	}
	slow, n := run(slowExperts{ck})
	if n == 0 {
		t.Error("no rest while waiting for slow expert reads")
	}
	if !slices.Equal(instant, slow) {
		t.Error("logits differ between the in-memory and the slow source")
	}
}

// TestOnRoute: the routing observer sees every sparse layer once per token, K
// distinct experts each, and the batched prefill routes exactly as the
// token-by-token decode does.
func TestOnRoute(t *testing.T) {
	ck, err := hfload.Load(filepath.Join(goldenDir, "qwen3next-tiny", "hf"))
	if err != nil {
		t.Fatal(err)
	}
	record := func(prefill bool) [][][]int { // [layer][token] -> ids
		trace := make([][][]int, ck.Config.NumLayers)
		m, err := model.New(&ck.Config, ck, ck, model.Options{PrefillChunk: 3, OnRoute: func(layer int, ids [][]int) {
			for _, row := range ids {
				trace[layer] = append(trace[layer], append([]int(nil), row...))
			}
		}})
		if err != nil {
			t.Fatal(err)
		}
		st := m.NewState()
		if prefill {
			_, err = m.Forward(context.Background(), st, someIDs, false)
		} else {
			for _, id := range someIDs {
				if _, err = m.Forward(context.Background(), st, []int{id}, false); err != nil {
					break
				}
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		return trace
	}
	pre, dec := record(true), record(false)
	for l := range pre {
		if len(pre[l]) != len(someIDs) {
			t.Fatalf("layer %d: %d routed tokens, want %d", l, len(pre[l]), len(someIDs))
		}
		for tok, ids := range pre[l] {
			if len(ids) != ck.Config.NumExpertsPerTok {
				t.Fatalf("layer %d token %d: %v, want %d experts", l, tok, ids, ck.Config.NumExpertsPerTok)
			}
			if !slices.Equal(ids, dec[l][tok]) {
				t.Errorf("layer %d token %d: prefill routes %v, decode %v", l, tok, ids, dec[l][tok])
			}
		}
	}
}
