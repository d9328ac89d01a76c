package cpu

import (
	"math"
	"math/rand/v2"
	"testing"
)

func attnRandFloats(r *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

func TestDotRows4(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct{ n, stride int }{
		{1, 1}, {3, 5}, {8, 8}, {16, 16}, {17, 40}, {64, 128}, {64, 64}, {80, 200}, {128, 256}, {133, 133},
	} {
		q := attnRandFloats(r, tc.n)
		k := attnRandFloats(r, 3*tc.stride+tc.n)
		var got [4]float32
		DotRows4(q, k, tc.stride, &got)
		for j := range got {
			var want, mag float64
			for i := range q {
				p := float64(q[i]) * float64(k[j*tc.stride+i])
				want += p
				mag += math.Abs(p)
			}
			if d := math.Abs(float64(got[j]) - want); d > 1e-6*mag+1e-7 {
				t.Errorf("n=%d stride=%d key %d: got %v, want %v", tc.n, tc.stride, j, got[j], want)
			}
		}
	}
}

// TestDotHeads4 checks DotHeads4 (the AVX-512 kernel where D is a multiple
// of 16, else its Go twin) against float64 sums, and the twin alike.
func TestDotHeads4(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, tc := range []struct{ D, qstride, kstride int }{
		{1, 1, 1}, {16, 16, 16}, {16, 40, 24}, {24, 24, 24}, {64, 64, 512}, {128, 128, 128}, {128, 256, 512}, {256, 256, 256}, {133, 140, 150},
	} {
		q := attnRandFloats(r, 3*tc.qstride+tc.D)
		k := attnRandFloats(r, 3*tc.kstride+tc.D)
		for name, f := range map[string]func([]float32, int, []float32, int, int, *[16]float32){"DotHeads4": DotHeads4, "dotHeads4Go": dotHeads4Go} {
			var got [16]float32
			f(q, tc.qstride, k, tc.kstride, tc.D, &got)
			for h := 0; h < 4; h++ {
				for j := 0; j < 4; j++ {
					var want, mag float64
					for i := 0; i < tc.D; i++ {
						p := float64(q[h*tc.qstride+i]) * float64(k[j*tc.kstride+i])
						want += p
						mag += math.Abs(p)
					}
					if d := math.Abs(float64(got[4*h+j]) - want); d > 1e-6*mag+1e-7 {
						t.Errorf("%s D=%d strides %d/%d head %d key %d: got %v, want %v", name, tc.D, tc.qstride, tc.kstride, h, j, got[4*h+j], want)
					}
				}
			}
		}
	}
}

// TestWeightedRowSumHeads4IsWeightedRowSum checks the four-head sums (the
// AVX-512 kernel where D is a multiple of 64, else the Go twin) bit for bit
// against WeightedRowSum on each head, from nonzero starting outputs.
func TestWeightedRowSumHeads4IsWeightedRowSum(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, tc := range []struct{ D, n, ostride, pstride, stride int }{
		{64, 1, 64, 1, 64}, {64, 37, 64, 40, 512}, {128, 100, 128, 100, 512}, {128, 64, 256, 300, 128}, {256, 3, 256, 3, 1024}, {72, 9, 72, 9, 72}, {24, 5, 30, 7, 48},
	} {
		p := attnRandFloats(r, 3*tc.pstride+tc.n)
		v := attnRandFloats(r, (tc.n-1)*tc.stride+tc.D)
		init := attnRandFloats(r, 3*tc.ostride+tc.D)
		for name, f := range map[string]func([]float32, int, []float32, int, int, []float32, int, int){"WeightedRowSumHeads4": WeightedRowSumHeads4, "weightedRowSumHeads4Go": weightedRowSumHeads4Go} {
			got := append([]float32(nil), init...)
			f(got, tc.ostride, p, tc.pstride, tc.n, v, tc.stride, tc.D)
			for h := 0; h < 4; h++ {
				want := append([]float32(nil), init[h*tc.ostride:h*tc.ostride+tc.D]...)
				WeightedRowSum(want, p[h*tc.pstride:h*tc.pstride+tc.n], v, tc.stride)
				for i := range want {
					if math.Float32bits(got[h*tc.ostride+i]) != math.Float32bits(want[i]) {
						t.Fatalf("%s D=%d n=%d head %d element %d: got %v, want %v", name, tc.D, tc.n, h, i, got[h*tc.ostride+i], want[i])
					}
				}
			}
			// Between the heads' rows nothing is written.
			for h := 0; h < 3; h++ {
				for i := h*tc.ostride + tc.D; i < (h+1)*tc.ostride; i++ {
					if got[i] != init[i] {
						t.Fatalf("%s D=%d: element %d between heads %d and %d written", name, tc.D, i, h, h+1)
					}
				}
			}
		}
	}
}

// TestWeightedRowSumIsAxpyChain checks the contract the attention relies on:
// the same bits as one Axpy per row, in row order.
func TestWeightedRowSumIsAxpyChain(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct{ d, rows, stride int }{
		{64, 1, 64}, {64, 37, 128}, {128, 100, 256}, {72, 9, 72}, {88, 20, 100}, {5, 7, 9}, {16, 0, 16}, {192, 3, 400}, {256, 40, 512}, {200, 5, 200},
	} {
		p := attnRandFloats(r, tc.rows)
		v := attnRandFloats(r, tc.rows*tc.stride+tc.d)
		init := attnRandFloats(r, tc.d)
		got := append([]float32(nil), init...)
		WeightedRowSum(got, p, v, tc.stride)
		want := append([]float32(nil), init...)
		for s, w := range p {
			Axpy(want, w, v[s*tc.stride:s*tc.stride+tc.d])
		}
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("d=%d rows=%d: element %d: got %v, want %v (axpy chain)", tc.d, tc.rows, i, got[i], want[i])
			}
		}
		// And against the float64 reference.
		for i := range want {
			ref, mag := float64(init[i]), math.Abs(float64(init[i]))
			for s, w := range p {
				ref += float64(w) * float64(v[s*tc.stride+i])
				mag += math.Abs(float64(w) * float64(v[s*tc.stride+i]))
			}
			if d := math.Abs(float64(got[i]) - ref); d > 1e-6*mag+1e-7 {
				t.Fatalf("d=%d rows=%d: element %d: got %v, want %v", tc.d, tc.rows, i, got[i], ref)
			}
		}
	}
}

// TestAttnKernelsGoTwins runs the pure-Go twins against the dispatching kernels.
func TestAttnKernelsGoTwins(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	q := attnRandFloats(r, 64)
	k := attnRandFloats(r, 3*100+64)
	var a, b [4]float32
	DotRows4(q, k, 100, &a)
	dotRows4Go(q, k, 100, &b)
	for j := range a {
		if d := math.Abs(float64(a[j] - b[j])); d > 1e-5*(1+math.Abs(float64(b[j]))) {
			t.Errorf("key %d: simd %v, go %v", j, a[j], b[j])
		}
	}
	p := attnRandFloats(r, 50)
	v := attnRandFloats(r, 50*100+64)
	o1, o2 := make([]float32, 64), make([]float32, 64)
	WeightedRowSum(o1, p, v, 100)
	weightedRowSumGo(o2, p, v, 100)
	for i := range o1 {
		if d := math.Abs(float64(o1[i] - o2[i])); d > 1e-4*(1+math.Abs(float64(o2[i]))) {
			t.Errorf("element %d: simd %v, go %v", i, o1[i], o2[i])
		}
	}
}
