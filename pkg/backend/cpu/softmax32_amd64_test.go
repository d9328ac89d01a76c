//go:build !noasm

package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"unsafe"
)

// TestExpSumAVX512MatchesAVX2 holds the sixteen-lane exp-and-sum kernel to
// the eight-lane one bit for bit, the exponentials and the float64 sum: row
// lengths from 8 to 1,000 (with and without the masked last eight), scores
// spread from near the maximum to far below the clamp.
func TestExpSumAVX512MatchesAVX2(t *testing.T) {
	if !haveAVX512 {
		t.Skip("no AVX-512")
	}
	r := rand.New(rand.NewPCG(21, 22))
	for n := 8; n <= 1000; n += 8 {
		for _, spread := range []float64{0.5, 10, 200} {
			x := make([]float32, n)
			for i := range x {
				x[i] = float32(r.NormFloat64() * spread)
			}
			mx := x[0]
			for _, v := range x {
				mx = max(mx, v)
			}
			a, b := append([]float32(nil), x...), append([]float32(nil), x...)
			sa := expSumAVX2(&a[0], n, unsafe.Pointer(&expConsts), mx)
			sb := expSumAVX512(&b[0], n, unsafe.Pointer(&expConsts), mx)
			if math.Float64bits(sa) != math.Float64bits(sb) {
				t.Fatalf("n=%d spread=%g: sum %v, AVX2 %v", n, spread, sb, sa)
			}
			for i := range a {
				if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
					t.Fatalf("n=%d spread=%g: exp[%d] %v, AVX2 %v", n, spread, i, b[i], a[i])
				}
			}
		}
	}
}

// BenchmarkSoftmaxAB alternates SoftmaxF32 with the eight- and the
// sixteen-lane exp-and-sum kernel on rows of a prefill's lengths, 64 rows a
// round; "speedup" is the median of eight-lane time / sixteen-lane time.
func BenchmarkSoftmaxAB(b *testing.B) {
	if !haveAVX512 {
		b.Skip("no AVX-512")
	}
	defer func() { expSum512 = true }()
	r := rand.New(rand.NewPCG(23, 24))
	for _, n := range []int{64, 256, 263, 1024} {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(r.NormFloat64() * 3)
		}
		y := make([]float32, n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			alternatedSpeedup(b, func(on bool) { expSum512 = on }, func(int) {
				for range 64 {
					copy(y, x)
					SoftmaxF32(y)
				}
			})
		})
	}
}

// TestExpSumAVX512Tail: any length, 1 to 100: every exponential within
// 2 ulp of exp32's, the sum within 1e-6 of theirs, and the floats past n
// untouched (the last n mod 16 are loaded and stored under a mask).
func TestExpSumAVX512Tail(t *testing.T) {
	if !haveAVX512 {
		t.Skip("no AVX-512")
	}
	r := rand.New(rand.NewPCG(25, 26))
	const sentinel = float32(-12345.5)
	for n := 1; n <= 100; n++ {
		buf := make([]float32, n+16)
		for i := range buf {
			buf[i] = sentinel
		}
		x := buf[:n]
		for i := range x {
			x[i] = float32(r.NormFloat64() * 5)
		}
		mx := slices.Max(x)
		want := make([]float32, n)
		var wantSum float64
		for i, v := range x {
			want[i] = exp32(v - mx)
			wantSum += float64(want[i])
		}
		sum := expSumAVX512(&x[0], n, unsafe.Pointer(&expConsts), mx)
		for i := range x {
			if d := math.Abs(float64(x[i] - want[i])); d > 2*float64(math.Nextafter32(want[i], 2)-want[i]) {
				t.Fatalf("n=%d: exp[%d] %v, exp32 %v", n, i, x[i], want[i])
			}
		}
		if math.Abs(sum-wantSum) > 1e-6*wantSum {
			t.Fatalf("n=%d: sum %v, exp32's %v", n, sum, wantSum)
		}
		for i := n; i < len(buf); i++ {
			if buf[i] != sentinel {
				t.Fatalf("n=%d: float %d past the row written: %v", n, i, buf[i])
			}
		}
	}
}
