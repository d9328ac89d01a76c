//go:build cuda && linux

package cuda

import (
	"fmt"
	"github.com/fm-moe/fm/pkg/internal/half"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/fm-moe/fm/pkg/backend"
)

// These tests run every operation of the CUDA backend on random inputs and
// compare with float64 reference twins written from the contract's formulas
// (pkg/backend). They skip where no CUDA device can be opened.

func openGPU(t testing.TB) backend.Device {
	t.Helper()
	d, err := backend.Open("cuda", backend.Options{})
	if err != nil {
		t.Skipf("no CUDA device: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	if g, ok := d.(*gpu); ok {
		t.Logf("%s, sm_%d%d, %d SMs, driver %d, NVRTC %s, kernels: %s (compile %v)", g.Name(), g.d.Info.CC[0], g.d.Info.CC[1],
			g.d.Info.SMs, g.d.Info.DriverVersion, g.d.Info.NVRTCVersion, g.d.Info.KernelSource, g.d.Info.CompileTime)
	}
	return d
}

// compare checks got against want: ‖got−want‖/‖want‖ ≤ tol, every value
// finite. It returns the relative error for the log.
func compare(t *testing.T, what string, got []float32, want []float64, tol float64) float64 {
	t.Helper()
	return compareFloor(t, what, got, want, 0, tol)
}

// compareFloor is compare with the error taken relative to at least floor
// (an L2 norm): where the result cancels to far below the size of its terms,
// float32 rounding of the terms, not the result, sets the error.
func compareFloor(t *testing.T, what string, got []float32, want []float64, floor, tol float64) float64 {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	var num, den, maxAbs float64
	for i := range got {
		g := float64(got[i])
		if math.IsNaN(g) || math.IsInf(g, 0) {
			t.Fatalf("%s: value %d is %v (want %v)", what, i, g, want[i])
		}
		d := g - want[i]
		num += d * d
		den += want[i] * want[i]
		maxAbs = max(maxAbs, math.Abs(d))
	}
	rel := math.Sqrt(num / max(den, floor*floor, 1e-300))
	if rel > tol {
		t.Errorf("%s: relative error %.3g > %.1g (max abs diff %.3g)", what, rel, tol, maxAbs)
	}
	return rel
}

func randVec(r *rand.Rand, n int, scale float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32((r.Float64()*2 - 1) * scale)
	}
	return v
}

func upload(t *testing.T, d backend.Device, rows, cols int, v []float32) backend.Tensor {
	t.Helper()
	x, err := d.NewTensor(rows, cols)
	if err != nil {
		t.Fatal(err)
	}
	d.Upload(x, v)
	return x
}

func download(t *testing.T, d backend.Device, x backend.Tensor) []float32 {
	t.Helper()
	out := make([]float32, x.Rows()*x.Cols())
	if err := d.Download(out, x); err != nil {
		t.Fatal(err)
	}
	return out
}

// stored is a random matrix in a stored format with its float64 values.
type stored struct {
	desc                 backend.MatrixDesc
	data, scales, biases []byte
	w                    []float64 // [rows × cols]
}

