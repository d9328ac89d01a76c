package cpu

import (
	"fmt"
	"math"
	"testing"
)

func TestComputePeak(t *testing.T) {
	p := ComputePeak(0, 1)
	want := map[int]string{levelGeneric: "go", levelAVX2: "avx2", levelAVX512: "avx512"}[simdLevel]
	if want == "" {
		want = "go"
	}
	if p.Kernel != want {
		t.Errorf("kernel %q at SIMD level %d, want %q", p.Kernel, simdLevel, want)
	}
	if !(p.F32FLOPS > 0) || math.IsInf(p.F32FLOPS, 0) {
		t.Errorf("float32 peak %v", p.F32FLOPS)
	}
	if haveInt8Peak() != (p.Int8OPS > 0) || math.IsInf(p.Int8OPS, 0) {
		t.Errorf("int8 peak %v with an int8 peak kernel: %v", p.Int8OPS, haveInt8Peak())
	}
}

// BenchmarkComputePeak reports the arithmetic ceilings on one worker and on
// all of them (their ratio says whether the CPUs share vector units).
func BenchmarkComputePeak(b *testing.B) {
	for _, w := range []int{1, 0} {
		b.Run(fmt.Sprintf("w%d", NewPool(w).Workers()), func(b *testing.B) {
			var p Peak
			for b.Loop() {
				p = ComputePeak(w, 3)
			}
			b.ReportMetric(p.F32FLOPS/1e9, "f32-GFLOP/s")
			b.ReportMetric(p.Int8OPS/1e9, "int8-GOP/s")
		})
	}
}
