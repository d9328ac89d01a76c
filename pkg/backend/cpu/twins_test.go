package cpu

import (
	"github.com/fm-moe/fm/pkg/internal/half"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

// TestKernelsAllocateNothing: a product in steady state (decode, one token,
// and prefill blocks) allocates nothing at any kernel level, with one worker
// and with helpers.
func TestKernelsAllocateNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops objects under the race detector")
	}
	rng := rand.New(rand.NewPCG(9, 9))
	for _, level := range testLevels() {
		for _, workers := range []int{1, 2, -2} { // −2: two workers in int8 mode
			p := newPool(max(workers, -workers), level)
			p.int8 = workers < 0
			for _, c := range []matCase{
				{rows: 256, cols: 512, f: BF16}, {rows: 256, cols: 512, f: F32}, {rows: 256, cols: 512, f: F16},
				{rows: 256, cols: 512, f: Affine, bits: 4, gs: 64, sf: BF16},
				{rows: 256, cols: 512, f: Affine, bits: 3, gs: 64, sf: BF16},
				{rows: 256, cols: 512, f: Affine, bits: 8, gs: 32, sf: F16},
				{rows: 256, cols: 576, f: Affine, bits: 4, gs: 64, sf: BF16}, // an odd number of groups
				{rows: 256, cols: 512, f: Affine, bits: 2, gs: 64, sf: F32},
			} {
				m := randomMatrix(rng, c.rows-3, c.cols, c.f, c.bits, c.gs, c.sf)
				ms := []*Matrix{m}
				if rowPackable(m) { // and its row-interleaved copy (int8 mode), 3 rows past the last block
					pm := *m
					pm.packed = packRows(&pm, nil)
					ms = append(ms, &pm)
				}
				for i, m := range ms {
					for _, n := range []int{1, 5, 8, 17} {
						x := randomVector(rng, n*c.cols)
						y := make([]float32, n*m.Rows)
						p.MatMul(y, m, x, n) // warm the scratch pools
						if a := testing.AllocsPerRun(20, func() { p.MatMul(y, m, x, n) }); a != 0 {
							t.Errorf("level %d workers %d %v packed %v n=%d: %v allocations per product", level, workers, c, i == 1, n, a)
						}
					}
				}
			}
		}
	}
}

// TestWideKernelsMatchTwins compares the AVX-512 vector kernels and ReadSum
// with their generic twins over odd lengths (the tails run in Go).
func TestWideKernelsMatchTwins(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 11))
	for _, n := range []int{0, 1, 31, 63, 64, 65, 127, 200, 1000, 4097} {
		a, b := randomVector(rng, n), randomVector(rng, n)
		w := make([]uint16, n)
		var mag float64
		for i := range a {
			w[i] = half.F32ToBF16(a[i])
			mag += math.Abs(float64(a[i] * b[i]))
		}
		tol := 1e-5*mag + 1e-6
		if got, want := dotF32Wide(a, b, haveAVX512), dotF32(a, b); math.Abs(float64(got-want)) > tol {
			t.Errorf("dotF32 n=%d: %g, generic %g", n, got, want)
		}
		if got, want := dotBF16Wide(w, b, haveAVX512), dotBF16(w, b); math.Abs(float64(got-want)) > tol {
			t.Errorf("dotBF16 n=%d: %g, generic %g", n, got, want)
		}
		if n >= 4 {
			x := randomVector(rng, 4*n)
			var got, want [4]float32
			if haveAVX512 {
				bf16Row4Wide(w, x, n, &got)
			} else if haveAVX2 {
				bf16Row4SIMD(w, x, n, &got)
			}
			for k := range want {
				want[k] = dotBF16(w, x[k*n:(k+1)*n])
			}
			if haveAVX2 {
				for k := range want {
					if math.Abs(float64(got[k]-want[k])) > 1e-5*float64(n)+1e-6 {
						t.Errorf("bf16Row4 n=%d token %d: %g, generic %g", n, k, got[k], want[k])
					}
				}
			}
		}
		raw := make([]byte, 8*n+n%8)
		for i := range raw {
			raw[i] = byte(rng.Uint32())
		}
		for _, off := range []int{0, 1, 7} { // unaligned starts and ends
			if off <= len(raw) {
				if got, want := ReadSum(raw[off:]), readSumGo(raw[off:]); got != want {
					t.Errorf("ReadSum n=%d off %d: %#x, generic %#x", len(raw), off, got, want)
				}
			}
		}
	}
}

