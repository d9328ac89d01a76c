package nonfinite

import (
	"math"
	"testing"
)

// TestFirstRow checks the blockwise scan against the plain definition (IsNaN
// or IsInf) at every position of the first and of later blocks, with finite
// extremes (the largest float, subnormals, −0) that must not count.
func TestFirstRow(t *testing.T) {
	slow := func(x []float32, n int) int {
		for i, v := range x {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return i / n
			}
		}
		return -1
	}
	const n = 37
	x := make([]float32, 5*n+3)
	for i := range x {
		x[i] = []float32{math.MaxFloat32, -math.MaxFloat32, math.SmallestNonzeroFloat32, float32(math.Copysign(0, -1)), 1.5}[i%5]
	}
	if got := FirstRow(x, n); got != -1 {
		t.Fatalf("finite extremes: row %d, want -1", got)
	}
	for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
		for pos := range x {
			y := append([]float32(nil), x...)
			y[pos] = bad
			if pos+70 < len(y) {
				y[pos+70] = bad // a later one must not win
			}
			if got, want := FirstRow(y, n), slow(y, n); got != want || got != pos/n {
				t.Fatalf("%v at %d: row %d, want %d", bad, pos, got, want)
			}
		}
	}
}

// TestFirstRowLengths: every length of one row and every position of a NaN
// or an infinity in it, and large finite values.
func TestFirstRowLengths(t *testing.T) {
	bad := []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))}
	for n := 1; n <= 140; n++ {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(i%7-3) * 1.1e38
		}
		if FirstRow(x, n) != -1 {
			t.Fatalf("n=%d: finite values reported non-finite", n)
		}
		for i := range x {
			for _, b := range bad {
				v := x[i]
				x[i] = b
				if FirstRow(x, n) != 0 {
					t.Fatalf("n=%d: %v at %d not found", n, b, i)
				}
				x[i] = v
			}
		}
	}
}
