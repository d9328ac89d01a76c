//go:build cuda && linux

package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fm-moe/fm/pkg/backend"
)

// TestGEMVWide covers the one-token GEMV (4-bit, 8-bit, bf16) beyond one
// tile of columns (2048 at 4 bits, 1024 at 8 and bf16), rows of any width up
// to a staged input beyond the default 48 KiB of shared memory, and the
// SwiGLU pair kernel through MLP.
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
		{Format: backend.BF16},
	} {
		fits := func(cols int) bool { return base.Format != backend.Affine || cols%base.GroupSize == 0 }
		for _, sh := range []struct{ rows, cols int }{{3, 1056}, {9, 2080}, {130, 4096}, {17, 6144}, {5, 12288}, {2, 1088}, {128, 2048}, {4500, 1024}} {
			desc := base
			desc.Rows, desc.Cols = sh.rows, sh.cols
			if !fits(desc.Cols) {
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
		if !fits(H) || !fits(I) {
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
	const H, I, T = 2112, 1088, 3 // 2112 = 33·64: two tiles at 4 bits
	for _, base := range []backend.MatrixDesc{
		{Format: backend.Affine, Bits: 4, GroupSize: 64, ScaleFormat: backend.BF16},
		{Format: backend.Affine, Bits: 8, GroupSize: 32, ScaleFormat: backend.F16},
		{Format: backend.BF16},
	} {
		gd, dd := base, base
		gd.Rows, gd.Cols, dd.Rows, dd.Cols = I, H, H, I
		exps := bindRandomExperts(t, d, r, gd, dd, 20, true)
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
		releaseExperts(d, exps)
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

// TestDeferredFusions checks the operations the backend defers and fuses
// (expertBatch) against the same operations one by one: a residual Add with
// its non-finite Mark run inside the next RMSNorm (also in place, also for
// rows of 4096 and 5000; rows of 9000, beyond a row in registers, in two passes),
// or launched alone when something else comes next;
// a Clear joined to the next expert batch (overwritten where the output is
// one row, cleared first otherwise); one-token products of one input run as
// one grid (up to 4 a launch, a change of format or input starting another).
func TestDeferredFusions(t *testing.T) {
	d := openGPU(t)
	g := d.(*gpu)
	r := rand.New(rand.NewPCG(27, 28))
	mk, err := g.NewMarks(4)
	if err != nil {
		t.Fatal(err)
	}
	defer mk.Release()
	slots := make([]int, 4)
	for _, n := range []int{2048, 320, 4096, 5000, 9000} {
		const T = 3
		hv, av, wv := randVec(r, T*n, 1), randVec(r, T*n, 1), randVec(r, n, 1)
		bad := T == 3 && n == 320
		if bad {
			av[2*n+5] = float32(math.Inf(1))
		}
		sum := make([]float64, T*n)
		for i := range sum {
			sum[i] = float64(hv[i] + av[i])
		}
		h, a, w := upload(t, d, T, n, hv), upload(t, d, T, n, av), upload(t, d, 1, n, wv)
		xn, _ := d.NewTensor(T, n)
		for _, inPlace := range []bool{false, true} {
			d.Upload(h, hv)
			d.Add(h, a)
			mk.Mark(1, h)
			dst := xn
			if inPlace {
				dst = h
			}
			d.RMSNorm(dst, h, w, 1e-6)
			if !inPlace {
				if bad {
					got := download(t, d, h)
					if !math.IsInf(float64(got[2*n+5]), 1) {
						t.Fatalf("n=%d: h after the fused add holds %v, want +Inf", n, got[2*n+5])
					}
				} else {
					compare(t, fmt.Sprintf("add n=%d", n), download(t, d, h), sum, 1e-7)
				}
			}
			if err := mk.Read(slots); err != nil {
				t.Fatal(err)
			}
			want := -1
			if bad {
				want = 2
			}
			if slots[1] != want || slots[0] != -1 {
				t.Errorf("n=%d in place %v: marks %v, want slot 1 = %d", n, inPlace, slots, want)
			}
			if bad {
				continue
			}
			sumF := make([]float32, len(sum))
			for i := range sum {
				sumF[i] = float32(sum[i])
			}
			ref := make([]float64, T*n)
			for tt := 0; tt < T; tt++ {
				var ss float64
				for c := 0; c < n; c++ {
					ss += sum[tt*n+c] * sum[tt*n+c]
				}
				inv := 1 / math.Sqrt(ss/float64(n)+1e-6)
				for c := 0; c < n; c++ {
					ref[tt*n+c] = sum[tt*n+c] * inv * float64(wv[c])
				}
			}
			compare(t, fmt.Sprintf("add+rmsnorm n=%d in place %v", n, inPlace), download(t, d, dst), ref, 1e-6)
		}
		// Add and Mark followed by something else: launched alone.
		d.Upload(h, hv)
		d.Add(h, a)
		mk.Mark(3, h)
		d.Clear(xn)
		if !bad {
			compare(t, fmt.Sprintf("add then clear n=%d", n), download(t, d, h), sum, 1e-7)
		}
		if err := mk.Read(slots); err != nil {
			t.Fatal(err)
		}
		if want := map[bool]int{true: 2, false: -1}[bad]; slots[3] != want {
			t.Errorf("n=%d: mark of an add flushed alone = %v, want slot 3 = %d", n, slots, want)
		}
		for i, v := range download(t, d, xn) {
			if v != 0 {
				t.Fatalf("n=%d: Clear left element %d = %v", n, i, v)
			}
		}
	}

	// Clear, then an expert batch into the cleared tensor (one row and three).
	const H, I = 512, 256
	desc := backend.MatrixDesc{Format: backend.Affine, Bits: 4, GroupSize: 64, ScaleFormat: backend.BF16}
	gd, dd := desc, desc
	gd.Rows, gd.Cols, dd.Rows, dd.Cols = I, H, H, I
	exps := bindRandomExperts(t, d, r, gd, dd, 3, false)
	for _, T := range []int{1, 3} {
		xv := randVec(r, T*H, 1)
		x := upload(t, d, T, H, xv)
		out := upload(t, d, T, H, randVec(r, T*H, 100)) // garbage the Clear must remove
		d.Clear(out)
		ref := make([]float64, T*H)
		wts := randVec(r, len(exps), 1)
		for j, e := range exps {
			row := j % T
			d.ExpertFFN(out, x, e.e, []int{row}, wts[j:j+1])
			y := ffnRef(e.gate, e.up, e.down, xv[row*H:(row+1)*H])
			for c := range y {
				ref[row*H+c] += float64(wts[j]) * y[c]
			}
		}
		compare(t, fmt.Sprintf("clear + experts T=%d", T), download(t, d, out), ref, 3e-5)
	}
	releaseExperts(d, exps)

	// One-token products of one input: q/k/v-like 4-bit rows, a fifth that
	// starts a second launch, an 8-bit one, then another input.
	const C = 1024
	xv := randVec(r, C, 1)
	x := upload(t, d, 1, C, xv)
	x2v := randVec(r, C, 1)
	x2 := upload(t, d, 1, C, x2v)
	type prod struct {
		s   *stored
		m   backend.Matrix
		y   backend.Tensor
		x   []float32
		in  backend.Tensor
		lbl string
	}
	var ps []prod
	for i, sh := range []struct{ rows, bits int }{{512, 4}, {64, 4}, {64, 4}, {33, 4}, {100, 4}, {70, 8}, {16, 8}, {48, 4}} {
		dsc := backend.MatrixDesc{Rows: sh.rows, Cols: C, Format: backend.Affine, Bits: sh.bits, GroupSize: 64, ScaleFormat: backend.BF16}
		s := randStored(r, dsc)
		y, _ := d.NewTensor(1, sh.rows)
		in, inv := x, xv
		if i == 7 {
			in, inv = x2, x2v
		}
		ps = append(ps, prod{s: s, m: s.bind(t, d), y: y, x: inv, in: in, lbl: fmt.Sprintf("product %d (%d×%d, %d-bit)", i, sh.rows, C, sh.bits)})
	}
	for _, p := range ps {
		d.MatMul(p.y, p.m, p.in)
	}
	for _, p := range ps {
		compare(t, p.lbl, download(t, d, p.y), matmulRef(p.s.w, p.s.desc.Rows, C, p.x, 1), 2e-5)
		p.m.Release()
	}
}

// TestMarkGenerations reads marks over more than one wrap of the mark
// generations (the slots are never reset between reads, only every 126):
// each read sees exactly the marks made since the one before.
func TestMarkGenerations(t *testing.T) {
	d := openGPU(t)
	mk, err := d.(*gpu).NewMarks(3)
	if err != nil {
		t.Fatal(err)
	}
	defer mk.Release()
	const rows, cols = 5, 8
	x, _ := d.NewTensor(rows, cols)
	got := make([]int, 3)
	for i := 0; i < 300; i++ {
		v := make([]float32, rows*cols)
		want := -1
		if i%3 != 0 {
			want = i % rows
			v[want*cols+i%cols] = float32(math.NaN())
			if want+1 < rows {
				v[(want+1)*cols] = float32(math.Inf(-1)) // a later row too: the smallest stays
			}
		}
		d.Upload(x, v)
		if i%2 == 0 {
			mk.Mark(0, x)
		}
		mk.Mark(1, x)
		if err := mk.Read(got); err != nil {
			t.Fatal(err)
		}
		w0 := want
		if i%2 != 0 {
			w0 = -1
		}
		if got[0] != w0 || got[1] != want || got[2] != -1 {
			t.Fatalf("read %d: marks %v, want [%d %d -1]", i, got, w0, want)
		}
	}
}

// TestRowEpilogue checks the residual add (with its Mark and the next
// RMSNorm) deferred into the last block of the one-token product whose output
// it adds — a lone product (o_proj) and a batch of experts — against the
// float64 reference: with and without the RMSNorm following, with a
// non-finite product, and for a row wider than the epilogue's registers
// (4096 after a product of 2-warp blocks: two passes).
func TestRowEpilogue(t *testing.T) {
	d := openGPU(t)
	g := d.(*gpu)
	r := rand.New(rand.NewPCG(29, 30))
	mk, err := g.NewMarks(2)
	if err != nil {
		t.Fatal(err)
	}
	defer mk.Release()
	slots := make([]int, 2)
	norm := func(h []float64, w []float32) []float64 {
		var ss float64
		for _, v := range h {
			ss += v * v
		}
		inv := 1 / math.Sqrt(ss/float64(len(h))+1e-6)
		out := make([]float64, len(h))
		for i, v := range h {
			out[i] = v * inv * float64(w[i])
		}
		return out
	}
	desc := backend.MatrixDesc{Format: backend.Affine, Bits: 4, GroupSize: 64, ScaleFormat: backend.BF16}
	for _, c := range []struct {
		name      string
		n, cols   int
		withNorm  bool
		nonFinite bool
	}{
		{"o_proj 2048", 2048, 4096, true, false},
		{"o_proj 2048, add only", 2048, 4096, false, false},
		{"o_proj 2048, non-finite", 2048, 4096, true, true},
		{"o_proj 320", 320, 1024, true, false},
		{"o_proj 4096 (two passes)", 4096, 2048, true, false},
	} {
		dd := desc
		dd.Rows, dd.Cols = c.n, c.cols
		s := randStored(r, dd)
		m := s.bind(t, d)
		xv := randVec(r, c.cols, 1)
		if c.nonFinite {
			xv[7] = float32(math.Inf(1))
		}
		hv, wv := randVec(r, c.n, 1), randVec(r, c.n, 1)
		x, h, w := upload(t, d, 1, c.cols, xv), upload(t, d, 1, c.n, hv), upload(t, d, 1, c.n, wv)
		y, _ := d.NewTensor(1, c.n)
		xn, _ := d.NewTensor(1, c.n)
		d.MatMul(y, m, x)
		d.Add(h, y)
		mk.Mark(1, h)
		if c.withNorm {
			d.RMSNorm(xn, h, w, 1e-6)
		}
		gotH := download(t, d, h)
		if err := mk.Read(slots); err != nil {
			t.Fatal(err)
		}
		want := map[bool]int{true: 0, false: -1}[c.nonFinite]
		if slots[1] != want || slots[0] != -1 {
			t.Errorf("%s: marks %v, want [-1 %d]", c.name, slots, want)
		}
		m.Release()
		if c.nonFinite {
			continue
		}
		yRef := matmulRef(s.w, c.n, c.cols, xv, 1)
		sum := make([]float64, c.n)
		for i := range sum {
			sum[i] = float64(hv[i]) + float64(float32(yRef[i]))
		}
		compare(t, c.name+": h", gotH, sum, 2e-5)
		if c.withNorm {
			compare(t, c.name+": rmsnorm", download(t, d, xn), norm(sum, wv), 2e-5)
		}
	}

	// Experts: clear, three one-row experts, add, mark, RMSNorm.
	const H, I = 1024, 256
	gd, dd := desc, desc
	gd.Rows, gd.Cols, dd.Rows, dd.Cols = I, H, H, I
	exps := bindRandomExperts(t, d, r, gd, dd, 3, false)
	for _, withNorm := range []bool{true, false} {
		xv, hv, wv := randVec(r, H, 1), randVec(r, H, 1), randVec(r, H, 1)
		x, h, w := upload(t, d, 1, H, xv), upload(t, d, 1, H, hv), upload(t, d, 1, H, wv)
		out := upload(t, d, 1, H, randVec(r, H, 100))
		xn, _ := d.NewTensor(1, H)
		d.Clear(out)
		outRef := make([]float64, H)
		wts := randVec(r, len(exps), 1)
		for j, e := range exps {
			d.ExpertFFN(out, x, e.e, []int{0}, wts[j:j+1])
			y := ffnRef(e.gate, e.up, e.down, xv)
			for c := range y {
				outRef[c] += float64(wts[j]) * y[c]
			}
		}
		d.Add(h, out)
		mk.Mark(0, h)
		if withNorm {
			d.RMSNorm(xn, h, w, 1e-6)
		}
		sum := make([]float64, H)
		for i := range sum {
			sum[i] = float64(hv[i]) + outRef[i]
		}
		compare(t, fmt.Sprintf("experts + add (norm %v): h", withNorm), download(t, d, h), sum, 3e-5)
		if withNorm {
			compare(t, "experts + add + rmsnorm", download(t, d, xn), norm(sum, wv), 3e-5)
		}
		if err := mk.Read(slots); err != nil {
			t.Fatal(err)
		}
		if slots[0] != -1 || slots[1] != -1 {
			t.Errorf("experts + add: marks %v, want none", slots)
		}
	}
	releaseExperts(d, exps)
}

// TestDownloadProduct checks the download of a deferred one-token product
// (the router logits at decode): the kernel writes the output and the
// pending non-finite marks to mapped host memory, so the download is one
// synchronization. The values must equal a later plain download of the
// same tensor, and the marks those of the scans queued before; an output
// beyond the mapped buffer takes the plain path.
func TestDownloadProduct(t *testing.T) {
	d := openGPU(t)
	g := d.(*gpu)
	r := rand.New(rand.NewPCG(31, 32))
	mk, err := g.NewMarks(2)
	if err != nil {
		t.Fatal(err)
	}
	defer mk.Release()
	slots := make([]int, 2)
	const C = 2048
	for _, c := range []struct {
		rows   int
		desc   backend.MatrixDesc
		marked bool
	}{
		{128, backend.MatrixDesc{Format: backend.BF16}, true},
		{512, backend.MatrixDesc{Format: backend.Affine, Bits: 4, GroupSize: 64, ScaleFormat: backend.BF16}, false},
		{20000, backend.MatrixDesc{Format: backend.BF16}, true}, // 80 kB: beyond the mirror
	} {
		desc := c.desc
		desc.Rows, desc.Cols = c.rows, C
		s := randStored(r, desc)
		m := s.bind(t, d)
		xv := randVec(r, C, 1)
		x := upload(t, d, 1, C, xv)
		y, _ := d.NewTensor(1, c.rows)
		hv := make([]float32, 3*8)
		if c.marked {
			hv[2*8+1] = float32(math.NaN())
		}
		h := upload(t, d, 3, 8, hv)
		mk.Mark(1, h)
		d.MatMul(y, m, x)
		got := make([]float32, c.rows)
		if err := d.Download(got, y); err != nil {
			t.Fatal(err)
		}
		compare(t, fmt.Sprintf("%v product", desc), got, matmulRef(s.w, c.rows, C, xv, 1), 2e-5)
		again := download(t, d, y)
		for i := range got {
			if got[i] != again[i] {
				t.Fatalf("%v: element %d downloaded with the product %v, alone %v", desc, i, got[i], again[i])
			}
		}
		if err := mk.Read(slots); err != nil {
			t.Fatal(err)
		}
		want := map[bool]int{true: 2, false: -1}[c.marked]
		if slots[1] != want || slots[0] != -1 {
			t.Errorf("%v: marks %v, want [-1 %d]", desc, slots, want)
		}
		m.Release()
	}
}

// testExpert is an expert of random stored matrices, bound on the device.
type testExpert struct {
	gate, up, down *stored
	e              backend.Expert
	buf            []byte // its pinned file, nil when from Go memory
}

// bindRandomExperts binds n experts of random gate and up (gd) and down (dd)
// matrices, in fm's file layout, from pinned buffers when pinned.
func bindRandomExperts(t *testing.T, d backend.Device, r *rand.Rand, gd, dd backend.MatrixDesc, n int, pinned bool) []testExpert {
	t.Helper()
	l := alignedLayout(gd, gd, dd)
	var exps []testExpert
	for i := 0; i < n; i++ {
		e := testExpert{gate: randStored(r, gd), up: randStored(r, gd), down: randStored(r, dd)}
		buf := make([]byte, l.FileSize)
		if pinned {
			var err error
			if buf, err = d.ExpertBuffer(l.FileSize); err != nil {
				t.Fatal(err)
			}
			e.buf = buf
		}
		for _, p := range []struct {
			m *backend.ExpertMatrix
			s *stored
		}{{&l.Gate, e.gate}, {&l.Up, e.up}, {&l.Down, e.down}} {
			copy(buf[p.m.Data.Offset:], p.s.data)
			copy(buf[p.m.Scales.Offset:], p.s.scales)
			copy(buf[p.m.Biases.Offset:], p.s.biases)
		}
		var err error
		if e.e, err = d.BindExpert(l, buf); err != nil {
			t.Fatal(err)
		}
		exps = append(exps, e)
	}
	return exps
}

// releaseExperts releases bindRandomExperts' experts and their buffers.
func releaseExperts(d backend.Device, exps []testExpert) {
	for _, e := range exps {
		e.e.Release()
		if e.buf != nil {
			d.FreeExpertBuffer(e.buf)
		}
	}
}
