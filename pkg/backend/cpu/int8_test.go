package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// refCode is the code of element (r, c) of an affine matrix.
func refCode(m *Matrix, r, c int) int {
	bit := (r*m.Cols + c) * m.Bits
	q := 0
	for k := 0; k < m.Bits; k++ {
		b := bit + k
		q |= int(m.Data[b/8]>>(b%8)&1) << k
	}
	return q
}

// refInt8 is the int8-mode product in float64 from x quantized by quantizeX
// (natural order): Σ_g s·sx·Σ q·xq + b·Σx per row, with the error scale
// Σ_g |s|·sx·Σ|q·xq| + |b·Σx|, and the bound Σ_g |s|·sx/2·Σq on how far the
// exact product can be from it (each xq·sx is within sx/2 of x) plus the
// float32 rounding of Σx.
func refInt8(m *Matrix, x []float32) (y, mag, bound []float64) {
	g, gs := m.Groups(), m.GroupSize
	xq := make([]int8, m.Cols)
	sx, gsum := make([]float32, g), make([]float32, g)
	quantizeX(xq, sx, gsum, x, gs)
	y, mag, bound = make([]float64, m.Rows), make([]float64, m.Rows), make([]float64, m.Rows)
	for r := 0; r < m.Rows; r++ {
		for j := 0; j < g; j++ {
			s := refScale(m.Scales, m.ScaleFormat, r*g+j)
			b := refScale(m.Biases, m.ScaleFormat, r*g+j)
			var dot, adot, qsum, xabs float64
			for c := j * gs; c < (j+1)*gs; c++ {
				q := float64(refCode(m, r, c))
				dot += q * float64(xq[c])
				adot += math.Abs(q * float64(xq[c]))
				qsum += q
				xabs += math.Abs(float64(x[c]))
			}
			y[r] += s*float64(sx[j])*dot + b*float64(gsum[j])
			mag[r] += math.Abs(s)*float64(sx[j])*adot + math.Abs(b*float64(gsum[j]))
			bound[r] += math.Abs(s)*float64(sx[j])/2*qsum + math.Abs(b)*xabs*1e-5
		}
	}
	return y, mag, bound
}

// int8Pools are int8-mode pools at every kernel level, of 1 and 3 workers.
func int8Pools() []*Pool {
	var pools []*Pool
	for _, level := range testLevels() {
		for _, w := range []int{1, 3} {
			p := newPool(w, level)
			p.int8 = true
			pools = append(pools, p)
		}
	}
	return pools
}

func int8Cases() []matCase {
	var cs []matCase
	for _, bits := range []int{2, 3, 4, 5, 6, 8} {
		for _, gs := range []int{32, 64, 128} {
			for _, rows := range []int{1, 3, 33, 70} {
				for _, groups := range []int{1, 2, 3, 6, 17} {
					cs = append(cs, matCase{rows: rows, cols: gs * groups, f: Affine, bits: bits, gs: gs, sf: []Format{BF16, F16, F32}[(rows+groups)%3]})
				}
			}
		}
	}
	return cs
}

// TestInt8MatchesReference: at every kernel level (the VNNI kernels where
// they apply, the Go twin elsewhere), int8 mode computes the int8 product of
// refInt8 to float32 accuracy, and lies within the quantization bound of the
// exact product.
func TestInt8MatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	pools := int8Pools()
	for _, c := range int8Cases() {
		m := randomMatrix(rng, c.rows, c.cols, c.f, c.bits, c.gs, c.sf)
		for _, n := range []int{1, 2, 4, 9} {
			x := randomVector(rng, n*c.cols)
			type refs struct{ ref, mag, bound, exact, emag []float64 }
			want := make([]refs, n)
			for tok := range want {
				xt := x[tok*c.cols : (tok+1)*c.cols]
				w := &want[tok]
				w.ref, w.mag, w.bound = refInt8(m, xt)
				w.exact, w.emag = refMatVec(m, xt)
			}
			for _, p := range pools {
				y := make([]float32, n*c.rows)
				p.MatMul(y, m, x, n)
				for tok := 0; tok < n; tok++ {
					ref, mag, bound, exact, emag := want[tok].ref, want[tok].mag, want[tok].bound, want[tok].exact, want[tok].emag
					for r := range ref {
						got := float64(y[tok*c.rows+r])
						what := fmt.Sprintf("%v n=%d token %d row %d workers %d level %d", c, n, tok, r, p.Workers(), p.level)
						if d := math.Abs(got - ref[r]); d > 1e-5*mag[r]+1e-6 || math.IsNaN(got) {
							t.Fatalf("%s: %g, int8 reference %g (|Δ| %g)", what, got, ref[r], d)
						}
						if d := math.Abs(got - exact[r]); d > bound[r]+1e-5*(mag[r]+emag[r])+1e-6 {
							t.Fatalf("%s: %g is %g from the exact %g, beyond the quantization bound %g", what, got, d, exact[r], bound[r])
						}
					}
				}
			}
		}
	}
}

