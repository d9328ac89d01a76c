package engine

import (
	"context"
	"testing"

	"github.com/fm-moe/fm/pkg/backend"
	"github.com/fm-moe/fm/pkg/experts"
)

// TestRAMBudgetToPackedExperts: in int8 mode, an --expert-cache-mb budget
// that holds every expert goes to the CPU's packed expert cache (the store
// keeps none, and a generation's experts hit the device cache); a budget
// that does not, or exact mode, leaves it with the store, as before.
func TestRAMBudgetToPackedExperts(t *testing.T) {
	dir := prepared(t, "qwen3moe-tiny", "mlx4")
	probe, err := backend.Open("cpu", backend.Options{Matmul: backend.MatmulInt8, ExpertCacheBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	packs := probe.(backend.ExpertCache).ExpertCacheStats().Budget > 0
	probe.Close()
	for _, tc := range []struct {
		name   string
		matmul backend.Matmul
		budget int64
		want   bool
	}{
		{"int8, all fit", backend.MatmulInt8, 1 << 30, packs},
		{"int8, one byte short", backend.MatmulInt8, -1, false},
		{"exact", backend.MatmulExact, 1 << 30, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			budget := tc.budget
			if budget < 0 {
				e, err := Open(context.Background(), Options{Dir: dir, Backend: "cpu"})
				if err != nil {
					t.Fatal(err)
				}
				budget = e.Set.Bytes(&e.Dir.Manifest.Config) - 1
				e.Close()
			}
			e, err := Open(context.Background(), Options{Dir: dir, Backend: "cpu", Matmul: tc.matmul,
				Store: experts.Options{CacheBytes: budget}})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			if e.DeviceRAMCache != tc.want {
				t.Fatalf("DeviceRAMCache %v, want %v", e.DeviceRAMCache, tc.want)
			}
			st := e.Model.NewState()
			if _, err := e.Model.Forward(context.Background(), st, []int{1, 2, 3, 4}, false); err != nil {
				t.Fatal(err)
			}
			if _, err := e.Model.Forward(context.Background(), st, []int{5}, false); err != nil {
				t.Fatal(err)
			}
			dc := e.Device.(backend.ExpertCache).ExpertCacheStats()
			io := e.Store.Stats()
			if tc.want && (dc.Hits == 0 || io.Hits != 0) || !tc.want && (dc.Hits+dc.Misses != 0 || io.Experts == 0) {
				t.Fatalf("device cache %+v, store %+v: the experts went the wrong way", dc, io)
			}
		})
	}
}