// TestLevelsAgreeOnLargeShapes runs each kernel level on shapes with many
// groups and rows (several wide chunks, odd row counts, every bit width) and
// compares with the generic pool's result.
func TestLevelsAgreeOnLargeShapes(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 13))
	generic := newPool(2, levelGeneric)
	for _, c := range []matCase{
		{rows: 97, cols: 1024, f: Affine, bits: 4, gs: 64, sf: BF16},
		{rows: 97, cols: 1024, f: Affine, bits: 2, gs: 64, sf: BF16},
		{rows: 97, cols: 1024, f: Affine, bits: 3, gs: 128, sf: F32},
		{rows: 97, cols: 1024, f: Affine, bits: 8, gs: 64, sf: F16},
		{rows: 97, cols: 1024, f: Affine, bits: 4, gs: 32, sf: BF16},
		{rows: 97, cols: 1001, f: BF16},
		{rows: 97, cols: 1001, f: F32},
	} {
		m := randomMatrix(rng, c.rows, c.cols, c.f, c.bits, c.gs, c.sf)
		for _, n := range []int{1, 4, 7} {
			x := randomVector(rng, n*c.cols)
			want := make([]float32, n*c.rows)
			generic.MatMul(want, m, x, n)
			mags := make([][]float64, n)
			for tok := range mags {
				_, mags[tok] = refMatVec(m, x[tok*c.cols:(tok+1)*c.cols])
			}
			for _, level := range testLevels()[1:] {
				got := make([]float32, n*c.rows)
				newPool(2, level).MatMul(got, m, x, n)
				for i := range got {
					tok, r := i/c.rows, i%c.rows
					tol := 2e-5*mags[tok][r] + 1e-6
					if d := math.Abs(float64(got[i] - want[i])); d > tol || math.IsNaN(float64(got[i])) {
						t.Fatalf("%v n=%d level %d: y[%d] = %g, generic %g", c, n, level, i, got[i], want[i])
					}
				}
			}
		}
	}
}

