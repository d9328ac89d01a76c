package cpu

import (
	"fmt"
	"github.com/fm-moe/fm/pkg/internal/half"
	"math"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

type matCase struct {
	rows, cols int
	f          Format
	bits, gs   int
	sf         Format
}

func (c matCase) String() string {
	if c.f == Affine {
		return fmt.Sprintf("q%d_g%d_%v_%dx%d", c.bits, c.gs, c.sf, c.rows, c.cols)
	}
	return fmt.Sprintf("%v_%dx%d", c.f, c.rows, c.cols)
}

func matCases() []matCase {
	var cs []matCase
	for _, dims := range [][2]int{{1, 1}, {3, 7}, {5, 13}, {17, 33}, {64, 129}, {130, 256}} {
		for _, f := range []Format{F32, BF16, F16} {
			cs = append(cs, matCase{rows: dims[0], cols: dims[1], f: f})
		}
	}
	for _, bits := range []int{2, 3, 4, 5, 6, 8} {
		for _, gs := range []int{32, 64, 128} {
			for _, rows := range []int{1, 3, 37} {
				for _, groups := range []int{1, 3} {
					for _, sf := range []Format{BF16, F16, F32} {
						cs = append(cs, matCase{rows: rows, cols: gs * groups, f: Affine, bits: bits, gs: gs, sf: sf})
					}
				}
			}
		}
	}
	return cs
}

// checkClose compares y with the float64 reference: each row's error must be
// within 1e-5 of the row's Σ|w·x| (float32 accumulation error is far below that).
func checkClose(t *testing.T, what string, y []float32, ref, mag []float64) {
	t.Helper()
	for r := range ref {
		tol := 1e-5*mag[r] + 1e-6
		if d := math.Abs(float64(y[r]) - ref[r]); d > tol || math.IsNaN(float64(y[r])) {
			t.Fatalf("%s: row %d: got %g, want %g (|Δ| %g > tol %g)", what, r, y[r], ref[r], d, tol)
		}
	}
}

func TestMatVecMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var pools []*Pool
	for _, level := range testLevels() {
		pools = append(pools, newPool(1, level), newPool(3, level))
	}
	for _, c := range matCases() {
		m := randomMatrix(rng, c.rows, c.cols, c.f, c.bits, c.gs, c.sf)
		if err := m.Validate(); err != nil {
			t.Fatalf("%v: %v", c, err)
		}
		x := randomVector(rng, c.cols)
		ref, mag := refMatVec(m, x)
		for _, p := range pools {
			y := make([]float32, c.rows)
			p.MatVec(y, m, x)
			checkClose(t, fmt.Sprintf("MatVec %v workers %d level %d", c, p.Workers(), p.level), y, ref, mag)
		}
		// Row dequantization agrees element by element.
		row := make([]float32, c.cols)
		r := c.rows / 2
		m.Row(row, r)
		for col := range row {
			if want := refElem(m, r, col); math.Abs(float64(row[col])-want) > 1e-6*math.Abs(want)+1e-7 {
				t.Fatalf("%v: Row(%d)[%d] = %g, want %g", c, r, col, row[col], want)
			}
		}
	}
}

func TestMatMulMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, level := range testLevels() {
		p := newPool(3, level)
		for _, c := range matCases() {
			m := randomMatrix(rng, c.rows, c.cols, c.f, c.bits, c.gs, c.sf)
			for _, n := range []int{1, 2, 5, 8} {
				x := randomVector(rng, n*c.cols)
				y := make([]float32, n*c.rows)
				p.MatMul(y, m, x, n)
				for tok := 0; tok < n; tok++ {
					ref, mag := refMatVec(m, x[tok*c.cols:(tok+1)*c.cols])
					checkClose(t, fmt.Sprintf("MatMul %v n=%d token %d level %d", c, n, tok, p.level), y[tok*c.rows:(tok+1)*c.rows], ref, mag)
				}
			}
		}
	}
}

// testLevels lists every kernel level this machine can run, generic first, so
// that each SIMD kernel is checked against the same reference as its twin.
func testLevels() []int {
	var ls []int
	for l := levelGeneric; l <= simdLevel; l++ {
		ls = append(ls, l)
	}
	return ls
}

func TestValidateRejectsBadSizes(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, tc := range []struct {
		name   string
		break_ func(m *Matrix)
	}{
		{"short data", func(m *Matrix) { m.Data = m.Data[:len(m.Data)-1] }},
		{"short scales", func(m *Matrix) { m.Scales = m.Scales[:len(m.Scales)-2] }},
		{"bad bits", func(m *Matrix) { m.Bits = 7 }},
		{"cols not a group multiple", func(m *Matrix) { m.Cols = 65 }},
		{"scale format", func(m *Matrix) { m.ScaleFormat = Affine }},
	} {
		m := randomMatrix(rng, 4, 128, Affine, 4, 64, BF16)
		tc.break_(m)
		if err := m.Validate(); err == nil {
			t.Errorf("%s: Validate accepted a broken matrix", tc.name)
		}
	}
}

