//go:build cuda && linux

package cuda

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/fm-moe/fm/pkg/backend"
)

// TestGEMVWide covers the one-token GEMV beyond one tile of columns (2048 at
// 4 bits, 1024 at 8), rows of any width up to a staged input beyond the
// default 48 KiB of shared memory, and the SwiGLU pair kernel through MLP.
func TestGEMVWide(t *testing.T) {
	d := openGPU(t)
	r := rand.New(rand.NewPCG(21, 22))
	worst := 0.0
	for _, base := range []backend.MatrixDesc{
		{Format: backend.Affine, Bits: 4, GroupSize: 64, ScaleFormat: backend.BF16},
		{Format: backend.Affine, Bits: 4, GroupSize: 32, ScaleFormat: backend.F16},
		{Format: backend.Affine, Bits: 4, GroupSize: 128, ScaleFormat: backend.F32},
		{Format: backend.Affine, Bits: 8, GroupSize: 64, ScaleFormat: backend.BF16},
		{Format: backend.Affine, Bits: 8, GroupSize: 32, ScaleFormat: backend.F16},
	} {
		for _, sh := range []struct{ rows, cols int }{{3, 1056}, {9, 2080}, {130, 4096}, {17, 6144}, {5, 12288}, {2, 1088}} {
			desc := base
			desc.Rows, desc.Cols = sh.rows, sh.cols
			if desc.Cols%desc.GroupSize != 0 {
				continue
			}
			s := randStored(r, desc)
			m := s.bind(t, d)
			xv := randVec(r, sh.cols, 1)
			x := upload(t, d, 1, sh.cols, xv)
			y, _ := d.NewTensor(1, sh.rows)
			d.MatMul(y, m, x)
			worst = max(worst, compare(t, fmt.Sprintf("%v T=1", desc), download(t, d, y), matmulRef(s.w, sh.rows, sh.cols, xv, 1), 2e-5))
			x.Release()
			y.Release()
			m.Release()
		}
		// gate and up (mv2: SwiGLU pairs) 2080 wide, down 4160 wide.
		const H, I = 4160, 2080
		gd, dd := base, base
		gd.Rows, gd.Cols, dd.Rows, dd.Cols = I, H, H, I
		if H%gd.GroupSize != 0 || I%gd.GroupSize != 0 {
			continue
		}
		gate, up, down := randStored(r, gd), randStored(r, gd), randStored(r, dd)
		mg, mu, md := gate.bind(t, d), up.bind(t, d), down.bind(t, d)
		xv := randVec(r, H, 1)
		x := upload(t, d, 1, H, xv)
		y, _ := d.NewTensor(1, H)
		d.MLP(y, x, mg, mu, md)
		worst = max(worst, compare(t, fmt.Sprintf("MLP %v T=1", base), download(t, d, y), ffnRef(gate, up, down, xv), 3e-5))
		mg.Release()
		mu.Release()
		md.Release()
	}
	t.Logf("worst relative error: %.3g", worst)
}

// TestExpertBatchDecode runs decode-shaped expert batches (one row each)
// through the batched kernels: jobs by value, the combine fused into the
// down projection. Job rows repeat, also not adjacently (the fused combine
// writes a row back when the next job's row differs); 10 jobs take two
// groups of 8, 16 is the by-value limit, 20 take the staged kernels.
func TestExpertBatchDecode(t *testing.T) {
	d := openGPU(t)
	r := rand.New(rand.NewPCG(23, 24))
	const H, I, T = 2080, 1088, 3
	for _, base := range []backend.MatrixDesc{
		{Format: backend.Affine, Bits: 4, GroupSize: 64, ScaleFormat: backend.BF16},
		{Format: backend.Affine, Bits: 8, GroupSize: 32, ScaleFormat: backend.F16},
	} {
		gd, dd := base, base
		gd.Rows, gd.Cols, dd.Rows, dd.Cols = I, H, H, I
		l := alignedLayout(gd, gd, dd)
		type ex struct {
			gate, up, down *stored
			e              backend.Expert
			buf            []byte
		}
		var exps []ex
		for i := 0; i < 20; i++ {
			e := ex{gate: randStored(r, gd), up: randStored(r, gd), down: randStored(r, dd)}
			buf, err := d.ExpertBuffer(l.FileSize)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range []struct {
				m *backend.ExpertMatrix
				s *stored
			}{{&l.Gate, e.gate}, {&l.Up, e.up}, {&l.Down, e.down}} {
				copy(buf[p.m.Data.Offset:], p.s.data)
				copy(buf[p.m.Scales.Offset:], p.s.scales)
				copy(buf[p.m.Biases.Offset:], p.s.biases)
			}
			if e.e, err = d.BindExpert(l, buf); err != nil {
				t.Fatal(err)
			}
			e.buf = buf
			exps = append(exps, e)
		}
		xv := randVec(r, T*H, 1)
		x := upload(t, d, T, H, xv)
		for _, rows := range [][]int{
			{0, 0, 1, 0, 2, 2, 1, 0, 0, 2},
			{0, 0, 0, 0, 0, 0, 0, 0},
			{2, 1, 0, 1, 2, 0, 0, 1, 2, 2, 1, 0, 0, 1, 2, 0},
			{1, 0, 2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 0, 1, 2, 0, 1, 1, 2, 0},
		} {
			ov := randVec(r, T*H, 1)
			out := upload(t, d, T, H, ov)
			ref := make([]float64, T*H)
			for i, v := range ov {
				ref[i] = float64(v)
			}
			wts := randVec(r, len(rows), 1)
			for j, row := range rows {
				d.ExpertFFN(out, x, exps[j].e, []int{row}, wts[j:j+1])
				y := ffnRef(exps[j].gate, exps[j].up, exps[j].down, xv[row*H:(row+1)*H])
				for c := range y {
					ref[row*H+c] += float64(wts[j]) * y[c]
				}
			}
			rel := compare(t, fmt.Sprintf("%v %d jobs", base, len(rows)), download(t, d, out), ref, 3e-5)
			t.Logf("%v, %d one-row jobs: relative error %.3g", base, len(rows), rel)
			out.Release()
		}
		for _, e := range exps {
			e.e.Release()
			d.FreeExpertBuffer(e.buf)
		}
		x.Release()
	}
}

