package backendtest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"unsafe"

	"github.com/fm-moe/fm/pkg/backend"
)

// Run checks the Device that open returns against the contract of
// pkg/backend. It opens one Device and closes it at the end.
func Run(t *testing.T, open func() (backend.Device, error)) {
	d, err := open()
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	t.Logf("device %s", d.Name())
	for _, tc := range []struct {
		name string
		f    func(*testing.T, backend.Device)
	}{
		{"Tensors", testTensors},
		{"NonFinite", testNonFinite},
		{"MatMul", testMatMul},
		{"Embed", testEmbed},
		{"RMSNorm", testRMSNorm},
		{"AddSigmoidScaled", testAddSigmoidScaled},
		{"MLP", testMLP},
		{"ExpertFFN", testExpertFFN},
		{"Attention", testAttention},
		{"DeltaNet", testDeltaNet},
		{"ConcurrentStates", testConcurrentStates},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.f(t, d) })
	}
}

// Helpers.

func randVec(r *rand.Rand, n int, scale float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64() * scale)
	}
	return x
}

func upload(t *testing.T, d backend.Device, rows, cols int, v []float32) backend.Tensor {
	t.Helper()
	x, err := d.NewTensor(rows, cols)
	if err != nil {
		t.Fatalf("NewTensor(%d, %d): %v", rows, cols, err)
	}
	if v != nil {
		d.Upload(x, v)
	}
	return x
}

func download(t *testing.T, d backend.Device, x backend.Tensor) []float32 {
	t.Helper()
	out := make([]float32, x.Rows()*x.Cols())
	if err := d.Download(out, x); err != nil {
		t.Fatalf("Download: %v", err)
	}
	return out
}

// relErr is ‖got − want‖ / ‖want‖ (NaN when got holds a NaN).
func relErr(got []float32, want []float64) float64 {
	if len(got) != len(want) {
		return math.Inf(1)
	}
	var num, den float64
	for i, w := range want {
		e := float64(got[i]) - w
		num += e * e
		den += w * w
	}
	if den == 0 {
		return math.Sqrt(num)
	}
	return math.Sqrt(num / den)
}

// expect fails the test when got is farther than tol from want (relative L2).
func expect(t *testing.T, what string, got []float32, want []float64, tol float64) {
	t.Helper()
	e := relErr(got, want)
	if !(e <= tol) {
		t.Errorf("%s: relative error %.3g, want ≤ %g", what, e, tol)
	} else if testing.Verbose() {
		t.Logf("%s: relative error %.2g", what, e)
	}
}

// Tolerances (relative L2 errors) for float32 arithmetic in any order; the
// CPU backend's errors are one to two orders of magnitude smaller.
const (
	tolElementwise = 1e-6
	tolProduct     = 1e-5
	tolAttention   = 1e-5
	tolDeltaNet    = 5e-5
)

func testTensors(t *testing.T, d backend.Device) {
	r := rand.New(rand.NewPCG(1, 1))
	if _, err := d.NewTensor(0, 3); err == nil {
		t.Error("NewTensor(0, 3) succeeded")
	}
	x := upload(t, d, 5, 7, nil)
	if x.Rows() != 5 || x.Cols() != 7 {
		t.Fatalf("NewTensor(5, 7) is [%d × %d]", x.Rows(), x.Cols())
	}
	if got := download(t, d, x); slices.ContainsFunc(got, func(v float32) bool { return v != 0 }) {
		t.Error("NewTensor is not zeroed")
	}
	v := randVec(r, 35, 1)
	d.Upload(x, v)
	if got := download(t, d, x); !slices.Equal(got, v) {
		t.Fatal("Download after Upload differs")
	}
	// A view shares memory: rows 1 and 2.
	s := x.Slice(1, 3)
	if s.Rows() != 2 || s.Cols() != 7 {
		t.Fatalf("Slice(1, 3) is [%d × %d]", s.Rows(), s.Cols())
	}
	if got := download(t, d, s); !slices.Equal(got, v[7:21]) {
		t.Error("Download of a view differs from the rows it views")
	}
	w := randVec(r, 14, 1)
	d.Upload(s, w)
	want := slices.Concat(v[:7], w, v[21:])
	if got := download(t, d, x); !slices.Equal(got, want) {
		t.Error("Upload into a view did not land in the viewed rows only")
	}
	// Add is an exact float32 sum; on a view it touches only the view.
	y := randVec(r, 14, 1)
	d.Add(s, upload(t, d, 2, 7, y))
	for i := range y {
		want[7+i] += y[i]
	}
	if got := download(t, d, x); !slices.Equal(got, want) {
		t.Error("Add on a view: wrong sums or rows outside the view changed")
	}
	d.Clear(x.Slice(4, 5))
	clear(want[28:])
	if got := download(t, d, x); !slices.Equal(got, want) {
		t.Error("Clear of the last row: wrong rows cleared")
	}
	if err := d.Sync(); err != nil {
		t.Errorf("Sync: %v", err)
	}
}

