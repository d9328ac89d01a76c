package model_test

import (
	"context"
	"testing"

	"github.com/fm-moe/fm/pkg/model"
)

// BenchmarkTinyCodePrefillLong measures a 2048-token prefill, where the
// attention's quadratic term and the GatedDeltaNet recurrence weigh most
// among the mixers (compare with fm-infer run --timing for the per-layer split).
func BenchmarkTinyCodePrefillLong(b *testing.B) {
	m := loadHF(b, "../../testdata/models/tiny-code", model.Options{})
	ctx := context.Background()
	ids := make([]int, 2048)
	for i := range ids {
		ids[i] = 10 + (i*37)%3000
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := m.Forward(ctx, m.NewState(), ids, false); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(ids))/b.Elapsed().Seconds(), "tok/s")
}
