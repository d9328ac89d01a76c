package model_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/fm-moe/fm/pkg/model"
)

// BenchmarkTinyCodeDecode measures single-token decode of the trained model
// with experts in memory (no I/O): the compute cost per token.
func BenchmarkTinyCodeDecode(b *testing.B) {
	m, st := tinyCodeAfterPrompt(b)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := m.Forward(ctx, st, []int{100 + i%50}, false); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tok/s")
}

// BenchmarkTinyCodePrefill measures prefills of 256 and 2048 tokens; at 2048
// the attention's quadratic term and the GatedDeltaNet weigh most among the
// mixers (compare with fm-infer run --timing for the per-layer split).
func BenchmarkTinyCodePrefill(b *testing.B) {
	m := loadHF(b, "../../testdata/models/tiny-code", model.Options{})
	ctx := context.Background()
	for _, n := range []int{256, 2048} {
		b.Run(fmt.Sprintf("tokens=%d", n), func(b *testing.B) {
			ids := make([]int, n)
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
		})
	}
}

// tinyCodeAfterPrompt loads the trained model and a state that has read an
// 8-token prompt, ready for decode steps.
func tinyCodeAfterPrompt(tb testing.TB) (*model.Model, *model.State) {
	tb.Helper()
	m := loadHF(tb, "../../testdata/models/tiny-code", model.Options{})
	st := m.NewState()
	if _, err := m.Forward(context.Background(), st, []int{1, 2, 3, 4, 5, 6, 7, 8}, false); err != nil {
		tb.Fatal(err)
	}
	return m, st
}