func testNonFinite(t *testing.T, d backend.Device) {
	x := upload(t, d, 4, 33, randVec(rand.New(rand.NewPCG(2, 2)), 132, 1e30))
	check := func(what string, x backend.Tensor, want int) {
		t.Helper()
		got, err := d.NonFinite(x)
		if err != nil {
			t.Fatalf("NonFinite: %v", err)
		}
		if got != want {
			t.Errorf("%s: NonFinite = %d, want %d", what, got, want)
		}
	}
	check("finite", x, -1)
	set := func(row, col int, v float32) {
		one := x.Slice(row, row+1)
		vals := download(t, d, one)
		vals[col] = v
		d.Upload(one, vals)
	}
	set(2, 32, float32(math.NaN()))
	check("NaN in row 2", x, 2)
	set(1, 0, float32(math.Inf(-1)))
	check("-Inf in row 1, NaN in row 2", x, 1)
	check("view from row 2", x.Slice(2, 4), 0)
	check("view of row 3", x.Slice(3, 4), -1)
	if mk, ok := d.(backend.NonFiniteMarker); ok {
		testMarks(t, d, mk, x)
	}
}

// testMarks checks the optional deferred form of NonFinite: x has -Inf in
// row 1 and NaN in row 2.
func testMarks(t *testing.T, d backend.Device, mk backend.NonFiniteMarker, x backend.Tensor) {
	m, err := mk.NewMarks(5)
	if err != nil {
		t.Fatalf("NewMarks: %v", err)
	}
	defer m.Release()
	got := make([]int, 5)
	read := func(what string, want []int) {
		t.Helper()
		if err := m.Read(got); err != nil {
			t.Fatalf("Marks.Read: %v", err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: Marks.Read = %v, want %v", what, got, want)
		}
	}
	read("fresh", []int{-1, -1, -1, -1, -1})
	m.Mark(0, x.Slice(3, 4))
	m.Mark(1, x.Slice(2, 4))
	m.Mark(3, x)
	m.Mark(3, x.Slice(3, 4)) // a finite tensor does not clear the slot
	m.Mark(4, x.Slice(2, 4))
	m.Mark(4, x) // row 1 of x comes after row 0 of the view: the smaller stays
	read("no synchronizing call before Read", []int{-1, 0, -1, 1, 0})
	read("reset by Read", []int{-1, -1, -1, -1, -1})
	m.Mark(2, x)
	if err := d.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	read("read after Sync", []int{-1, -1, 1, -1, -1})
	m.Mark(0, x.Slice(2, 3))
	dl := make([]float32, 33)
	if err := d.Download(dl, x.Slice(0, 1)); err != nil {
		t.Fatalf("Download: %v", err)
	}
	read("read after Download", []int{0, -1, -1, -1, -1})
}

func testMatMul(t *testing.T, d backend.Device) {
	r := rand.New(rand.NewPCG(3, 3))
	for _, f := range allFormats() {
		for _, sh := range []struct{ rows, cols, T int }{{7, 37, 1}, {33, 100, 3}, {1, 5, 17}, {70, 260, 5}} {
			cols := f.colsFor(sh.cols)
			t.Run(fmt.Sprintf("%v/%dx%d/T%d", f, sh.rows, cols, sh.T), func(t *testing.T) {
				m := newDense(r, f, sh.rows, cols, 0.3)
				w, err := d.BindDense(m.desc, m.data, m.scales, m.biases)
				if err != nil {
					t.Fatalf("BindDense %v: %v", m.desc, err)
				}
				defer w.Release()
				if w.Desc() != m.desc {
					t.Errorf("Desc() = %v, want %v", w.Desc(), m.desc)
				}
				xv := randVec(r, sh.T*cols, 1)
				x := upload(t, d, sh.T, cols, xv)
				y := upload(t, d, sh.T, sh.rows, randVec(r, sh.T*sh.rows, 1)) // overwritten
				d.MatMul(y, w, x)
				expect(t, "y", download(t, d, y), refMatMul(m.w, sh.rows, cols, widen(xv)), tolProduct)
			})
		}
	}
	t.Run("BindDense rejects wrong sizes", func(t *testing.T) {
		m := newDense(r, format{backend.Affine, 4, 64, backend.BF16}, 3, 64, 1)
		if _, err := d.BindDense(m.desc, m.data[1:], m.scales, m.biases); err == nil {
			t.Error("short data accepted")
		}
		if _, err := d.BindDense(m.desc, m.data, m.scales[2:], m.biases); err == nil {
			t.Error("short scales accepted")
		}
		bad := m.desc
		bad.Bits = 7
		if _, err := d.BindDense(bad, m.data, m.scales, m.biases); err == nil {
			t.Error("7-bit codes accepted")
		}
	})
}

func testEmbed(t *testing.T, d backend.Device) {
	r := rand.New(rand.NewPCG(4, 4))
	for _, f := range allFormats() {
		t.Run(f.String(), func(t *testing.T) {
			V, H := 11, f.colsFor(40)
			m := newDense(r, f, V, H, 1)
			w, err := d.BindDense(m.desc, m.data, m.scales, m.biases)
			if err != nil {
				t.Fatal(err)
			}
			ids := []int{3, 0, 10, 3, 7}
			dst := upload(t, d, len(ids), H, nil)
			d.Embed(dst, w, ids)
			var want []float64
			for _, id := range ids {
				want = append(want, m.w[id*H:(id+1)*H]...)
			}
			expect(t, "rows", download(t, d, dst), want, tolElementwise)
		})
	}
}

func testRMSNorm(t *testing.T, d backend.Device) {
	r := rand.New(rand.NewPCG(5, 5))
	for _, sh := range []struct{ T, n int }{{1, 7}, {5, 64}, {3, 129}} {
		for _, inPlace := range []bool{false, true} {
			t.Run(fmt.Sprintf("T%d_n%d_inplace%v", sh.T, sh.n, inPlace), func(t *testing.T) {
				xv, wv := randVec(r, sh.T*sh.n, 3), randVec(r, sh.n, 1)
				x, w := upload(t, d, sh.T, sh.n, xv), upload(t, d, 1, sh.n, wv)
				dst := x
				if !inPlace {
					dst = upload(t, d, sh.T, sh.n, nil)
				}
				d.RMSNorm(dst, x, w, 1e-6)
				expect(t, "dst", download(t, d, dst), refRMSNorm(widen(xv), sh.n, widen(wv), 1e-6), tolElementwise)
			})
		}
	}
}

func testAddSigmoidScaled(t *testing.T, d backend.Device) {
	r := rand.New(rand.NewPCG(6, 6))
	T, H := 4, 37
	dv, sv, gv := randVec(r, T*H, 1), randVec(r, T*H, 1), randVec(r, T, 2)
	dst := upload(t, d, T, H, dv)
	d.AddSigmoidScaled(dst, upload(t, d, T, H, sv), upload(t, d, T, 1, gv))
	want := widen(dv)
	for i := range want {
		want[i] += sigmoid(float64(gv[i/H])) * float64(sv[i])
	}
	expect(t, "dst", download(t, d, dst), want, tolElementwise)
}

func testMLP(t *testing.T, d backend.Device) {
	r := rand.New(rand.NewPCG(7, 7))
	for _, f := range someFormats() {
		for _, sh := range []struct{ H, I, T int }{{40, 24, 1}, {64, 96, 6}} {
			H, I := f.colsFor(sh.H), f.colsFor(sh.I)
			t.Run(fmt.Sprintf("%v/H%d_I%d_T%d", f, H, I, sh.T), func(t *testing.T) {
				gate, up, down := newDense(r, f, I, H, 0.3), newDense(r, f, I, H, 0.3), newDense(r, f, H, I, 0.3)
				mats := bind(t, d, gate, up, down)
				xv := randVec(r, sh.T*H, 1)
				y := upload(t, d, sh.T, H, nil)
				d.MLP(y, upload(t, d, sh.T, H, xv), mats[0], mats[1], mats[2])
				expect(t, "y", download(t, d, y), refMLP(gate, up, down, widen(xv)), tolProduct)
			})
		}
	}
}

func bind(t *testing.T, d backend.Device, ms ...*dense) []backend.Matrix {
	t.Helper()
	var out []backend.Matrix
	for _, m := range ms {
		w, err := d.BindDense(m.desc, m.data, m.scales, m.biases)
		if err != nil {
			t.Fatalf("BindDense %v: %v", m.desc, err)
		}
		out = append(out, w)
	}
	return out
}

// expertFile lays gate, up and down out in one file the way fm's expert files
// do (each part at its own offset), with gaps of odd multiples of 16 bytes, and
// returns the layout and the file's bytes.
func expertFile(gate, up, down *dense) (*backend.ExpertLayout, []byte) {
	l := &backend.ExpertLayout{}
	var file []byte
	put := func(b []byte) backend.Part {
		if b == nil {
			return backend.Part{}
		}
		file = append(file, make([]byte, 48)...)
		p := backend.Part{Offset: len(file), Size: len(b)}
		file = append(file, b...)
		return p
	}
	for _, c := range []struct {
		dst *backend.ExpertMatrix
		m   *dense
	}{{&l.Gate, gate}, {&l.Up, up}, {&l.Down, down}} {
		*c.dst = backend.ExpertMatrix{Desc: c.m.desc, Data: put(c.m.data), Scales: put(c.m.scales), Biases: put(c.m.biases)}
	}
	file = append(file, make([]byte, 100)...)
	l.FileSize = len(file)
	return l, file
}

func testExpertFFN(t *testing.T, d backend.Device) {
	r := rand.New(rand.NewPCG(8, 8))
	for _, f := range someFormats() {
		t.Run(f.String(), func(t *testing.T) {
			H, I, T := f.colsFor(48), f.colsFor(32), 7
			type ex struct {
				gate, up, down *dense
				rows           []int
				weights        []float32
			}
			experts := []ex{
				{rows: []int{0, 2, 5}, weights: []float32{0.5, 0.25, 1}},
				{rows: []int{2}, weights: []float32{0.75}},
				{rows: []int{0, 1, 2, 3, 4, 5, 6}, weights: randVec(r, 7, 0.3)},
			}
			xv, ov := randVec(r, T*H, 1), randVec(r, T*H, 1)
			x, out := upload(t, d, T, H, xv), upload(t, d, T, H, ov)
			want := widen(ov)
			for i := range experts {
				e := &experts[i]
				e.gate, e.up, e.down = newDense(r, f, I, H, 0.3), newDense(r, f, I, H, 0.3), newDense(r, f, H, I, 0.3)
				l, file := expertFile(e.gate, e.up, e.down)
				if err := l.Validate(); err != nil {
					t.Fatal(err)
				}
				// The first expert comes from a buffer of the device, the
				// others from plain Go memory, which must work too.
				buf := file
				if i == 0 {
					var err error
					if buf, err = d.ExpertBuffer(len(file)); err != nil {
						t.Fatal(err)
					}
					if len(buf) != len(file) || uintptr(unsafe.Pointer(&buf[0]))%4096 != 0 {
						t.Errorf("ExpertBuffer(%d): %d bytes at %p, want that many, 4096-aligned", len(file), len(buf), &buf[0])
					}
					copy(buf, file)
					defer d.FreeExpertBuffer(buf)
				}
				be, err := d.BindExpert(l, buf)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := d.BindExpert(l, buf[:l.FileSize-1]); err == nil {
					t.Error("BindExpert accepted a buffer shorter than the file")
				}
				d.ExpertFFN(out, x, be, e.rows, e.weights)
				be.Release()
				var xs []float64
				for _, row := range e.rows {
					xs = append(xs, widen(xv[row*H:(row+1)*H])...)
				}
				y := refMLP(e.gate, e.up, e.down, xs)
				for k, row := range e.rows {
					for c := 0; c < H; c++ {
						want[row*H+c] += float64(e.weights[k]) * y[k*H+c]
					}
				}
			}
			expect(t, "out", download(t, d, out), want, tolProduct)
		})
	}
	t.Run("untouched rows", func(t *testing.T) {
		f := format{f: backend.BF16}
		H, I, T := 16, 8, 5
		l, file := expertFile(newDense(r, f, I, H, 1), newDense(r, f, I, H, 1), newDense(r, f, H, I, 1))
		e, err := d.BindExpert(l, file)
		if err != nil {
			t.Fatal(err)
		}
		ov := randVec(r, T*H, 1)
		out := upload(t, d, T, H, ov)
		d.ExpertFFN(out, upload(t, d, T, H, randVec(r, T*H, 1)), e, []int{1, 3}, []float32{1, 1})
		e.Release()
		got := download(t, d, out)
		for _, row := range []int{0, 2, 4} {
			if !slices.Equal(got[row*H:(row+1)*H], ov[row*H:(row+1)*H]) {
				t.Errorf("row %d, not routed to the expert, changed", row)
			}
		}
	})
}

// attnCase is an attention geometry and the token counts of successive calls.
type attnCase struct {
	heads, kvHeads, dim, rotary int
	gated                       bool
	steps                       []int
}

func (c attnCase) String() string {
	return fmt.Sprintf("h%d_kv%d_d%d_rot%d_gate%v_steps%v", c.heads, c.kvHeads, c.dim, c.rotary, c.gated, c.steps)
}

var attnCases = []attnCase{
	{4, 2, 16, 16, true, []int{5, 1, 1}},
	{4, 4, 32, 8, false, []int{1, 1, 3}},
	{6, 2, 24, 12, true, []int{70, 1}},
	{8, 1, 8, 0, false, []int{9, 2}},
	{2, 1, 64, 16, true, []int{130, 3}},
}

// attnLayer is an attention layer on the device and its reference.
type attnLayer struct {
	p   *backend.AttentionParams
	ref *refAttention
}

func newAttnLayer(t *testing.T, d backend.Device, r *rand.Rand, c attnCase) *attnLayer {
	qn, kn := randVec(r, c.dim, 0.3), randVec(r, c.dim, 0.3)
	for i := range qn {
		qn[i]++
		kn[i]++
	}
	p := &backend.AttentionParams{Heads: c.heads, KVHeads: c.kvHeads, HeadDim: c.dim, RotaryDim: c.rotary,
		RopeTheta: 10000, Gated: c.gated, QNorm: upload(t, d, 1, c.dim, qn), KNorm: upload(t, d, 1, c.dim, kn), Eps: 1e-6}
	return &attnLayer{p: p, ref: &refAttention{p: p, qNorm: widen(qn), kNorm: widen(kn)}}
}

// attnInputs draws one call's q, k, v.
func attnInputs(r *rand.Rand, p *backend.AttentionParams, T int) (q, k, v []float32) {
	qw := p.Heads * p.HeadDim
	if p.Gated {
		qw *= 2
	}
	kw := p.KVHeads * p.HeadDim
	return randVec(r, T*qw, 1), randVec(r, T*kw, 1), randVec(r, T*kw, 1)
}

// attend runs one Attention call on the device and returns out.
func attend(t *testing.T, d backend.Device, st backend.State, layer, pos int, p *backend.AttentionParams, q, k, v []float32) []float32 {
	T := len(k) / (p.KVHeads * p.HeadDim)
	out := upload(t, d, T, p.Heads*p.HeadDim, nil)
	d.Attention(out, upload(t, d, T, len(q)/T, q), upload(t, d, T, len(k)/T, k), upload(t, d, T, len(v)/T, v), st, layer, pos, p)
	return download(t, d, out)
}

func testAttention(t *testing.T, d backend.Device) {
	r := rand.New(rand.NewPCG(9, 9))
	for _, c := range attnCases {
		t.Run(c.String(), func(t *testing.T) {
			a := newAttnLayer(t, d, r, c)
			// The attention state is layer 1 of 3, so indexing is exercised.
			specs := []backend.LayerSpec{{}, {Attention: a.p}, {}}
			st, err := d.NewState(specs)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Release()
			var clone backend.State
			var cloneRef refAttention
			pos := 0
			var first [3][]float32
			for i, T := range c.steps {
				q, k, v := attnInputs(r, a.p, T)
				if i == 0 {
					first = [3][]float32{q, k, v}
				}
				want := a.ref.step(widen(q), widen(k), widen(v))
				// Inputs may be overwritten: give the clone its own copies.
				q2, k2, v2 := slices.Clone(q), slices.Clone(k), slices.Clone(v)
				expect(t, fmt.Sprintf("step %d (pos %d, %d tokens)", i, pos, T), attend(t, d, st, 1, pos, a.p, q, k, v), want, tolAttention)
				if clone != nil {
					expect(t, fmt.Sprintf("clone step %d", i), attend(t, d, clone, 1, pos, a.p, q2, k2, v2), cloneRef.step(widen(q2), widen(k2), widen(v2)), tolAttention)
				}
				pos += T
				if i == 0 {
					// Clone after the first call; both continue alike.
					if clone, err = st.Clone(); err != nil {
						t.Fatal(err)
					}
					defer clone.Release()
					cloneRef = *a.ref
					cloneRef.keys, cloneRef.vals = slices.Clone(a.ref.keys), slices.Clone(a.ref.vals)
				}
			}
			if st.Bytes() <= 0 {
				t.Errorf("Bytes() = %d after %d positions", st.Bytes(), pos)
			}
			// Reset: the first call again gives the first output again.
			st.Reset()
			fresh := &refAttention{p: a.p, qNorm: a.ref.qNorm, kNorm: a.ref.kNorm}
			q, k, v := first[0], first[1], first[2]
			want := fresh.step(widen(q), widen(k), widen(v))
			expect(t, "after Reset", attend(t, d, st, 1, 0, a.p, slices.Clone(q), slices.Clone(k), slices.Clone(v)), want, tolAttention)
		})
	}
}

// deltaCase is a GatedDeltaNet geometry and the token counts of successive calls.
type deltaCase struct {
	keyHeads, valueHeads, keyDim, valueDim, kernel int
	steps                                          []int
}

func (c deltaCase) String() string {
	return fmt.Sprintf("nk%d_nv%d_dk%d_dv%d_K%d_steps%v", c.keyHeads, c.valueHeads, c.keyDim, c.valueDim, c.kernel, c.steps)
}

var deltaCases = []deltaCase{
	{2, 4, 16, 8, 4, []int{5, 1, 1}},
	{1, 1, 32, 32, 4, []int{70, 1, 3}},
	{2, 2, 24, 40, 1, []int{3, 2}},
	{3, 6, 8, 16, 3, []int{130, 2}},
}

type deltaLayer struct {
	p   *backend.DeltaNetParams
	ref *refDeltaNet
}

func newDeltaLayer(t *testing.T, d backend.Device, r *rand.Rand, c deltaCase) *deltaLayer {
	p := &backend.DeltaNetParams{KeyHeads: c.keyHeads, ValueHeads: c.valueHeads, KeyDim: c.keyDim, ValueDim: c.valueDim,
		ConvKernel: c.kernel, Eps: 1e-6}
	C := p.Channels()
	conv := randVec(r, C*c.kernel, 0.5)
	negA, dtBias := make([]float32, c.valueHeads), randVec(r, c.valueHeads, 0.5)
	for i := range negA {
		negA[i] = -float32(math.Exp(r.Float64()*3 - 2))
	}
	norm := randVec(r, c.valueDim, 0.2)
	for i := range norm {
		norm[i]++
	}
	p.Conv, p.NegA, p.DtBias, p.Norm = upload(t, d, C, c.kernel, conv), upload(t, d, 1, c.valueHeads, negA),
		upload(t, d, 1, c.valueHeads, dtBias), upload(t, d, 1, c.valueDim, norm)
	return &deltaLayer{p: p, ref: newRefDeltaNet(p, widen(conv), widen(negA), widen(dtBias), widen(norm))}
}

func deltaInputs(r *rand.Rand, p *backend.DeltaNetParams, T int) [4][]float32 {
	return [4][]float32{randVec(r, T*p.Channels(), 1), randVec(r, T*p.ValueHeads*p.ValueDim, 1),
		randVec(r, T*p.ValueHeads, 1), randVec(r, T*p.ValueHeads, 1)}
}

func deltaRun(t *testing.T, d backend.Device, st backend.State, layer int, p *backend.DeltaNetParams, in [4][]float32) []float32 {
	T := len(in[2]) / p.ValueHeads
	out := upload(t, d, T, p.ValueHeads*p.ValueDim, nil)
	d.DeltaNet(out, upload(t, d, T, p.Channels(), slices.Clone(in[0])), upload(t, d, T, p.ValueHeads*p.ValueDim, in[1]),
		upload(t, d, T, p.ValueHeads, in[2]), upload(t, d, T, p.ValueHeads, in[3]), st, layer, p)
	return download(t, d, out)
}

func (rf *refDeltaNet) clone() *refDeltaNet {
	c := *rf
	c.convState = slices.Clone(rf.convState)
	c.rec = nil
	for _, s := range rf.rec {
		c.rec = append(c.rec, slices.Clone(s))
	}
	return &c
}

func (rf *refDeltaNet) run(in [4][]float32) []float64 {
	return rf.step(widen(in[0]), widen(in[1]), widen(in[2]), widen(in[3]))
}

func testDeltaNet(t *testing.T, d backend.Device) {
	r := rand.New(rand.NewPCG(10, 10))
	for _, c := range deltaCases {
		t.Run(c.String(), func(t *testing.T) {
			dl := newDeltaLayer(t, d, r, c)
			specs := []backend.LayerSpec{{DeltaNet: dl.p}, {}}
			st, err := d.NewState(specs)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Release()
			fresh := dl.ref.clone()
			var clone backend.State
			var cloneRef *refDeltaNet
			var first [4][]float32
			for i, T := range c.steps {
				in := deltaInputs(r, dl.p, T)
				if i == 0 {
					first = in
				}
				expect(t, fmt.Sprintf("step %d (%d tokens)", i, T), deltaRun(t, d, st, 0, dl.p, in), dl.ref.run(in), tolDeltaNet)
				if clone != nil {
					expect(t, fmt.Sprintf("clone step %d", i), deltaRun(t, d, clone, 0, dl.p, in), cloneRef.run(in), tolDeltaNet)
				}
				if i == 0 {
					if clone, err = st.Clone(); err != nil {
						t.Fatal(err)
					}
					defer clone.Release()
					cloneRef = dl.ref.clone()
				}
			}
			st.Reset()
			expect(t, "after Reset", deltaRun(t, d, st, 0, dl.p, first), fresh.run(first), tolDeltaNet)
		})
	}
}

// testConcurrentStates runs an attention and a delta-net layer on several
// States from several goroutines at once, sharing the parameters, and
// compares each with the reference.
func testConcurrentStates(t *testing.T, d backend.Device) {
	r := rand.New(rand.NewPCG(11, 11))
	ac, dc := attnCases[0], deltaCases[0]
	a, dl := newAttnLayer(t, d, r, ac), newDeltaLayer(t, d, r, dc)
	specs := []backend.LayerSpec{{Attention: a.p}, {DeltaNet: dl.p}}
	const workers = 4
	type job struct {
		attn  [][3][]float32
		delta [][4][]float32
		wantA [][]float64
		wantD [][]float64
	}
	jobs := make([]job, workers)
	for w := range jobs {
		ra := &refAttention{p: a.p, qNorm: a.ref.qNorm, kNorm: a.ref.kNorm}
		rd := dl.ref.clone()
		for _, T := range []int{6, 1, 1} {
			q, k, v := attnInputs(r, a.p, T)
			jobs[w].attn = append(jobs[w].attn, [3][]float32{q, k, v})
			jobs[w].wantA = append(jobs[w].wantA, ra.step(widen(q), widen(k), widen(v)))
			in := deltaInputs(r, dl.p, T)
			jobs[w].delta = append(jobs[w].delta, in)
			jobs[w].wantD = append(jobs[w].wantD, rd.run(in))
		}
	}
	var wg sync.WaitGroup
	errs := make([]string, workers)
	for w := range jobs {
		wg.Go(func() {
			st, err := d.NewState(specs)
			if err != nil {
				errs[w] = err.Error()
				return
			}
			defer st.Release()
			pos := 0
			for i, in := range jobs[w].attn {
				T := len(in[1]) / (a.p.KVHeads * a.p.HeadDim)
				got := attendNoFatal(d, st, pos, a.p, in)
				if e := relErr(got, jobs[w].wantA[i]); !(e <= tolAttention) {
					errs[w] += fmt.Sprintf("attention step %d: relative error %.3g; ", i, e)
				}
				gotD := deltaNoFatal(d, st, dl.p, jobs[w].delta[i])
				if e := relErr(gotD, jobs[w].wantD[i]); !(e <= tolDeltaNet) {
					errs[w] += fmt.Sprintf("delta-net step %d: relative error %.3g; ", i, e)
				}
				pos += T
			}
		})
	}
	wg.Wait()
	for w, e := range errs {
		if e != "" {
			t.Errorf("goroutine %d: %s", w, e)
		}
	}
}

// attendNoFatal and deltaNoFatal are attend and deltaRun for goroutines other
// than the test's (which may not call t.Fatal): failures show as NaN outputs.
func attendNoFatal(d backend.Device, st backend.State, pos int, p *backend.AttentionParams, in [3][]float32) []float32 {
	q, k, v := slices.Clone(in[0]), slices.Clone(in[1]), slices.Clone(in[2])
	T := len(k) / (p.KVHeads * p.HeadDim)
	ts := tensorsNoFatal(d, [][2]int{{T, p.Heads * p.HeadDim}, {T, len(q) / T}, {T, len(k) / T}, {T, len(v) / T}}, [][]float32{nil, q, k, v})
	if ts == nil {
		return nanSlice(T * p.Heads * p.HeadDim)
	}
	d.Attention(ts[0], ts[1], ts[2], ts[3], st, 0, pos, p)
	return downloadNoFatal(d, ts[0])
}

func deltaNoFatal(d backend.Device, st backend.State, p *backend.DeltaNetParams, in [4][]float32) []float32 {
	T := len(in[2]) / p.ValueHeads
	vd := p.ValueHeads * p.ValueDim
	ts := tensorsNoFatal(d, [][2]int{{T, vd}, {T, p.Channels()}, {T, vd}, {T, p.ValueHeads}, {T, p.ValueHeads}},
		[][]float32{nil, slices.Clone(in[0]), in[1], in[2], in[3]})
	if ts == nil {
		return nanSlice(T * vd)
	}
	d.DeltaNet(ts[0], ts[1], ts[2], ts[3], ts[4], st, 1, p)
	return downloadNoFatal(d, ts[0])
}

func tensorsNoFatal(d backend.Device, shapes [][2]int, vals [][]float32) []backend.Tensor {
	var ts []backend.Tensor
	for i, s := range shapes {
		x, err := d.NewTensor(s[0], s[1])
		if err != nil {
			return nil
		}
		if vals[i] != nil {
			d.Upload(x, vals[i])
		}
		ts = append(ts, x)
	}
	return ts
}

func downloadNoFatal(d backend.Device, x backend.Tensor) []float32 {
	out := make([]float32, x.Rows()*x.Cols())
	if d.Download(out, x) != nil {
		return nanSlice(len(out))
	}
	return out
}

func nanSlice(n int) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(math.NaN())
	}
	return out
}
