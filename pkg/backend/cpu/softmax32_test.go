package cpu

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestExp32(t *testing.T) {
	worst := 0.0
	for x := float32(-87); x <= 0; x += 0.0123 {
		got, want := float64(exp32(x)), math.Exp(float64(x))
		worst = max(worst, math.Abs(got-want)/want)
	}
	if worst > 3e-7 {
		t.Errorf("exp32: worst relative error %.3g, want ≤ 3e-7", worst)
	}
	if got := exp32(-1000); got > 1e-37 {
		t.Errorf("exp32(-1000) = %v, want ≤ 1e-37 (clamped)", got)
	}
}

func TestSoftmaxF32(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, tc := range []struct {
		n      int
		spread float64
	}{{1, 1}, {3, 1}, {8, 5}, {15, 20}, {64, 1}, {257, 10}, {2000, 30}, {100, 200}} {
		x := make([]float32, tc.n)
		for i := range x {
			x[i] = float32(r.NormFloat64() * tc.spread)
		}
		want := append([]float32(nil), x...)
		softmaxRef(want)
		got := append([]float32(nil), x...)
		SoftmaxF32(got)
		twin := append([]float32(nil), x...)
		softmaxF32Go(twin)
		for i := range want {
			tol := 1e-6*float64(want[i]) + 1e-30
			if d := math.Abs(float64(got[i] - want[i])); d > tol {
				t.Fatalf("n=%d spread=%g: element %d: got %v, want %v", tc.n, tc.spread, i, got[i], want[i])
			}
			if d := math.Abs(float64(twin[i] - want[i])); d > tol {
				t.Fatalf("n=%d spread=%g: go twin element %d: got %v, want %v", tc.n, tc.spread, i, twin[i], want[i])
			}
		}
	}
}

// softmaxF32Go is SoftmaxF32 with every exponential from the Go twin.
func softmaxF32Go(x []float32) {
	mx := x[0]
	for _, v := range x[1:] {
		mx = max(mx, v)
	}
	var sum float64
	for i, v := range x {
		x[i] = exp32(v - mx)
		sum += float64(x[i])
	}
	inv := float32(1 / sum)
	for i := range x {
		x[i] *= inv
	}
}

// TestSwiGLU32 compares the float32-exp SwiGLU (eight lanes where there is
// AVX2, and its Go twin) with the float64 one over ordinary and extreme
// gates: a few float32 ulps apart, finite, and silu(g) → 0 and → g at the
// ends.
func TestSwiGLU32(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	gate := []float32{0, -0, 1e-30, -1e-30, 87, -87, 88, -88, 88.5, -88.5, 100, -100, 1e4, -1e4, 3.4e38, -3.4e38}
	for len(gate) < 1003 { // not a multiple of 8: the twin takes the tail
		gate = append(gate, float32(r.NormFloat64()*6))
	}
	up := make([]float32, len(gate))
	for i := range up {
		up[i] = float32(r.NormFloat64())
	}
	want := slices.Clone(gate)
	SwiGLU(want, up)
	for name, f := range map[string]func(g, u []float32){"swiGLU32": swiGLU32, "swiGLU32Go": swiGLU32Go} {
		got := slices.Clone(gate)
		f(got, up)
		for i := range got {
			d := math.Abs(float64(got[i]) - float64(want[i]))
			if math.IsNaN(float64(got[i])) || math.IsInf(float64(got[i]), 0) || d > 1e-6*math.Abs(float64(want[i]))+1e-30 {
				t.Errorf("%s: gate %g up %g: got %g, want %g", name, gate[i], up[i], got[i], want[i])
			}
		}
	}
}