func TestF16ToF32(t *testing.T) {
	for _, tc := range []struct {
		h    uint16
		want float32
	}{
		{0x3c00, 1}, {0xc000, -2}, {0x7bff, 65504}, {0x0001, 5.960464477539063e-08},
		{0x0400, 6.103515625e-05}, {0x8000, float32(math.Copysign(0, -1))}, {0x3555, 0.333251953125},
	} {
		if got := half.F16ToF32(tc.h); got != tc.want {
			t.Errorf("half.F16ToF32(%#04x) = %g, want %g", tc.h, got, tc.want)
		}
	}
	if !math.IsInf(float64(half.F16ToF32(0x7c00)), 1) || !math.IsNaN(float64(half.F16ToF32(0x7e00))) {
		t.Error("half.F16ToF32: inf/nan")
	}
}

func TestBF16RoundTrip(t *testing.T) {
	// Every bf16 value widens and narrows back to itself (NaNs stay NaN).
	for h := 0; h < 1<<16; h++ {
		f := half.BF16ToF32(uint16(h))
		got := half.F32ToBF16(f)
		if f != f {
			if g := half.BF16ToF32(got); g == g {
				t.Fatalf("NaN %#04x narrowed to non-NaN %#04x", h, got)
			}
			continue
		}
		if got != uint16(h) {
			t.Fatalf("bf16 %#04x → %g → %#04x", h, f, got)
		}
	}
	// Ties round to even.
	if got := half.F32ToBF16(math.Float32frombits(0x3f808000)); got != 0x3f80 {
		t.Errorf("tie to even down: %#04x", got)
	}
	if got := half.F32ToBF16(math.Float32frombits(0x3f818000)); got != 0x3f82 {
		t.Errorf("tie to even up: %#04x", got)
	}
}

func TestOps(t *testing.T) {
	x := []float32{1, -2, 3, 0.5}
	w := []float32{1, 2, 0.5, -1}
	dst := make([]float32, 4)
	RMSNorm(dst, x, w, 1e-6)
	ms := (1 + 4 + 9 + 0.25) / 4.0
	for i := range x {
		want := float64(x[i]) / math.Sqrt(ms+1e-6) * float64(w[i])
		if math.Abs(float64(dst[i])-want) > 1e-6 {
			t.Errorf("RMSNorm[%d] = %g, want %g", i, dst[i], want)
		}
	}
	s := []float32{1, 2, 3, 1000}
	softmaxRef(s)
	if math.Abs(float64(s[3])-1) > 1e-6 || s[0] < 0 {
		t.Errorf("Softmax with a large logit: %v", s)
	}
	s = []float32{0, float32(math.Log(3))}
	softmaxRef(s)
	if math.Abs(float64(s[0])-0.25) > 1e-6 {
		t.Errorf("Softmax: %v", s)
	}
	if got := Softplus(30); got != 30 {
		t.Errorf("Softplus(30) = %g", got)
	}
	if got := Softplus(0); math.Abs(float64(got)-math.Ln2) > 1e-7 {
		t.Errorf("Softplus(0) = %g", got)
	}
	if got := SiLU(-100); got != 0 && math.Abs(float64(got)) > 1e-30 {
		t.Errorf("SiLU(-100) = %g", got)
	}
	v := []float32{3, 4}
	L2Normalize(v, 0, 2)
	if math.Abs(float64(v[0])-1.2) > 1e-6 || math.Abs(float64(v[1])-1.6) > 1e-6 {
		t.Errorf("L2Normalize: %v", v)
	}
}

func TestRope(t *testing.T) {
	r := NewRope(4, 10000)
	if r.InvFreq[0] != 1 || math.Abs(float64(r.InvFreq[1])-0.01) > 1e-9 {
		t.Fatalf("inv_freq %v", r.InvFreq)
	}
	cos, sin := make([]float32, 2), make([]float32, 2)
	r.Tables(cos, sin, 3)
	x := []float32{1, 2, 3, 4, 5}
	r.Apply(x, cos, sin)
	// Pair (0,2) rotated by 3 rad, pair (1,3) by 0.03 rad; element 4 untouched.
	want := []float64{
		1*math.Cos(3) - 3*math.Sin(3), 2*math.Cos(0.03) - 4*math.Sin(0.03),
		3*math.Cos(3) + 1*math.Sin(3), 4*math.Cos(0.03) + 2*math.Sin(0.03), 5,
	}
	for i := range x {
		if math.Abs(float64(x[i])-want[i]) > 1e-5 {
			t.Errorf("rope[%d] = %g, want %g", i, x[i], want[i])
		}
	}
}