// TestNEONMatchesTwin compares each arm64 NEON kernel with its generic twin
// on random rows: the 2/4/8-bit affine rows and the 4/8-bit four-token
// rows (affineRowGo), the f32 and bf16 dots and the bf16 four-token row
// (dotF32, dotBF16), DotRows4, WeightedRowSum and Axpy, and the SDOT
// int8-activation rows
// (affineRowInt8), over group sizes, odd group counts and lengths with tails;
// the tolerance is the float64 reference tests' 1e-5 of Σ|terms|. make test
// runs it under qemu-user.
func TestNEONMatchesTwin(t *testing.T) {
	if !haveNEON {
		t.Skip("no NEON kernels in this build")
	}
	rng := rand.New(rand.NewPCG(14, 15))
	for _, bits := range []int{2, 3, 4, 8} {
		for _, gs := range []int{16, 32, 64, 128, 256} {
			if !neonAffine(bits, gs) {
				continue
			}
			for _, groups := range []int{1, 2, 3, 17} {
				m := randomMatrix(rng, 2, gs*groups, Affine, bits, gs, F32)
				x := randomVector(rng, m.Cols)
				scales, biases := make([]float32, groups), make([]float32, groups)
				decodeFloats(scales, m.Scales, F32, groups)
				decodeFloats(biases, m.Biases, F32, groups)
				gsum := groupSums(make([]float32, groups), x, gs)
				raw := m.Data[m.RowBytes():]
				got := affineRowArch(bits, raw, x, scales, biases, gsum, gs)
				want := affineRowGo(bits, gs, raw, x, scales, biases, gsum)
				// Σ|terms| of the float64 reference, for the tolerance
				mag := func(x, gsum []float32) float64 {
					var s float64
					for c := range m.Cols {
						s += math.Abs(float64(scales[c/gs]) * float64(refCode(m, 1, c)) * float64(x[c]))
					}
					for j := range groups {
						s += math.Abs(float64(biases[j] * gsum[j]))
					}
					return s
				}
				if math.Abs(float64(got-want)) > 1e-5*mag(x, gsum)+1e-6 || math.IsNaN(float64(got)) {
					t.Errorf("%d-bit gs %d groups %d: NEON %g, generic %g", bits, gs, groups, got, want)
				}
				if !neonAffine4(bits, gs) {
					continue
				}
				// Four tokens, token 0 the x above.
				x4 := append(slices.Clone(x), randomVector(rng, 3*m.Cols)...)
				gsum4 := make([]float32, 4*groups)
				for tok := range 4 {
					for j, v := range groupSums(make([]float32, groups), x4[tok*m.Cols:(tok+1)*m.Cols], gs) {
						gsum4[4*j+tok] = v
					}
				}
				var out [4]float32
				affineRow4Arch(bits, raw, x4, m.Cols, scales, biases, gsum4, gs, &out)
				for tok := range out {
					xt := x4[tok*m.Cols : (tok+1)*m.Cols]
					gt := groupSums(make([]float32, groups), xt, gs)
					want := affineRowGo(bits, gs, raw, xt, scales, biases, gt)
					if math.Abs(float64(out[tok]-want)) > 1e-5*mag(xt, gt)+1e-6 || math.IsNaN(float64(out[tok])) {
						t.Errorf("%d-bit gs %d groups %d token %d: 4-token NEON %g, generic %g", bits, gs, groups, tok, out[tok], want)
					}
				}
			}
		}
	}
	for _, n := range []int{0, 1, 7, 8, 9, 15, 16, 17, 31, 33, 100, 1000, 4097} {
		w, x := make([]uint16, n), randomVector(rng, 4*n)
		mags := make([]float64, 4)
		for i := range w {
			w[i] = half.F32ToBF16(float32(rng.NormFloat64()))
			for tok := range mags {
				mags[tok] += math.Abs(float64(half.BF16ToF32(w[i]) * x[tok*n+i]))
			}
		}
		if got, want := bf16DotArch(w, x), dotBF16(w, x); math.Abs(float64(got-want)) > 1e-5*mags[0]+1e-6 {
			t.Errorf("bf16 dot n=%d: NEON %g, generic %g", n, got, want)
		}
		a := randomVector(rng, n)
		var fmag float64
		for i := range a {
			fmag += math.Abs(float64(a[i] * x[i]))
		}
		if got, want := f32DotArch(a, x[:n]), dotF32(a, x); math.Abs(float64(got-want)) > 1e-5*fmag+1e-6 {
			t.Errorf("f32 dot n=%d: NEON %g, generic %g", n, got, want)
		}
		var got [4]float32
		bf16Row4Arch(w, x, n, &got)
		for tok := range got {
			if want := dotBF16(w, x[tok*n:(tok+1)*n]); math.Abs(float64(got[tok]-want)) > 1e-5*mags[tok]+1e-6 {
				t.Errorf("bf16 4-token n=%d token %d: NEON %g, generic %g", n, tok, got[tok], want)
			}
		}
	}
	// The attention and vector helpers: DotRows4, WeightedRowSum, Axpy.
	for _, n := range []int{1, 7, 8, 9, 15, 16, 17, 33, 100, 129} {
		stride := n + 3
		q, k := randomVector(rng, n), randomVector(rng, 4*stride)
		var got, want [4]float32
		dotRows4Arch(q, k, stride, &got)
		dotRows4Go(q, k, stride, &want)
		for j := range got {
			var mag float64
			for i := range q {
				mag += math.Abs(float64(q[i] * k[j*stride+i]))
			}
			if math.Abs(float64(got[j]-want[j])) > 1e-5*mag+1e-6 {
				t.Errorf("DotRows4 n=%d row %d: NEON %g, generic %g", n, j, got[j], want[j])
			}
		}
		for _, rows := range []int{1, 2, 5} {
			p, v := randomVector(rng, rows), randomVector(rng, rows*stride)
			o0 := randomVector(rng, n)
			got, want := slices.Clone(o0), slices.Clone(o0)
			weightedRowSumArch(got, p, v, stride)
			weightedRowSumGo(want, p, v, stride)
			for i := range got {
				mag := math.Abs(float64(o0[i]))
				for r := range rows {
					mag += math.Abs(float64(p[r] * v[r*stride+i]))
				}
				if math.Abs(float64(got[i]-want[i])) > 1e-5*mag+1e-6 {
					t.Errorf("WeightedRowSum n=%d rows %d: o[%d] NEON %g, generic %g", n, rows, i, got[i], want[i])
				}
			}
		}
		a := float32(rng.NormFloat64())
		y0 := randomVector(rng, n)
		got2, want2 := slices.Clone(y0), slices.Clone(y0)
		axpyArch(got2, a, q)
		axpyGo(want2, a, q)
		for i := range got2 {
			if mag := math.Abs(float64(y0[i])) + math.Abs(float64(a*q[i])); math.Abs(float64(got2[i]-want2[i])) > 1e-6*mag+1e-7 {
				t.Errorf("Axpy n=%d: y[%d] NEON %g, generic %g", n, i, got2[i], want2[i])
			}
		}
	}
	if !haveSDOT {
		t.Log("no ARMv8.2 dot product on this CPU: the int8-mode kernels are not tested")
		return
	}
	for _, bits := range []int{2, 3, 4, 8} {
		for _, gs := range []int{32, 64, 128, 256} {
			if !int8NEON(bits, gs) {
				continue
			}
			for _, groups := range []int{1, 2, 3, 17} {
				m := randomMatrix(rng, 2, gs*groups, Affine, bits, gs, F32)
				x := randomVector(rng, m.Cols)
				xq, sx, gsum := make([]int8, m.Cols), make([]float32, groups), make([]float32, groups)
				quantizeX(xq, sx, gsum, x, gs)
				scales, biases := make([]float32, groups), make([]float32, groups)
				decodeFloats(scales, m.Scales, F32, groups)
				decodeFloats(biases, m.Biases, F32, groups)
				raw := m.Data[m.RowBytes():]
				got := affineRowInt8Arch(bits, gs, raw, xq, sx, scales, biases, gsum)
				want := affineRowInt8(bits, gs, raw, xq, sx, scales, biases, gsum)
				var mag float64
				for c := range m.Cols {
					j := c / gs
					mag += math.Abs(float64(scales[j]) * float64(sx[j]) * float64(refCode(m, 1, c)) * float64(xq[c]))
				}
				for j := range groups {
					mag += math.Abs(float64(biases[j] * gsum[j]))
				}
				if math.Abs(float64(got-want)) > 1e-5*mag+1e-6 || math.IsNaN(float64(got)) {
					t.Errorf("int8 %d-bit gs %d groups %d: SDOT %g, generic %g", bits, gs, groups, got, want)
				}
			}
		}
	}
}