// TestQuantizeX: the scale is the group's max|x|/127, every element is
// within half a step of x, codes stay in [−127, 127], the group sums are x's,
// the AVX-512 quantizer agrees, and a non-finite x makes the product
// non-finite.
func TestQuantizeX(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 24))
	for _, gs := range []int{32, 64, 128} {
		x := randomVector(rng, 3*gs)
		x[5] = 0
		for i := gs; i < 2*gs; i++ {
			x[i] = 0 // an all-zero group
		}
		xq := make([]int8, len(x))
		sx, gsum := make([]float32, 3), make([]float32, 3)
		quantizeX(xq, sx, gsum, x, gs)
		for j := 0; j < 3; j++ {
			var amax, sum float32
			for _, v := range x[j*gs : (j+1)*gs] {
				amax = max(amax, float32(math.Abs(float64(v))))
				sum += v
			}
			if sx[j] != amax/127 || gsum[j] != sum {
				t.Fatalf("gs %d group %d: sx %g gsum %g, want %g %g", gs, j, sx[j], gsum[j], amax/127, sum)
			}
			for i := j * gs; i < (j+1)*gs; i++ {
				if d := math.Abs(float64(xq[i])*float64(sx[j]) - float64(x[i])); d > float64(sx[j])*0.5001 || xq[i] < -127 {
					t.Fatalf("gs %d: x[%d] = %g quantized to %d·%g", gs, i, x[i], xq[i], sx[j])
				}
			}
		}
	}
	// The AVX-512 quantizer gives the same codes and scales, and sums within
	// float32 rounding of Σ|x|.
	if haveAVX512 {
		for _, gs := range []int{16, 32, 64, 128} {
			for _, groups := range []int{1, 3, 17} {
				x := randomVector(rng, gs*groups)
				x[1] = 0
				for i := range gs {
					x[gs*(groups-1)+i] *= 1e-3
				}
				q1, q2 := make([]int8, len(x)), make([]int8, len(x))
				s1, s2, g1, g2 := make([]float32, groups), make([]float32, groups), make([]float32, groups), make([]float32, groups)
				quantizeX(q1, s1, g1, x, gs)
				quantizeWide(q2, s2, g2, x, gs)
				if !slices.Equal(q1, q2) || !slices.Equal(s1, s2) {
					t.Fatalf("gs %d groups %d: AVX-512 codes/scales differ from quantizeX", gs, groups)
				}
				for j := range g1 {
					var abs float64
					for _, v := range x[j*gs : (j+1)*gs] {
						abs += math.Abs(float64(v))
					}
					if d := math.Abs(float64(g1[j] - g2[j])); d > 1e-6*abs {
						t.Fatalf("gs %d group %d: sum %g, quantizeX %g", gs, j, g2[j], g1[j])
					}
				}
			}
		}
	}
	for _, level := range testLevels() {
		p := newPool(1, level)
		p.int8 = true
		m := randomMatrix(rng, 4, 128, Affine, 4, 64, BF16)
		for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1))} {
			x := randomVector(rng, 128)
			x[70] = bad
			y := make([]float32, 4)
			p.MatVec(y, m, x)
			if slices.ContainsFunc(y, func(v float32) bool { return !math.IsNaN(float64(v)) && !math.IsInf(float64(v), 0) }) {
				t.Errorf("level %d: x holding %g gave finite %v", level, bad, y)
			}
		}
	}
}
