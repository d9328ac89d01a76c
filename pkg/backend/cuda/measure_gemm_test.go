//go:build cuda && linux

package cuda

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/fm-moe/fm/pkg/backend"
)

// measureBytes returns random codes for an affine matrix with bf16 scales
// and biases of ±~0.01, so that activations stay finite through a layer.
func measureBytes(r *rand.Rand, desc backend.MatrixDesc) (data, sc, bi []byte) {
	data = make([]byte, desc.DataBytes())
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	sc, bi = make([]byte, desc.ScaleBytes()), make([]byte, desc.ScaleBytes())
	for i := 0; i+1 < len(sc); i += 2 {
		sc[i+1], bi[i+1] = 0x3c, 0xbc
	}
	return
}

// medianDevice returns the median device time of n runs of f (CUDA events),
// after one warm-up run.
func medianDevice(t *testing.T, d *Device, n int, f func()) time.Duration {
	t.Helper()
	f()
	ts := make([]time.Duration, n)
	for i := range ts {
		tm, err := d.StartTimer()
		if err != nil {
			t.Fatal(err)
		}
		f()
		if ts[i], err = d.StopTimer(tm); err != nil {
			t.Fatal(err)
		}
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
	return ts[n/2]
}

// fmaPeak measures and logs the float32 FMA ceiling in TFLOPS: 16
// independent chains a thread, 8 blocks of 256 a multiprocessor.
func fmaPeak(t *testing.T, d *Device) float64 {
	t.Helper()
	blocks, steps := d.Info.SMs*8, 1<<14
	sink, err := d.Alloc(blocks * 256 * 4)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Free(sink)
	peakEl := medianDevice(t, d, 5, func() {
		d.enter()
		d.launch("gemm_fma_peak", [3]int{blocks, 1, 1}, 256, 0, uint64(sink.Ptr), argI(steps), argF(0.999), argF(1e-3))
		d.leave()
	})
	peak := float64(blocks*256*steps*16*2) / peakEl.Seconds() / 1e12
	t.Logf("CEILING float32 FMA: %.1f TFLOPS (%d blocks × 256 threads × %d × 16 FMAs in %v)", peak, blocks, steps, peakEl)
	return peak
}

// TestMeasureGemm prints (FM_CUDA_MEASURE=1) the float32 FMA ceiling, the
// tiled kernels against mm_fast at Qwen3-30B-A3B shapes (4-bit, groups of 64,
// bf16 scales) for T from 8 to 512, and the routed experts of one MoE layer
// at a prefill chunk (128 experts, K = 8), each as TFLOPS and as a ratio to
// the ceiling of the same run. Every product cycles over copies of its matrix
// (more bytes than the 50 MB L2), as a model's distinct layers would.
func TestMeasureGemm(t *testing.T) {
	bd, g, d := openMeasured(t)
	saved := [4]any{debugNoGemm, debugNoBatch, gemmMinT, debugNoTC}
	defer func() {
		debugNoGemm, debugNoBatch, gemmMinT, debugNoTC = saved[0].(bool), saved[1].(bool), saved[2].(int), saved[3].(bool)
	}()

	peak := fmaPeak(t, d)

	r := rand.New(rand.NewPCG(31, 32))
	desc := backend.MatrixDesc{Format: backend.Affine, Bits: 4, GroupSize: 64, ScaleFormat: backend.BF16}
	bindRandom := func(rows, cols int) *Matrix {
		dsc := desc
		dsc.Rows, dsc.Cols = rows, cols
		data := make([]byte, dsc.DataBytes())
		for i := range data {
			data[i] = byte(r.IntN(256))
		}
		sc := make([]byte, dsc.ScaleBytes())
		for i := 1; i < len(sc); i += 2 {
			sc[i] = 0x3c
		}
		m, err := bd.BindDense(dsc, data, sc, sc)
		if err != nil {
			t.Fatal(err)
		}
		return g.mat(m, "w")
	}
	const copies = 12
	for _, sh := range []struct {
		name       string
		rows, cols int
		pair       bool
	}{{"q_proj", 4096, 2048, false}, {"k_proj", 512, 2048, false}, {"o_proj", 2048, 4096, false},
		{"expert gate+up", 768, 2048, true}, {"expert down", 2048, 768, false}} {
		var ms, ms2 []*Matrix
		for i := 0; i < copies; i++ {
			ms = append(ms, bindRandom(sh.rows, sh.cols))
			if sh.pair {
				ms2 = append(ms2, bindRandom(sh.rows, sh.cols))
			}
		}
		for _, T := range []int{8, 12, 16, 24, 32, 64, 128, 512} {
			x, _ := bd.NewTensor(T, sh.cols)
			bd.Upload(x, randVec(r, T*sh.cols, 1))
			y, _ := bd.NewTensor(T, sh.rows)
			tx, ty := x.(*tensor), y.(*tensor)
			run := func() {
				for i := range ms {
					a := &MM{Y: ty.ptr, LdY: sh.rows, W: ms[i], X: tx.ptr, LdX: sh.cols, T: T, Mode: MMStore}
					if sh.pair {
						a.Mode, a.W2 = MMSwiGLU, ms2[i]
					}
					d.MatMul(a)
				}
			}
			mats := 1
			if sh.pair {
				mats = 2
			}
			flops := float64(2 * sh.rows * sh.cols * T * copies * mats)
			debugNoGemm = true
			mmEl := medianDevice(t, d, 5, run)
			debugNoGemm, gemmMinT, debugNoTC = false, 2, true
			gmEl := medianDevice(t, d, 5, run)
			debugNoTC = false
			tcEl := medianDevice(t, d, 5, run)
			debugWholeK = true
			nsEl := medianDevice(t, d, 5, run)
			debugWholeK = false
			gemmMinT, debugNoTC = saved[2].(int), saved[3].(bool)
			tf := func(el time.Duration) float64 { return flops / el.Seconds() / 1e12 }
			t.Logf("GEMM %s [%d×%d] T=%d: mm_fast %.1f µs (%.2f TFLOPS, %.3f of FMA); tiled SIMT %.1f µs (%.2f TFLOPS, %.3f of FMA, %.2f×); tiled tensor cores %.1f µs (%.2f TFLOPS, %.3f of FMA, %.2f×; %.1f µs without split-K)",
				sh.name, sh.rows, sh.cols, T, mmEl.Seconds()*1e6/copies, tf(mmEl), tf(mmEl)/peak,
				gmEl.Seconds()*1e6/copies, tf(gmEl), tf(gmEl)/peak, mmEl.Seconds()/gmEl.Seconds(),
				tcEl.Seconds()*1e6/copies, tf(tcEl), tf(tcEl)/peak, mmEl.Seconds()/tcEl.Seconds(), nsEl.Seconds()*1e6/copies)
			x.Release()
			y.Release()
		}
		if err := bd.Sync(); err != nil {
			t.Fatal(err)
		}
	}

	// The rest of a prefill layer at T = 512: attention from position 0
	// (QK-norm, RoPE, cache store, causal softmax; and the softmax kernel
	// alone), tiled (attend_tiled) and one block a row (attend, the
	// FM_CUDA_DEBUG=noattntile path), at 30B's shape (32 heads over 4 KV
	// heads of 128) and Qwen3.5's (32 over 2 of 256, gated); then RMSNorm and
	// add. The kernel's rate counts the causal q·k and p·v multiply-adds.
	{
		const T = 512
		savedTile := debugNoAttnTile
		for _, sh := range []struct {
			name       string
			nH, nKV, D int
			gated      bool
		}{{"30B", 32, 4, 128, false}, {"Qwen3.5", 32, 2, 256, true}} {
			nH, nKV, D := sh.nH, sh.nKV, sh.D
			qn, kn := upload(t, bd, 1, D, randVec(r, D, 1)), upload(t, bd, 1, D, randVec(r, D, 1))
			ap := &backend.AttentionParams{Heads: nH, KVHeads: nKV, HeadDim: D, RotaryDim: D, RopeTheta: 1e6, QNorm: qn, KNorm: kn,
				Eps: 1e-6, Gated: sh.gated}
			st, err := bd.NewState([]backend.LayerSpec{{Attention: ap}})
			if err != nil {
				t.Fatal(err)
			}
			qCols := nH * D
			if sh.gated {
				qCols *= 2
			}
			qp, kp, vp := upload(t, bd, T, qCols, randVec(r, T*qCols, 1)), upload(t, bd, T, nKV*D, randVec(r, T*nKV*D, 1)), upload(t, bd, T, nKV*D, randVec(r, T*nKV*D, 1))
			out, _ := bd.NewTensor(T, nH*D)
			// The kernel alone on the cache the layer call leaves.
			bd.Attention(out, qp, kp, vp, st, 0, 0, ap)
			qs, gs := upload(t, bd, T, nH*D, randVec(r, T*nH*D, 1)), upload(t, bd, T, nH*D, randVec(r, T*nH*D, 1))
			ls := &g.state(st).layers[0]
			args := &AttendArgs{O: g.tt(out, "out").ptr, Q: g.tt(qs, "q").ptr, Gate: g.tt(gs, "gate").ptr, KC: ls.k.Ptr, VC: ls.v.Ptr,
				NH: nH, NKV: nKV, D: D, Pos0: 0, T: T, LdQ: nH * D, LdKV: nKV * D, Scale: float32(1 / math.Sqrt(float64(D))), Gated: sh.gated}
			flops := 2 * 2 * float64(nH*D) * float64(T*(T+1)/2)
			var el [2][2]time.Duration // [tiled, attend][layer op, kernel]
			for i, off := range []bool{false, true} {
				debugNoAttnTile = off
				el[i][0] = medianDevice(t, d, 5, func() {
					st.Reset()
					bd.Attention(out, qp, kp, vp, st, 0, 0, ap)
				})
				el[i][1] = medianDevice(t, d, 5, func() { d.Attend(args) })
			}
			debugNoAttnTile = savedTile
			w, _, smem := attendTiledShape(args, d.maxDynamicShared(), 0)
			tf := func(e time.Duration) float64 { return flops / e.Seconds() / 1e12 }
			t.Logf("PREFILL T=%d attention %s (%d/%d heads of %d, gated %v), from position 0: attend_tiled (%d rows a block, %d B shared) %.1f µs (kernel %.1f µs, %.2f TFLOPS, %.3f of FMA); attend %.1f µs (kernel %.1f µs, %.2f TFLOPS, %.3f of FMA); kernel %.2f× faster (layer op incl. state reset, QK-norm, RoPE)",
				T, sh.name, nH, nKV, D, sh.gated, atRW*w, smem, el[0][0].Seconds()*1e6, el[0][1].Seconds()*1e6, tf(el[0][1]), tf(el[0][1])/peak,
				el[1][0].Seconds()*1e6, el[1][1].Seconds()*1e6, tf(el[1][1]), tf(el[1][1])/peak, el[1][1].Seconds()/el[0][1].Seconds())
			for _, x := range []backend.Tensor{qn, kn, qp, kp, vp, out, qs, gs} {
				x.Release()
			}
			st.Release()
		}
		const H = 2048
		h, xn := upload(t, bd, T, H, randVec(r, T*H, 1)), upload(t, bd, T, H, randVec(r, T*H, 1))
		w := upload(t, bd, 1, H, randVec(r, H, 1))
		normEl := medianDevice(t, d, 5, func() { bd.RMSNorm(xn, h, w, 1e-6) })
		addEl := medianDevice(t, d, 5, func() { bd.Add(h, xn) })
		t.Logf("PREFILL T=%d: rmsnorm %.1f µs, add %.1f µs", T, normEl.Seconds()*1e6, addEl.Seconds()*1e6)
	}

	// One MoE layer's routed experts at prefill: 128 experts of 768×2048,
	// K = 8 random distinct experts a token, all resident.
	const H, I, E, K = 2048, 768, 128, 8
	gd, dd := desc, desc
	gd.Rows, gd.Cols, dd.Rows, dd.Cols = I, H, H, I
	l := alignedLayout(gd, gd, dd)
	file := make([]byte, l.FileSize)
	for i := range file {
		file[i] = byte(r.IntN(256))
	}
	for _, m := range []*backend.ExpertMatrix{&l.Gate, &l.Up, &l.Down} {
		for _, p := range []backend.Part{m.Scales, m.Biases} {
			for j := p.Offset; j < p.Offset+p.Size; j += 2 {
				file[j+1] = 0x3c
			}
		}
	}
	es := make([]backend.Expert, E)
	for i := range es {
		var err error
		if es[i], err = bd.BindExpert(l, file); err != nil {
			t.Fatal(err)
		}
	}
	defer func() {
		for _, e := range es {
			e.Release()
		}
	}()
	for _, T := range []int{128, 512} {
		rows := make([][]int, E)
		wts := make([][]float32, E)
		for tok := 0; tok < T; tok++ {
			for _, e := range r.Perm(E)[:K] {
				rows[e] = append(rows[e], tok)
				wts[e] = append(wts[e], r.Float32())
			}
		}
		most := 0
		for _, rs := range rows {
			most = max(most, len(rs))
		}
		x, _ := bd.NewTensor(T, H)
		bd.Upload(x, randVec(r, T*H, 1))
		out, _ := bd.NewTensor(T, H)
		var wall time.Duration
		layer := func() {
			start := time.Now()
			for e := range es {
				if len(rows[e]) > 0 {
					bd.ExpertFFN(out, x, es[e], rows[e], wts[e])
				}
			}
			g.flushExperts()
			wall = time.Since(start)
		}
		flops := float64(T*K) * 3 * 2 * I * H
		for _, mode := range []struct {
			name                 string
			nobatch, nogem, notc bool
		}{{"before: per expert, mm_fast", true, true, false}, {"per expert, tiled SIMT", true, false, true},
			{"per expert, tiled tensor cores", true, false, false}, {"grouped tiled SIMT (3 launches)", false, false, true},
			{"grouped tiled tensor cores (3 launches)", false, false, false}} {
			debugNoBatch, debugNoGemm, debugNoTC = mode.nobatch, mode.nogem, mode.notc
			el := medianDevice(t, d, 5, layer)
			tf := flops / el.Seconds() / 1e12
			t.Logf("EXPERTS T=%d (%d experts, at most %d rows) %s: %.3f ms device, host issue %.3f ms, %.2f TFLOPS = %.3f of FMA",
				T, E, most, mode.name, el.Seconds()*1e3, wall.Seconds()*1e3, tf, tf/peak)
		}
		debugNoBatch, debugNoGemm, debugNoTC = saved[1].(bool), saved[0].(bool), saved[3].(bool)
		x.Release()
		out.Release()
	}
}

// TestMeasurePrefillLayer issues a Qwen3-30B-A3B-shaped MoE layer at a
// 512-token prefill chunk (4-bit, groups of 64, bf16 scales; all 128 experts
// resident) as pkg/model does — norms, projections, attention from position
// 0, router, the synchronizing download of its logits, top-8 routing on the
// host, one ExpertFFN per routed expert — over 4 layers of distinct weights,
// and prints (FM_CUDA_MEASURE=1) the wall time per layer beside each
// operation's device time: what is left over is host time and the GPU idling
// across the router's round trip.
func TestMeasurePrefillLayer(t *testing.T) {
	bd, g, d := openMeasured(t)
	const H, nH, nKV, D, E, K, I, NL, T = 2048, 32, 4, 128, 128, 8, 768, 4, 512
	r := rand.New(rand.NewPCG(41, 42))
	q4 := backend.MatrixDesc{Format: backend.Affine, Bits: 4, GroupSize: 64, ScaleFormat: backend.BF16}
	fill := func(desc backend.MatrixDesc) (data, sc, bi []byte) { return measureBytes(r, desc) }
	bind := func(rows, cols int) backend.Matrix {
		desc := q4
		desc.Rows, desc.Cols = rows, cols
		data, sc, bi := fill(desc)
		m, err := bd.BindDense(desc, data, sc, bi)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	gd, dd := q4, q4
	gd.Rows, gd.Cols, dd.Rows, dd.Cols = I, H, H, I
	l := alignedLayout(gd, gd, dd)
	file := make([]byte, l.FileSize)
	for _, m := range []*backend.ExpertMatrix{&l.Gate, &l.Up, &l.Down} {
		data, sc, bi := fill(m.Desc)
		copy(file[m.Data.Offset:], data)
		copy(file[m.Scales.Offset:], sc)
		copy(file[m.Biases.Offset:], bi)
	}
	type layerW struct {
		q, k, v, o, router backend.Matrix
		experts            []backend.Expert
	}
	var layers []layerW
	for li := 0; li < NL; li++ {
		lw := layerW{q: bind(nH*D, H), k: bind(nKV*D, H), v: bind(nKV*D, H), o: bind(H, nH*D), router: bind(E, H)}
		for e := 0; e < E; e++ {
			ex, err := bd.BindExpert(l, file)
			if err != nil {
				t.Fatal(err)
			}
			lw.experts = append(lw.experts, ex)
		}
		layers = append(layers, lw)
	}
	defer func() {
		for _, lw := range layers {
			for _, e := range lw.experts {
				e.Release()
			}
		}
	}()
	norm := upload(t, bd, 1, H, randVec(r, H, 1))
	qn, kn := upload(t, bd, 1, D, randVec(r, D, 1)), upload(t, bd, 1, D, randVec(r, D, 1))
	ap := &backend.AttentionParams{Heads: nH, KVHeads: nKV, HeadDim: D, RotaryDim: D, RopeTheta: 1e6, QNorm: qn, KNorm: kn, Eps: 1e-6}
	specs := make([]backend.LayerSpec, NL)
	for i := range specs {
		specs[i] = backend.LayerSpec{Attention: ap}
	}
	st, err := bd.NewState(specs)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Release()
	h := upload(t, bd, T, H, randVec(r, T*H, 1))
	xn, _ := bd.NewTensor(T, H)
	mix, _ := bd.NewTensor(T, H)
	q, _ := bd.NewTensor(T, nH*D)
	k, _ := bd.NewTensor(T, nKV*D)
	v, _ := bd.NewTensor(T, nKV*D)
	attn, _ := bd.NewTensor(T, nH*D)
	router, _ := bd.NewTensor(T, E)
	logits := make([]float32, T*E)
	rows := make([][]int, E)
	wts := make([][]float32, E)
	route := func() {
		for e := range rows {
			rows[e], wts[e] = rows[e][:0], wts[e][:0]
		}
		// The top K by K scans, as pkg/model's route picks them (without
		// its softmax; sort.Slice here took 2.3 ms a layer, GPU run 4).
		var top [K]int
		for tok := 0; tok < T; tok++ {
			lg := logits[tok*E : (tok+1)*E]
			for s := range top {
				best := -1
				for e, p := range lg {
					if best < 0 || p > lg[best] {
						best = e
					}
				}
				top[s] = best
				lg[best] = float32(math.Inf(-1)) // downloaded afresh each call
			}
			for _, e := range top {
				rows[e] = append(rows[e], tok)
				wts[e] = append(wts[e], 1.0/K)
			}
		}
	}
	ops := []struct {
		name string
		f    func(li int)
	}{
		{"rmsnorm", func(int) { bd.RMSNorm(xn, h, norm, 1e-6) }},
		{"q_proj 4096x2048", func(li int) { bd.MatMul(q, layers[li].q, xn) }},
		{"k_proj 512x2048", func(li int) { bd.MatMul(k, layers[li].k, xn) }},
		{"v_proj 512x2048", func(li int) { bd.MatMul(v, layers[li].v, xn) }},
		{"attention from 0", func(li int) { bd.Attention(attn, q, k, v, st, li, 0, ap) }},
		{"o_proj 2048x4096", func(li int) { bd.MatMul(mix, layers[li].o, attn) }},
		{"add", func(int) { bd.Add(h, mix) }},
		{"rmsnorm", func(int) { bd.RMSNorm(xn, h, norm, 1e-6) }},
		{"router 128x2048", func(li int) { bd.MatMul(router, layers[li].router, xn) }},
		{"router download (sync) + host routing", func(int) {
			if err := bd.Download(logits, router); err != nil {
				t.Fatal(err)
			}
			route()
		}},
		{"clear", func(int) { bd.Clear(mix) }},
		{"routed experts (ExpertFFN each)", func(li int) {
			for e, ex := range layers[li].experts {
				if len(rows[e]) > 0 {
					bd.ExpertFFN(mix, xn, ex, rows[e], wts[e])
				}
			}
			g.flushExperts()
		}},
		{"add", func(int) { bd.Add(h, mix) }},
	}
	layer := func(li int) {
		for _, op := range ops {
			op.f(li)
		}
	}
	// Warm up (pools, caches), then the whole sequence, wall clock.
	st.Reset()
	for li := 0; li < NL; li++ {
		layer(li)
	}
	if err := bd.Sync(); err != nil {
		t.Fatal(err)
	}
	const reps = 3
	start := time.Now()
	for rep := 0; rep < reps; rep++ {
		st.Reset()
		for li := 0; li < NL; li++ {
			layer(li)
		}
	}
	if err := bd.Sync(); err != nil {
		t.Fatal(err)
	}
	wall := time.Since(start).Seconds() / (reps * NL)
	// Each operation alone (layer 0; attention with its cache reset first).
	sum := 0.0
	for _, op := range ops {
		f := func() { op.f(0) }
		if op.name == "attention from 0" {
			f = func() { st.Reset(); op.f(0) }
		}
		hs := time.Now()
		f()
		if err := bd.Sync(); err != nil {
			t.Fatal(err)
		}
		host := time.Since(hs)
		el := medianDevice(t, d, 5, f)
		sum += el.Seconds()
		t.Logf("PREFILL LAYER op %-40s device %8.1f µs   (one call, host+wait %8.1f µs)", op.name, el.Seconds()*1e6, host.Seconds()*1e6)
	}
	t.Logf("PREFILL LAYER T=%d: sum of the operations %.3f ms; the sequence back to back %.3f ms a layer (wall) → %.0f tok/s for 48 layers",
		T, sum*1e3, wall*1e3, T/(wall*48))
}
