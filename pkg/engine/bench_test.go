package engine

import (
	"context"
	"testing"

	"github.com/fm-moe/fm/pkg/sample"
)

// BenchmarkTinyCode4BitDecode measures decode of the 4-bit demo model through
// the whole engine: mmapped dense weights, experts read by the store (page
// cache), sampling.
func BenchmarkTinyCode4BitDecode(b *testing.B) {
	e, err := Open(context.Background(), Options{Dir: convert(b, tinyCodeDir, 4)})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	prompt := []int{319, 282, 1457, 265, 1765, 438, 1651, 306}
	b.ResetTimer()
	res, err := e.Generate(context.Background(), e.Model.NewState(), prompt, GenerateOptions{
		MaxTokens: b.N + 1, Sampler: sample.New(sample.Params{})})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(res.Stats.DecodeTokensPerSecond(), "tok/s")
	b.ReportMetric(res.Stats.DecodeBytesPerToken(), "expert-B/token")
}