func encodeFloat(dst []byte, v float32, f backend.Format) {
	switch f {
	case backend.F32:
		u := math.Float32bits(v)
		dst[0], dst[1], dst[2], dst[3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
	case backend.BF16:
		u := half.F32ToBF16(v)
		dst[0], dst[1] = byte(u), byte(u>>8)
	case backend.F16:
		u := half.F32ToF16(v)
		dst[0], dst[1] = byte(u), byte(u>>8)
	}
}

func decodeFloat(src []byte, f backend.Format) float64 {
	switch f {
	case backend.F32:
		return float64(math.Float32frombits(uint32(src[0]) | uint32(src[1])<<8 | uint32(src[2])<<16 | uint32(src[3])<<24))
	case backend.BF16:
		return float64(half.BF16ToF32(uint16(src[0]) | uint16(src[1])<<8))
	default:
		return float64(half.F16ToF32(uint16(src[0]) | uint16(src[1])<<8))
	}
}

func randStored(r *rand.Rand, desc backend.MatrixDesc) *stored {
	s := &stored{desc: desc, w: make([]float64, desc.Rows*desc.Cols)}
	s.data = make([]byte, desc.DataBytes())
	if desc.Format != backend.Affine {
		es := desc.Format.ElemSize()
		for i := range s.w {
			encodeFloat(s.data[i*es:], float32(r.NormFloat64()*0.1), desc.Format)
			s.w[i] = decodeFloat(s.data[i*es:], desc.Format)
		}
		return s
	}
	for i := range s.data {
		s.data[i] = byte(r.IntN(256))
	}
	g := desc.Cols / desc.GroupSize
	es := desc.ScaleFormat.ElemSize()
	s.scales = make([]byte, desc.ScaleBytes())
	s.biases = make([]byte, desc.ScaleBytes())
	for i := 0; i < desc.Rows*g; i++ {
		encodeFloat(s.scales[i*es:], float32(r.Float64()*0.02+0.001), desc.ScaleFormat)
		encodeFloat(s.biases[i*es:], float32(r.NormFloat64()*0.1), desc.ScaleFormat)
	}
	rb := desc.RowBytes()
	for row := 0; row < desc.Rows; row++ {
		for c := 0; c < desc.Cols; c++ {
			bit := c * desc.Bits
			raw := s.data[row*rb:]
			v := uint32(raw[bit>>3])
			if bit&7+desc.Bits > 8 {
				v |= uint32(raw[bit>>3+1]) << 8
			}
			q := float64(v >> (bit & 7) & (1<<desc.Bits - 1))
			gi := (row*g + c/desc.GroupSize) * es
			s.w[row*desc.Cols+c] = decodeFloat(s.scales[gi:], desc.ScaleFormat)*q + decodeFloat(s.biases[gi:], desc.ScaleFormat)
		}
	}
	return s
}

func (s *stored) bind(t *testing.T, d backend.Device) backend.Matrix {
	t.Helper()
	m, err := d.BindDense(s.desc, s.data, s.scales, s.biases)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// matmulRef is y[t, r] = Σ_c w[r, c]·x[t, c] in float64.
func matmulRef(w []float64, rows, cols int, x []float32, T int) []float64 {
	y := make([]float64, T*rows)
	for t := 0; t < T; t++ {
		for r := 0; r < rows; r++ {
			var s float64
			for c := 0; c < cols; c++ {
				s += w[r*cols+c] * float64(x[t*cols+c])
			}
			y[t*rows+r] = s
		}
	}
	return y
}

// matmulAbsNorm is the L2 norm over t, r of Σ_c |w[r, c]·x[t, c]|.
func matmulAbsNorm(w []float64, rows, cols int, x []float32, T int) float64 {
	var n float64
	for t := 0; t < T; t++ {
		for r := 0; r < rows; r++ {
			var s float64
			for c := 0; c < cols; c++ {
				s += math.Abs(w[r*cols+c] * float64(x[t*cols+c]))
			}
			n += s * s
		}
	}
	return math.Sqrt(n)
}

func formats() []backend.MatrixDesc {
	var out []backend.MatrixDesc
	for _, f := range []backend.Format{backend.F32, backend.BF16, backend.F16} {
		out = append(out, backend.MatrixDesc{Format: f})
	}
	for _, bits := range []int{2, 3, 4, 5, 6, 8} {
		for _, gs := range []int{32, 64, 128} {
			sf := []backend.Format{backend.BF16, backend.F16, backend.F32}[(bits+gs/32)%3]
			out = append(out, backend.MatrixDesc{Format: backend.Affine, Bits: bits, GroupSize: gs, ScaleFormat: sf})
		}
	}
	return out
}

func TestMatMulEveryFormat(t *testing.T) {
	d := openGPU(t)
	r := rand.New(rand.NewPCG(1, 2))
	shapes := []struct{ rows, cols int }{{1, 128}, {7, 256}, {130, 384}, {33, 1024}, {257, 64}}
	worst := 0.0
	for _, f := range formats() {
		for _, sh := range shapes {
			desc := f
			desc.Rows, desc.Cols = sh.rows, sh.cols
			if desc.Format == backend.Affine && desc.Cols%desc.GroupSize != 0 {
				continue
			}
			if desc.Validate() != nil {
				continue
			}
			s := randStored(r, desc)
			m := s.bind(t, d)
			// T ≥ gemmMinT (16) goes to the tiled kernels: their threshold,
			// token tiles of 32 and 64 and the edges of both.
			for _, T := range []int{1, 3, 8, 9, 15, 16, 17, 33, 64, 100, 512} {
				xv := randVec(r, T*sh.cols, 1)
				x := upload(t, d, T, sh.cols, xv)
				y, _ := d.NewTensor(T, sh.rows)
				d.MatMul(y, m, x)
				// Relative to at least 1 % of ‖Σ|w·x|‖: a row of one output
				// can cancel to 1e-3 of its terms (seen with 3-bit, T = 1).
				floor := 0.01 * matmulAbsNorm(s.w, sh.rows, sh.cols, xv, T)
				worst = max(worst, compareFloor(t, fmt.Sprintf("%v T=%d", desc, T), download(t, d, y), matmulRef(s.w, sh.rows, sh.cols, xv, T), floor, 2e-5))
				x.Release()
				y.Release()
			}
			m.Release()
		}
	}
	t.Logf("worst relative error over every format, shape and T: %.3g", worst)
}

// TestMatMulGeneric covers shapes the vectorized kernels do not take: groups
// of 8 or 16 columns, rows that are not a multiple of 32 columns.
func TestMatMulGeneric(t *testing.T) {
	d := openGPU(t)
	r := rand.New(rand.NewPCG(3, 4))
	for _, desc := range []backend.MatrixDesc{
		{Rows: 9, Cols: 40, Format: backend.Affine, Bits: 4, GroupSize: 8, ScaleFormat: backend.BF16},
		{Rows: 5, Cols: 48, Format: backend.Affine, Bits: 2, GroupSize: 16, ScaleFormat: backend.F16},
		{Rows: 3, Cols: 44, Format: backend.BF16},
		{Rows: 6, Cols: 37, Format: backend.F32},
		{Rows: 4, Cols: 32 * 3, Format: backend.Affine, Bits: 6, GroupSize: 16, ScaleFormat: backend.F32},
	} {
		s := randStored(r, desc)
		m := s.bind(t, d)
		for _, T := range []int{1, 10} {
			xv := randVec(r, T*desc.Cols, 1)
			x := upload(t, d, T, desc.Cols, xv)
			y, _ := d.NewTensor(T, desc.Rows)
			d.MatMul(y, m, x)
			rel := compare(t, fmt.Sprintf("%v T=%d", desc, T), download(t, d, y), matmulRef(s.w, desc.Rows, desc.Cols, xv, T), 2e-5)
			t.Logf("%v T=%d: relative error %.3g", desc, T, rel)
		}
	}
}

func TestEmbedNormAddGate(t *testing.T) {
	d := openGPU(t)
	r := rand.New(rand.NewPCG(5, 6))
	const H, T = 320, 5
	desc := backend.MatrixDesc{Rows: 50, Cols: H, Format: backend.Affine, Bits: 4, GroupSize: 64, ScaleFormat: backend.BF16}
	s := randStored(r, desc)
	tab := s.bind(t, d)
	ids := []int{3, 0, 49, 3, 17}
	h, _ := d.NewTensor(T, H)
	d.Embed(h, tab, ids)
	want := make([]float64, T*H)
	for i, id := range ids {
		copy(want[i*H:], s.w[id*H:(id+1)*H])
	}
	hv := download(t, d, h)
	t.Logf("embed: relative error %.3g", compare(t, "Embed", hv, want, 1e-7))

	wv := randVec(r, H, 1)
	w := upload(t, d, 1, H, wv)
	dst, _ := d.NewTensor(T, H)
	const eps = 1e-6
	d.RMSNorm(dst, h, w, eps)
	ref := make([]float64, T*H)
	for tt := 0; tt < T; tt++ {
		var ss float64
		for c := 0; c < H; c++ {
			ss += float64(hv[tt*H+c]) * float64(hv[tt*H+c])
		}
		inv := 1 / math.Sqrt(ss/H+eps)
		for c := 0; c < H; c++ {
			ref[tt*H+c] = float64(hv[tt*H+c]) * inv * float64(wv[c])
		}
	}
	t.Logf("rmsnorm: relative error %.3g", compare(t, "RMSNorm", download(t, d, dst), ref, 1e-6))
	d.RMSNorm(h, h, w, eps) // in place
	t.Logf("rmsnorm in place: relative error %.3g", compare(t, "RMSNorm in place", download(t, d, h), ref, 1e-6))

	xv := randVec(r, T*H, 1)
	x := upload(t, d, T, H, xv)
	hv = download(t, d, h)
	d.Add(h, x)
	for i := range ref {
		ref[i] = float64(hv[i]) + float64(xv[i])
	}
	compare(t, "Add", download(t, d, h), ref, 1e-7)

	gv := randVec(r, T, 3)
	gt := upload(t, d, T, 1, gv)
	hv = download(t, d, h)
	d.AddSigmoidScaled(h, x, gt)
	for i := range ref {
		ref[i] = float64(hv[i]) + float64(xv[i])/(1+math.Exp(-float64(gv[i/H])))
	}
	compare(t, "AddSigmoidScaled", download(t, d, h), ref, 1e-6)

	d.Clear(h)
	for i, v := range download(t, d, h) {
		if v != 0 {
			t.Fatalf("Clear: element %d is %v", i, v)
		}
	}
	if row, err := d.NonFinite(h); err != nil || row != -1 {
		t.Fatalf("NonFinite of zeros = %d, %v", row, err)
	}
	bad := make([]float32, T*H)
	bad[3*H+7] = float32(math.NaN())
	d.Upload(h, bad)
	if row, err := d.NonFinite(h); err != nil || row != 3 {
		t.Fatalf("NonFinite with a NaN in row 3 = %d, %v", row, err)
	}
}

func silu(x float64) float64 { return x / (1 + math.Exp(-x)) }

// ffnRef is down·(silu(gate·x) ⊙ up·x) for one token.
func ffnRef(gate, up, down *stored, x []float32) []float64 {
	I, H := gate.desc.Rows, gate.desc.Cols
	h := make([]float32, I)
	g := matmulRef(gate.w, I, H, x, 1)
	u := matmulRef(up.w, I, H, x, 1)
	for i := range h {
		h[i] = float32(silu(g[i]) * u[i])
	}
	return matmulRef(down.w, down.desc.Rows, I, h, 1)
}

func TestMLPAndExpertFFN(t *testing.T) {
	d := openGPU(t)
	r := rand.New(rand.NewPCG(7, 8))
	const H, I, T = 256, 192, 12
	for _, base := range []backend.MatrixDesc{
		{Format: backend.Affine, Bits: 4, GroupSize: 64, ScaleFormat: backend.BF16},
		{Format: backend.BF16},
		{Format: backend.Affine, Bits: 3, GroupSize: 32, ScaleFormat: backend.F16},
	} {
		gd, dd := base, base
		gd.Rows, gd.Cols, dd.Rows, dd.Cols = I, H, H, I
		gate, up, down := randStored(r, gd), randStored(r, gd), randStored(r, dd)
		xv := randVec(r, T*H, 1)
		x := upload(t, d, T, H, xv)
		y, _ := d.NewTensor(T, H)
		mg, mu, md := gate.bind(t, d), up.bind(t, d), down.bind(t, d)
		d.MLP(y, x, mg, mu, md)
		want := make([]float64, 0, T*H)
		for tt := 0; tt < T; tt++ {
			want = append(want, ffnRef(gate, up, down, xv[tt*H:(tt+1)*H])...)
		}
		t.Logf("%v MLP: relative error %.3g", base, compare(t, fmt.Sprintf("MLP %v", base), download(t, d, y), want, 3e-5))

		// The same matrices as one expert file: parts at 4096-byte offsets
		// as fm writes them, then at odd offsets (the contract allows any).
		for _, odd := range []bool{false, true} {
			l := storedLayout(odd, gate, up, down)
			var file []byte
			for _, pinned := range []bool{true, false} {
				if pinned {
					var err error
					if file, err = d.ExpertBuffer(l.FileSize); err != nil {
						t.Fatal(err)
					}
				} else {
					file = make([]byte, l.FileSize)
				}
				writeStored(file, l, gate, up, down)
				e, err := d.BindExpert(l, file)
				if err != nil {
					t.Fatal(err)
				}
				// 3 rows go by value, 11 through the staging ring.
				for _, rows := range [][]int{{0, 2, 5}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11}} {
					out, _ := d.NewTensor(T, H)
					ov := randVec(r, T*H, 1)
					d.Upload(out, ov)
					wts := randVec(r, len(rows), 1)
					d.ExpertFFN(out, x, e, rows, wts)
					ref := make([]float64, T*H)
					for i, v := range ov {
						ref[i] = float64(v)
					}
					for i, row := range rows {
						y := ffnRef(gate, up, down, xv[row*H:(row+1)*H])
						for c := range y {
							ref[row*H+c] += float64(wts[i]) * y[c]
						}
					}
					t.Logf("%v ExpertFFN (pinned %v, odd offsets %v, %d rows): relative error %.3g", base, pinned, odd, len(rows),
						compare(t, fmt.Sprintf("ExpertFFN %v pinned=%v odd=%v rows=%d", base, pinned, odd, len(rows)), download(t, d, out), ref, 3e-5))
				}
				e.Release()
				if pinned {
					d.FreeExpertBuffer(file)
				}
			}
		}
	}
}

// attnRef is the contract's Attention in float64 over a reference cache.
type attnRef struct {
	p    *backend.AttentionParams
	qn   []float64
	kn   []float64
	keys [][]float64
	vals [][]float64
}

func (a *attnRef) normRope(x []float32, w []float64, pos int, eps float64) []float64 {
	D, R := a.p.HeadDim, a.p.RotaryDim
	var ss float64
	for _, v := range x[:D] {
		ss += float64(v) * float64(v)
	}
	inv := 1 / math.Sqrt(ss/float64(D)+eps)
	h := make([]float64, D)
	for i := range h {
		h[i] = float64(x[i]) * inv * w[i]
	}
	out := append([]float64(nil), h...)
	for i := 0; i < R/2; i++ {
		invf := 1 / float32(math.Pow(a.p.RopeTheta, float64(float32(2*i)/float32(R))))
		ang := float64(float32(float32(pos) * invf))
		c, s := math.Cos(ang), math.Sin(ang)
		out[i] = h[i]*c - h[i+R/2]*s
		out[i+R/2] = h[i+R/2]*c + h[i]*s
	}
	return out
}

func (a *attnRef) step(q, k, v []float32, T, pos int) []float64 {
	p := a.p
	nH, nKV, D := p.Heads, p.KVHeads, p.HeadDim
	qCols := nH * D
	if p.Gated {
		qCols *= 2
	}
	out := make([]float64, T*nH*D)
	for t := 0; t < T; t++ {
		key := make([]float64, 0, nKV*D)
		for g := 0; g < nKV; g++ {
			key = append(key, a.normRope(k[t*nKV*D+g*D:], a.kn, pos+t, p.Eps)...)
		}
		val := make([]float64, nKV*D)
		for i := range val {
			val[i] = float64(v[t*nKV*D+i])
		}
		a.keys = append(a.keys, key)
		a.vals = append(a.vals, val)
		for h := 0; h < nH; h++ {
			src := q[t*qCols:]
			off := h * D
			if p.Gated {
				off = 2 * h * D
			}
			qh := a.normRope(src[off:], a.qn, pos+t, p.Eps)
			g := h / (nH / nKV)
			n := pos + t + 1
			sc := make([]float64, n)
			mx := math.Inf(-1)
			for s := 0; s < n; s++ {
				var dot float64
				for i := 0; i < D; i++ {
					dot += qh[i] * a.keys[s][g*D+i]
				}
				sc[s] = dot / math.Sqrt(float64(D))
				mx = max(mx, sc[s])
			}
			var sum float64
			for s := range sc {
				sc[s] = math.Exp(sc[s] - mx)
				sum += sc[s]
			}
			for i := 0; i < D; i++ {
				var o float64
				for s := 0; s < n; s++ {
					o += sc[s] / sum * a.vals[s][g*D+i]
				}
				if p.Gated {
					o /= 1 + math.Exp(-float64(src[off+D+i]))
				}
				out[t*nH*D+h*D+i] = o
			}
		}
	}
	return out
}

func TestAttention(t *testing.T) {
	d := openGPU(t)
	r := rand.New(rand.NewPCG(9, 10))
	for _, c := range []struct {
		nH, nKV, D, R int
		gated         bool
	}{{4, 2, 64, 16, true}, {6, 1, 128, 128, false}, {8, 4, 32, 32, true}} {
		qn, kn := randVec(r, c.D, 1), randVec(r, c.D, 1)
		p := &backend.AttentionParams{Heads: c.nH, KVHeads: c.nKV, HeadDim: c.D, RotaryDim: c.R, RopeTheta: 1e6,
			Gated: c.gated, QNorm: upload(t, d, 1, c.D, qn), KNorm: upload(t, d, 1, c.D, kn), Eps: 1e-6}
		ref := &attnRef{p: p}
		for _, v := range qn {
			ref.qn = append(ref.qn, float64(v))
		}
		for _, v := range kn {
			ref.kn = append(ref.kn, float64(v))
		}
		st, err := d.NewState([]backend.LayerSpec{{}, {Attention: p}})
		if err != nil {
			t.Fatal(err)
		}
		qCols := c.nH * c.D
		if c.gated {
			qCols *= 2
		}
		pos := 0
		for _, T := range []int{5, 1, 1, 300, 2} { // 300 grows the cache past 256
			qv, kv, vv := randVec(r, T*qCols, 1), randVec(r, T*c.nKV*c.D, 1), randVec(r, T*c.nKV*c.D, 1)
			want := ref.step(qv, kv, vv, T, pos)
			out, _ := d.NewTensor(T, c.nH*c.D)
			d.Attention(out, upload(t, d, T, qCols, qv), upload(t, d, T, c.nKV*c.D, kv), upload(t, d, T, c.nKV*c.D, vv), st, 1, pos, p)
			rel := compare(t, fmt.Sprintf("attention %+v T=%d pos=%d", c, T, pos), download(t, d, out), want, 1e-5)
			t.Logf("attention %+v T=%d at %d: relative error %.3g", c, T, pos, rel)
			pos += T
		}
		// A clone continues like the original; a reset state starts over.
		cl, err := st.Clone()
		if err != nil {
			t.Fatal(err)
		}
		qv, kv, vv := randVec(r, qCols, 1), randVec(r, c.nKV*c.D, 1), randVec(r, c.nKV*c.D, 1)
		want := ref.step(qv, kv, vv, 1, pos)
		for _, s := range []backend.State{st, cl} {
			out, _ := d.NewTensor(1, c.nH*c.D)
			d.Attention(out, upload(t, d, 1, qCols, qv), upload(t, d, 1, c.nKV*c.D, kv), upload(t, d, 1, c.nKV*c.D, vv), s, 1, pos, p)
			compare(t, "attention after clone", download(t, d, out), want, 1e-5)
		}
		st.Reset()
		fresh := &attnRef{p: p, qn: ref.qn, kn: ref.kn}
		want = fresh.step(qv, kv, vv, 1, 0)
		out, _ := d.NewTensor(1, c.nH*c.D)
		d.Attention(out, upload(t, d, 1, qCols, qv), upload(t, d, 1, c.nKV*c.D, kv), upload(t, d, 1, c.nKV*c.D, vv), st, 1, 0, p)
		compare(t, "attention after reset", download(t, d, out), want, 1e-5)
		st.Release()
		cl.Release()
	}
}

// deltaRef is the contract's DeltaNet in float64.
type deltaRef struct {
	p                        *backend.DeltaNetParams
	conv, negA, dtBias, norm []float64
	convState                [][]float64 // K−1 rows of C
	S                        [][]float64 // per value head [dk·dv]
}

func f64s(v []float32) []float64 {
	o := make([]float64, len(v))
	for i, x := range v {
		o[i] = float64(x)
	}
	return o
}

func (r *deltaRef) step(qkv, z, b, a []float32, T int) []float64 {
	p := r.p
	C, K := p.Channels(), p.ConvKernel
	nk, nv, dk, dv := p.KeyHeads, p.ValueHeads, p.KeyDim, p.ValueDim
	out := make([]float64, T*nv*dv)
	for t := 0; t < T; t++ {
		u := make([]float64, C)
		for c := 0; c < C; c++ {
			var s float64
			for j := 0; j < K-1; j++ {
				s += r.conv[c*K+j] * r.convState[j][c]
			}
			s += r.conv[c*K+K-1] * float64(qkv[t*C+c])
			u[c] = silu(s)
		}
		if K > 1 {
			r.convState = append(r.convState[1:], f64s(qkv[t*C:(t+1)*C]))
		}
		l2 := func(x []float64, scale float64) {
			var ss float64
			for _, v := range x {
				ss += v * v
			}
			inv := 1 / math.Sqrt(ss+1e-6) * scale
			for i := range x {
				x[i] *= inv
			}
		}
		for i := 0; i < nk; i++ {
			l2(u[i*dk:(i+1)*dk], 1/math.Sqrt(float64(dk)))
			l2(u[nk*dk+i*dk:nk*dk+(i+1)*dk], 1)
		}
		vd := nv * dv
		for j := 0; j < nv; j++ {
			r.rule(j, u, z[t*vd:(t+1)*vd], b[t*nv:(t+1)*nv], a[t*nv:(t+1)*nv], out[t*vd:(t+1)*vd])
		}
	}
	return out
}

// rule runs value head j's delta rule and gated RMSNorm for one token: u is
// the normalized conv output row (q̂, k̂, v), z, b, a and out the token's rows.
func (r *deltaRef) rule(j int, u []float64, z, b, a []float32, out []float64) {
	p := r.p
	nk, nv, dk, dv := p.KeyHeads, p.ValueHeads, p.KeyDim, p.ValueDim
	i := j / (nv / nk)
	q, k, v := u[i*dk:(i+1)*dk], u[nk*dk+i*dk:nk*dk+(i+1)*dk], u[2*nk*dk+j*dv:2*nk*dk+(j+1)*dv]
	beta := 1 / (1 + math.Exp(-float64(b[j])))
	x := float64(a[j]) + r.dtBias[j]
	sp := x
	if x <= 20 {
		sp = math.Log1p(math.Exp(x))
	}
	alpha := math.Exp(r.negA[j] * sp)
	S := r.S[j]
	o := make([]float64, dv)
	for c := 0; c < dv; c++ {
		var m float64
		for rr := 0; rr < dk; rr++ {
			S[rr*dv+c] *= alpha
			m += S[rr*dv+c] * k[rr]
		}
		delta := beta * (v[c] - m)
		for rr := 0; rr < dk; rr++ {
			S[rr*dv+c] += k[rr] * delta
			o[c] += S[rr*dv+c] * q[rr]
		}
	}
	var ss float64
	for _, x := range o {
		ss += x * x
	}
	inv := 1 / math.Sqrt(ss/float64(dv)+p.Eps)
	for c := range o {
		out[j*dv+c] = o[c] * inv * r.norm[c] * silu(float64(z[j*dv+c]))
	}
}

func TestDeltaNet(t *testing.T) {
	d := openGPU(t)
	rng := rand.New(rand.NewPCG(11, 12))
	for _, c := range []struct{ nk, nv, dk, dv, K int }{{2, 4, 32, 48, 4}, {1, 2, 128, 128, 4}, {2, 2, 160, 64, 3}} {
		p := &backend.DeltaNetParams{KeyHeads: c.nk, ValueHeads: c.nv, KeyDim: c.dk, ValueDim: c.dv, ConvKernel: c.K, Eps: 1e-6}
		C := p.Channels()
		conv, negA, dt, norm := randVec(rng, C*c.K, 0.5), randVec(rng, c.nv, 1), randVec(rng, c.nv, 1), randVec(rng, c.dv, 1)
		for i := range negA {
			negA[i] = -float32(math.Exp(float64(negA[i])))
		}
		p.Conv, p.NegA, p.DtBias, p.Norm = upload(t, d, C, c.K, conv), upload(t, d, 1, c.nv, negA), upload(t, d, 1, c.nv, dt), upload(t, d, 1, c.dv, norm)
		ref := &deltaRef{p: p, conv: f64s(conv), negA: f64s(negA), dtBias: f64s(dt), norm: f64s(norm)}
		for j := 0; j < c.K-1; j++ {
			ref.convState = append(ref.convState, make([]float64, C))
		}
		for j := 0; j < c.nv; j++ {
			ref.S = append(ref.S, make([]float64, c.dk*c.dv))
		}
		st, err := d.NewState([]backend.LayerSpec{{DeltaNet: p}})
		if err != nil {
			t.Fatal(err)
		}
		vd := c.nv * c.dv
		for _, T := range []int{7, 1, 1, 70, 2} {
			qkv, z, b, a := randVec(rng, T*C, 1), randVec(rng, T*vd, 1), randVec(rng, T*c.nv, 2), randVec(rng, T*c.nv, 2)
			want := ref.step(qkv, z, b, a, T)
			out, _ := d.NewTensor(T, vd)
			d.DeltaNet(out, upload(t, d, T, C, qkv), upload(t, d, T, vd, z), upload(t, d, T, c.nv, b), upload(t, d, T, c.nv, a), st, 0, p)
			rel := compare(t, fmt.Sprintf("deltanet %+v T=%d", c, T), download(t, d, out), want, 1e-4)
			t.Logf("deltanet %+v T=%d: relative error %.3g", c, T, rel)
		}
		st.Release()
	}
}

// TestExpertCache checks residency, LRU eviction within the budget, that a
// slot in use is never reused while held, and that results match the
// uncached binding; then that LFUDA keeps a frequently used expert where LRU
// keeps the recent one.
// cacheTestExperts returns n random 4-bit expert files of one small layout
// (scales and biases near 0.01, so products stay finite).
func cacheTestExperts(r *rand.Rand, H, I, n int) (*backend.ExpertLayout, [][]byte) {
	desc := backend.MatrixDesc{Format: backend.Affine, Bits: 4, GroupSize: 64, ScaleFormat: backend.BF16}
	gd, dd := desc, desc
	gd.Rows, gd.Cols, dd.Rows, dd.Cols = I, H, H, I
	l := alignedLayout(gd, gd, dd)
	files := make([][]byte, n)
	for i := range files {
		files[i] = make([]byte, l.FileSize)
		for j := range files[i] {
			files[i][j] = byte(r.IntN(256))
		}
		for _, m := range []*backend.ExpertMatrix{&l.Gate, &l.Up, &l.Down} {
			for _, p := range []backend.Part{m.Scales, m.Biases} {
				for j := p.Offset; j < p.Offset+p.Size; j += 2 {
					files[i][j+1] = 0x3c // bf16 scales and biases near 0.01
				}
			}
		}
	}
	return l, files
}

func TestExpertCache(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	const H, I, T = 128, 64, 2
	l, files := cacheTestExperts(r, H, I, 4)
	d, err := backend.Open("cuda", backend.Options{ExpertCacheBytes: int64(2 * l.FileSize), ExpertCachePolicy: "lru"})
	if err != nil {
		t.Skipf("no CUDA device: %v", err)
	}
	defer d.Close()
	g := d.(*gpu)
	xv := randVec(r, T*H, 1)
	x := upload(t, d, T, H, xv)
	run := func(e backend.Expert) []float32 {
		out, _ := d.NewTensor(T, H)
		d.ExpertFFN(out, x, e, []int{0, 1}, []float32{1, 0.5})
		return download(t, d, out)
	}
	want := make([][]float32, len(files))
	for i, f := range files {
		e, err := d.BindExpert(l, f)
		if err != nil {
			t.Fatal(err)
		}
		want[i] = run(e)
		e.Release()
	}
	key := func(i int) backend.ExpertKey { return backend.ExpertKey{Owner: 7, Layer: 1, ID: i} }
	same := func(what string, got, w []float32) {
		t.Helper()
		for j := range got {
			if got[j] != w[j] {
				t.Fatalf("%s: element %d = %v, uncached %v", what, j, got[j], w[j])
			}
		}
	}
	for i := 0; i < 2; i++ {
		e, err := g.BindExpertCached(key(i), l, files[i])
		if err != nil {
			t.Fatal(err)
		}
		same(fmt.Sprintf("bind %d", i), run(e), want[i])
		e.Release()
	}
	// Expert 0 is held while 2 and 3 are bound: 1 is evicted for 2; for 3
	// LRU pushes out 0, but 0's slot stays 0's while it is held (and 2's
	// too), so 3 runs uncached.
	e0, ok := g.CachedExpert(key(0))
	if !ok {
		t.Fatal("expert 0 not resident")
	}
	e2, err := g.BindExpertCached(key(2), l, files[2])
	if err != nil {
		t.Fatal(err)
	}
	e3, err := g.BindExpertCached(key(3), l, files[3])
	if err != nil {
		t.Fatal(err)
	}
	same("expert 0 held", run(e0), want[0])
	same("expert 2", run(e2), want[2])
	same("expert 3 (uncached: every slot held)", run(e3), want[3])
	e0.Release()
	e2.Release()
	e3.Release()
	if _, ok := g.CachedExpert(key(1)); ok {
		t.Error("expert 1 still resident after its slot was taken")
	}
	st := g.CacheStats()
	t.Log(st)
	if st.Slots != 2 || st.Evictions != 2 {
		t.Errorf("want 2 slots and 2 evictions, got %+v", st)
	}

	// Frequency: expert 0 used three times, 1 once, then 2 arrives. LRU
	// evicts 0 (least recent), LFUDA evicts 1 (least used).
	for _, tc := range []struct{ policy, keeps, drops string }{{"lru", "1", "0"}, {"lfuda", "0", "1"}} {
		d, err := backend.Open("cuda", backend.Options{ExpertCacheBytes: int64(2 * l.FileSize), ExpertCachePolicy: tc.policy})
		if err != nil {
			t.Fatal(err)
		}
		g := d.(*gpu)
		use := func(i int) {
			t.Helper()
			e, ok := g.CachedExpert(key(i))
			if !ok {
				if e, err = g.BindExpertCached(key(i), l, files[i]); err != nil {
					t.Fatal(err)
				}
			}
			e.Release()
		}
		for _, i := range []int{0, 0, 0, 1, 2} {
			use(i)
		}
		resident := ""
		for i := 0; i < 3; i++ {
			if e, ok := g.CachedExpert(key(i)); ok {
				resident += fmt.Sprint(i)
				e.Release()
			}
		}
		if !strings.Contains(resident, tc.keeps) || strings.Contains(resident, tc.drops) {
			t.Errorf("%s: resident %q, want %s kept and %s evicted", tc.policy, resident, tc.keeps, tc.drops)
		}
		d.Close()
	}
	if _, err := backend.Open("cuda", backend.Options{ExpertCachePolicy: "fifo"}); err == nil || !strings.Contains(err.Error(), "fifo") {
		t.Errorf("unknown policy: error %v", err)
	}
}

// alignedLayout is an expert file of three affine matrices whose parts start
// at 4096-byte offsets, as fm writes them.
func alignedLayout(gate, up, down backend.MatrixDesc) *backend.ExpertLayout {
	l := &backend.ExpertLayout{}
	off := 0
	place := func(n int) backend.Part {
		p := backend.Part{Offset: off, Size: n}
		off += (n + 4095) &^ 4095
		return p
	}
	for _, m := range []struct {
		m    *backend.ExpertMatrix
		desc backend.MatrixDesc
	}{{&l.Gate, gate}, {&l.Up, up}, {&l.Down, down}} {
		m.m.Desc = m.desc
		m.m.Data, m.m.Scales, m.m.Biases = place(m.desc.DataBytes()), place(m.desc.ScaleBytes()), place(m.desc.ScaleBytes())
	}
	l.FileSize = off
	return l
}

// TestExpertCacheCopyStream cycles five experts through two cache slots, so
// every bind reuses a slot that a product queued just before may still read:
// the upload on the copy stream must wait for it when the slot's last use is
// recent (no synchronization since), and may start at once after two. Each
// product must equal the uncached one bit for bit; a large product queued
// before each bind keeps the compute stream busy, so a copy that does not
// wait overwrites the slot under the expert's own product.
func TestExpertCacheCopyStream(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	const H, I, T, N = 256, 128, 2, 5
	l, files := cacheTestExperts(r, H, I, N)
	d, err := backend.Open("cuda", backend.Options{ExpertCacheBytes: int64(2 * l.FileSize), ExpertCachePolicy: "lru"})
	if err != nil {
		t.Skipf("no CUDA device: %v", err)
	}
	defer d.Close()
	g := d.(*gpu)
	x := upload(t, d, T, H, randVec(r, T*H, 1))
	rows, wts := []int{0, 1}, []float32{1, 0.5}
	want := make([][]float32, N)
	for i, f := range files {
		e, err := d.BindExpert(l, f)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := d.NewTensor(T, H)
		d.ExpertFFN(out, x, e, rows, wts)
		want[i] = download(t, d, out)
		e.Release()
	}
	// The busy-work: a 4-bit product of 64 MiB of weights, ~0.1 ms.
	bd := backend.MatrixDesc{Format: backend.Affine, Bits: 4, GroupSize: 64, ScaleFormat: backend.BF16, Rows: 1 << 16, Cols: 2048}
	data, sc, bi := measureBytes(r, bd)
	busy, err := d.BindDense(bd, data, sc, bi)
	if err != nil {
		t.Fatal(err)
	}
	bx := upload(t, d, 1, 2048, randVec(r, 2048, 1))
	by, _ := d.NewTensor(1, 1<<16)
	key := func(i int) backend.ExpertKey { return backend.ExpertKey{Owner: 9, Layer: 0, ID: i} }
	type result struct {
		out backend.Tensor
		i   int
	}
	var pending []result
	check := func() {
		t.Helper()
		for _, p := range pending {
			got := download(t, d, p.out)
			for j := range got {
				if got[j] != want[p.i][j] {
					t.Fatalf("expert %d through the cache: element %d = %v, uncached %v", p.i, j, got[j], want[p.i][j])
				}
			}
		}
		pending = pending[:0]
	}
	for it := 0; it < 60; it++ {
		i := it % N
		d.MatMul(by, busy, bx)
		e, err := g.BindExpertCached(key(i), l, files[i])
		if err != nil {
			t.Fatal(err)
		}
		out, _ := d.NewTensor(T, H)
		d.ExpertFFN(out, x, e, rows, wts)
		e.Release()
		pending = append(pending, result{out, i})
		if it%4 == 3 {
			// Downloads end epochs: the next bind reuses a slot without
			// waiting, the three after it wait for the kernels.
			check()
		}
	}
	check()
	st := g.CacheStats()
	t.Log(st)
	if st.Evictions < 50 {
		t.Errorf("want an eviction at nearly every bind, got %+v", st)
	}
}