// TestPoolConcurrentAndNested: For calls from several goroutines at once
// (one owns the helpers, the others fall back to fresh goroutines) and For
// calls nested in a part all cover their ranges exactly once.
func TestPoolConcurrentAndNested(t *testing.T) {
	p := NewPool(3)
	const n = 300
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := 0; round < 50; round++ {
				seen := make([]int32, n)
				p.For(n, 1<<20, func(lo, hi int) {
					for i := lo; i < hi; i++ {
						inner := make([]int32, 8)
						p.For(8, 1<<20, func(a, b int) {
							for j := a; j < b; j++ {
								inner[j]++
							}
						})
						for _, v := range inner {
							if v != 1 {
								t.Errorf("nested For visited an item %d times", v)
								return
							}
						}
						atomic.AddInt32(&seen[i], 1)
					}
				})
				for i, v := range seen {
					if v != 1 {
						t.Errorf("item %d visited %d times", i, v)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}

// TestVectorOpsMatchTwins: the softmax's maximum and scaling and RMSNorm's
// scaled product equal their generic twins bit for bit, over lengths around
// the kernels' strides (the tails run in Go), in place and not.
func TestVectorOpsMatchTwins(t *testing.T) {
	rng := rand.New(rand.NewPCG(12, 13))
	for _, n := range []int{1, 15, 16, 17, 31, 32, 33, 64, 100, 128, 513, 2048} {
		x, w := randomVector(rng, n), randomVector(rng, n)
		x[rng.IntN(n)] = 7 // a maximum anywhere, the tail included
		if got, want := maxF32SIMD(x), maxF32Go(x); got != want {
			t.Errorf("max n=%d: %g, twin %g", n, got, want)
		}
		a, b := slices.Clone(x), slices.Clone(x)
		scaleF32SIMD(a, 0.37)
		scaleF32Go(b, 0.37)
		if !slices.Equal(a, b) {
			t.Errorf("scale n=%d differs from its twin", n)
		}
		got, want := make([]float32, n), make([]float32, n)
		scaledMulSIMD(got, x, w, 1.7)
		scaledMulGo(want, x, w, 1.7)
		if !slices.Equal(got, want) {
			t.Errorf("scaledMul n=%d differs from its twin", n)
		}
		a = slices.Clone(x)
		scaledMulSIMD(a, a, w, 1.7)
		if !slices.Equal(a, want) {
			t.Errorf("scaledMul in place n=%d differs from its twin", n)
		}
	}
}