func TestPoolCoversRange(t *testing.T) {
	for _, workers := range []int{1, 2, 7} {
		p := NewPool(workers)
		for _, n := range []int{0, 1, 5, 1000} {
			seen := make([]int32, n)
			p.For(n, 1<<20, func(lo, hi int) {
				for i := lo; i < hi; i++ {
					seen[i]++
				}
			})
			for i, s := range seen {
				if s != 1 {
					t.Fatalf("workers %d n %d: item %d visited %d times", workers, n, i, s)
				}
			}
		}
	}
}

// TestPoolRest: Rest shortens the idle helpers' polling to restSpinTime until
// the next hand-off, which restores spinTime; a one-worker pool takes it too.
func TestPoolRest(t *testing.T) {
	NewPool(1).Rest()
	p := NewPool(3)
	limits := func() []time.Duration {
		var d []time.Duration
		for _, h := range p.team.helpers {
			d = append(d, h.spinLimit())
		}
		return d
	}
	same := func(when string, want time.Duration) {
		t.Helper()
		for i, d := range limits() {
			if d != want {
				t.Errorf("%s: helper %d polls %v, want %v", when, i, d, want)
			}
		}
	}
	same("new pool", spinTime)
	p.Rest()
	same("after Rest", restSpinTime)
	var sum atomic.Int64
	p.For(300, 1<<20, func(lo, hi int) { sum.Add(int64(hi - lo)) })
	if sum.Load() != 300 {
		t.Fatalf("For covered %d of 300 items after Rest", sum.Load())
	}
	same("after a For", spinTime)
}

// TestVectorKernelsSIMD compares the assembly vector kernels with the Go ones
// over odd lengths (the tails run in Go, the bodies in assembly).
func TestVectorKernelsSIMD(t *testing.T) {
	if !haveAVX2 {
		t.Skip("no AVX2/FMA on this CPU")
	}
	rng := rand.New(rand.NewPCG(7, 8))
	near := func(what string, n int, got, want float32, scale float64) {
		t.Helper()
		if d := math.Abs(float64(got - want)); d > 1e-5*scale+1e-6 {
			t.Fatalf("%s n=%d: got %g want %g", what, n, got, want)
		}
	}
	for _, n := range []int{0, 1, 7, 8, 15, 16, 31, 32, 33, 63, 64, 100, 257} {
		a, b := randomVector(rng, n), randomVector(rng, n)
		var mag float64
		for i := range a {
			mag += math.Abs(float64(a[i] * b[i]))
		}
		near("dotF32", n, dotF32SIMD(a, b), dotF32(a, b), mag)
		w := make([]uint16, n)
		for i := range w {
			w[i] = half.F32ToBF16(a[i])
		}
		near("dotBF16", n, dotBF16SIMD(w, b), dotBF16(w, b), mag)
		y1, y2 := randomVector(rng, n), make([]float32, n)
		copy(y2, y1)
		axpySIMD(y1, 0.7, a)
		axpyGo(y2, 0.7, a)
		for i := range y1 {
			near("axpy", n, y1[i], y2[i], 1)
		}
		s1, m1 := randomVector(rng, n), randomVector(rng, n)
		s2, m2 := append([]float32(nil), s1...), append([]float32(nil), m1...)
		decayReadSIMD(s1, m1, 0.9, -1.3)
		decayReadGo(s2, m2, 0.9, -1.3)
		o1 := randomVector(rng, n)
		o2 := append([]float32(nil), o1...)
		updateReadSIMD(s1, a, o1, 0.4, 1.1)
		updateReadGo(s2, a, o2, 0.4, 1.1)
		for i := range s1 {
			near("decayRead s", n, s1[i], s2[i], 1)
			near("decayRead mem", n, m1[i], m2[i], 1)
			near("updateRead o", n, o1[i], o2[i], 1)
		}
	}
}

// TestNonFiniteSplit: over many workers NonFinite still reports the first
// bad row, wherever the rows' parts begin and end.
func TestNonFiniteSplit(t *testing.T) {
	d := NewDevice(4)
	const rows, cols = 97, 2048
	x, err := d.NewTensor(rows, cols)
	if err != nil {
		t.Fatal(err)
	}
	xt := data(x)
	if !d.splitRows(xt, 1) {
		t.Fatal("a [97 × 2048] tensor is not split over 4 workers: the test checks nothing")
	}
	if r, _ := d.NonFinite(x); r != -1 {
		t.Fatalf("zeros: NonFinite = %d, want -1", r)
	}
	for _, bad := range [][]int{{96}, {0}, {24, 25}, {30, 80}, {73, 5, 60}} {
		clear(xt.data)
		for i, r := range bad {
			xt.row(r)[(r*31+i)%cols] = float32(math.NaN())
		}
		if r, _ := d.NonFinite(x); r != slices.Min(bad) {
			t.Errorf("NaN in rows %v: NonFinite = %d, want %d", bad, r, slices.Min(bad))
		}
	}
}