// TestAttentionDecodeSplit runs attention at decode positions far enough for
// many splits (the positions divided across blocks, then combined by the
// last block of each head and token), with head dims 128 and 256, gated and
// not, a few query rows at once (each row its own length), and a prefill
// chunk (the one-block-a-head kernel) before.
func TestAttentionDecodeSplit(t *testing.T) {
	d := openGPU(t)
	r := rand.New(rand.NewPCG(25, 26))
	for _, c := range []struct {
		nH, nKV, D, R int
		gated         bool
	}{{16, 2, 256, 64, true}, {32, 4, 128, 128, false}, {6, 3, 96, 32, false}} {
		qn, kn := randVec(r, c.D, 1), randVec(r, c.D, 1)
		p := &backend.AttentionParams{Heads: c.nH, KVHeads: c.nKV, HeadDim: c.D, RotaryDim: c.R, RopeTheta: 1e6,
			Gated: c.gated, QNorm: upload(t, d, 1, c.D, qn), KNorm: upload(t, d, 1, c.D, kn), Eps: 1e-6}
		ref := &attnRef{p: p, qn: f64s(qn), kn: f64s(kn)}
		st, err := d.NewState([]backend.LayerSpec{{Attention: p}})
		if err != nil {
			t.Fatal(err)
		}
		qCols := c.nH * c.D
		if c.gated {
			qCols *= 2
		}
		pos := 0
		for _, T := range []int{520, 1, 16, 1, 3, 300, 1, 2, 1} {
			qv, kv, vv := randVec(r, T*qCols, 1), randVec(r, T*c.nKV*c.D, 1), randVec(r, T*c.nKV*c.D, 1)
			want := ref.step(qv, kv, vv, T, pos)
			out, _ := d.NewTensor(T, c.nH*c.D)
			d.Attention(out, upload(t, d, T, qCols, qv), upload(t, d, T, c.nKV*c.D, kv), upload(t, d, T, c.nKV*c.D, vv), st, 0, pos, p)
			rel := compare(t, fmt.Sprintf("attention %+v T=%d pos=%d", c, T, pos), download(t, d, out), want, 1e-5)
			if T <= attendSplitMaxT {
				t.Logf("attention %+v T=%d at %d (%d splits): relative error %.3g", c, T, pos, splitCount(pos+T, c.nH*T, d.(*gpu).d.Info.SMs), rel)
			}
			out.Release()
			pos += T
		}
		st.Release()
	}
}

// TestSplitCount pins the split policy: about 8 blocks a multiprocessor,
// splits of at least 32 positions, at most 8192.
func TestSplitCount(t *testing.T) {
	for _, c := range []struct{ n, rows, sms, want int }{
		{513, 32, 132, 17},    // 30B decode at 512: 17 splits of ≤ 32
		{1, 32, 132, 1},       // first token
		{100000, 32, 132, 33}, // long context: 8 blocks a multiprocessor
		{100000, 2000, 132, 13},
		{5000, 4096, 132, 1},
	} {
		if got := splitCount(c.n, c.rows, c.sms); got != c.want {
			t.Errorf("splitCount(%d, %d, %d) = %d, want %d", c.n, c.rows, c.sms, got, c.want)
		}
	}
}
