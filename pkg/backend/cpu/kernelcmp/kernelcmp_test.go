package kernelcmp

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fm-moe/fm/pkg/internal/half"
)

// q4Case is one random Q4Rows problem with its reference answer, computed in
// float64 from the natural (unpermuted) x, and the tolerance scale Σ|w·x|.
type q4Case struct {
	codes                 []byte
	x, xp, scales, biases []float32
	want, mag             []float64
	gs                    int
}

func newQ4Case(rng *rand.Rand, rows, groups, gs int) q4Case {
	n := groups * gs
	c := q4Case{codes: make([]byte, rows*n/2), x: make([]float32, n), xp: make([]float32, n),
		scales: make([]float32, rows*groups), biases: make([]float32, rows*groups),
		want: make([]float64, rows), mag: make([]float64, rows), gs: gs}
	for i := range c.codes {
		c.codes[i] = byte(rng.IntN(256))
	}
	for i := range c.x {
		c.x[i] = float32(rng.NormFloat64())
	}
	for i := range c.scales {
		c.scales[i] = float32(rng.Float64()*0.02 + 1e-4)
		c.biases[i] = float32(-8 * float64(c.scales[i]) * (0.5 + rng.Float64()))
	}
	if n%64 == 0 {
		PermuteQ4(c.xp, c.x)
	}
	for r := range rows {
		for i := range n {
			code := c.codes[(r*n+i)/2] >> (4 * (i % 2)) & 15
			g := r*groups + i/gs
			w := float64(c.scales[g])*float64(code) + float64(c.biases[g])
			c.want[r] += w * float64(c.x[i])
			c.mag[r] += math.Abs(w * float64(c.x[i]))
		}
	}
	return c
}

func TestQ4Rows(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, sh := range []struct{ rows, groups, gs int }{
		{1, 1, 64}, {3, 1, 128}, {2, 5, 64}, {32, 8, 64}, {7, 3, 128}, {33, 32, 64},
	} {
		c := newQ4Case(rng, sh.rows, sh.groups, sh.gs)
		for _, v := range Variants() {
			if v.Q4Rows == nil {
				continue
			}
			t.Run(fmt.Sprintf("%s/%dx%dx%d", v.Name, sh.rows, sh.groups, sh.gs), func(t *testing.T) {
				y := make([]float32, sh.rows)
				v.Q4Rows(c.codes, c.xp, c.scales, c.biases, y, c.gs)
				for r := range y {
					if d := math.Abs(float64(y[r]) - c.want[r]); !(d <= 1e-5*c.mag[r]+1e-6) {
						t.Errorf("row %d: %s gives %g, reference %g (Σ|w·x| %g)", r, v.Name, y[r], c.want[r], c.mag[r])
					}
				}
			})
		}
	}
}

// TestQ4RowAVX2 checks the AVX2-form row kernels, row by row, on the same
// random problems as TestQ4Rows.
func TestQ4RowAVX2(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for _, sh := range []struct{ rows, groups, gs int }{{1, 1, 32}, {3, 2, 64}, {5, 7, 32}, {4, 16, 128}} {
		c := newQ4Case(rng, sh.rows, sh.groups, sh.gs)
		n := sh.groups * sh.gs
		xp, gsum := make([]float32, n), make([]float32, sh.groups)
		PermuteQ4AVX2(xp, c.x)
		for i, v := range c.x {
			gsum[i/sh.gs] += v
		}
		for _, v := range Variants() {
			if v.Q4RowAVX2 == nil {
				continue
			}
			for r := range sh.rows {
				got := v.Q4RowAVX2(c.codes[r*n/2:(r+1)*n/2], xp, c.scales[r*sh.groups:(r+1)*sh.groups],
					c.biases[r*sh.groups:(r+1)*sh.groups], gsum, sh.gs)
				if d := math.Abs(float64(got) - c.want[r]); !(d <= 1e-5*c.mag[r]+1e-5) {
					t.Errorf("%s, %dx%dx%d row %d: %g, reference %g (Σ|w·x| %g)", v.Name, sh.rows, sh.groups, sh.gs, r, got, c.want[r], c.mag[r])
				}
			}
		}
	}
}

func TestDotBF16(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, 63, 64, 65, 200, 1000, 4096, 4097} {
		w, x := make([]uint16, n), make([]float32, n)
		var want, mag float64
		for i := range w {
			w[i] = uint16(math.Float32bits(float32(rng.NormFloat64())) >> 16)
			x[i] = float32(rng.NormFloat64())
			p := float64(half.BF16ToF32(w[i])) * float64(x[i])
			want += p
			mag += math.Abs(p)
		}
		for _, v := range Variants() {
			if v.DotBF16 == nil {
				continue
			}
			if got := v.DotBF16(w, x); !(math.Abs(float64(got)-want) <= 1e-5*mag+1e-6) {
				t.Errorf("%s, n=%d: %g, reference %g (Σ|w·x| %g)", v.Name, n, got, want, mag)
			}
		}
	}
}

func TestDotU8I8(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, n := range []int{0, 1, 255, 256, 257, 1000, 4096, 4099} {
		a, b := make([]uint8, n), make([]int8, n)
		var want int64
		for i := range a {
			// Full ranges, extremes included: a form that saturates
			// (VPMADDUBSW) fails here.
			a[i], b[i] = uint8(rng.IntN(256)), int8(rng.IntN(256)-128)
			if i%7 == 0 {
				a[i], b[i] = 255, -128
			}
			want += int64(a[i]) * int64(b[i])
		}
		for _, v := range Variants() {
			if v.DotU8I8 == nil {
				continue
			}
			if got := v.DotU8I8(a, b); int64(got) != want {
				t.Errorf("%s, n=%d: %d, reference %d", v.Name, n, got, want)
			}
		}
	}
}

func TestPermuteQ4RejectsRagged(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("PermuteQ4 of 65 elements did not panic")
		}
	}()
	PermuteQ4(make([]float32, 65), make([]float32, 65))
}
