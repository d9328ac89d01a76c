package model_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/fm-moe/fm/pkg/internal/hfload"
	"github.com/fm-moe/fm/pkg/model"
	"github.com/fm-moe/fm/pkg/tokenizer"
)

// TestRecordRoutingTrace writes the real routing of the trained tiny-code model
// over its held-out text, for the expert-cache policy study in pkg/experts
// (go test -bench PolicyHitRate ./pkg/experts -args -trace=FILE):
//
//	FM_ROUTING_TRACE=/tmp/trace.jsonl FM_TRACE_TOKENS=4096 go test -run RecordRoutingTrace ./pkg/model
//
// One JSON line per token: the expert ids of every sparse layer, in layer order.
func TestRecordRoutingTrace(t *testing.T) {
	out := os.Getenv("FM_ROUTING_TRACE")
	if out == "" {
		t.Skip("set FM_ROUTING_TRACE to record a routing trace")
	}
	n, _ := strconv.Atoi(os.Getenv("FM_TRACE_TOKENS"))
	if n <= 0 {
		n = 4096
	}
	dir := filepath.Join(goldenDir, "..", "models", "tiny-code")
	tok, err := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	text, err := os.ReadFile(filepath.Join(dir, "heldout.txt"))
	if err != nil {
		t.Fatal(err)
	}
	ids := tok.Encode(string(text))
	if len(ids) > n {
		ids = ids[:n]
	}
	ck, err := hfload.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	var perLayer [][][]int
	m, err := model.New(&ck.Config, ck, ck, model.Options{OnRoute: func(layer int, rows [][]int) {
		for len(perLayer) <= layer {
			perLayer = append(perLayer, nil)
		}
		for _, r := range rows {
			perLayer[layer] = append(perLayer[layer], append([]int(nil), r...))
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	// Chunks of 512 tokens from a fresh state, as the perplexity evaluation runs.
	for start := 0; start < len(ids); start += 512 {
		end := min(start+512, len(ids))
		if _, err := m.Forward(context.Background(), m.NewState(), ids[start:end], false); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	for i := range ids {
		var row [][]int
		for _, l := range perLayer {
			if l != nil {
				row = append(row, l[i])
			}
		}
		if err := enc.Encode(row); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d tokens × %d sparse layers written to %s", len(ids), len(perLayer), out)
}
