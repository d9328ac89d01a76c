//go:build cuda && linux

package cuda

import (
	"math/rand/v2"
	"os"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/fm-moe/fm/pkg/backend"
)

// TestMeasure prints the device's ceilings and the kernels' speed against
// them, all in one run (FM_CUDA_MEASURE=1): device-to-device copy bandwidth
// (bytes read + written), host-to-device copies from pinned and pageable
// memory, the decode matmul (T = 1) over 512 MiB of weights per format, and the
// host cost of one launch through the backend. Device times come from CUDA
// events, the median of several runs after a warm-up.
func TestMeasure(t *testing.T) {
	bd, g, d := openMeasured(t)
	median := func(n int, f func()) time.Duration {
		f() // warm-up
		var ts []time.Duration
		for i := 0; i < n; i++ {
			tm, err := d.StartTimer()
			if err != nil {
				t.Fatal(err)
			}
			f()
			el, err := d.StopTimer(tm)
			if err != nil {
				t.Fatal(err)
			}
			ts = append(ts, el)
		}
		for i := range ts {
			for j := i + 1; j < len(ts); j++ {
				if ts[j] < ts[i] {
					ts[i], ts[j] = ts[j], ts[i]
				}
			}
		}
		return ts[len(ts)/2]
	}
	gbs := func(bytes int64, el time.Duration) float64 { return float64(bytes) / el.Seconds() / 1e9 }

	const half = 1 << 30
	big, err := d.AllocExact(2 * half)
	if err != nil {
		t.Fatal(err)
	}
	defer d.FreeExact(big)
	d.Zero(big, 0, 2*half)
	copyEl := median(10, func() { d.Copy(big, half, big, 0, half) })
	ceiling := gbs(2*half, copyEl)
	t.Logf("CEILING device copy: %d MiB in %v = %.0f GB/s (read+write)", half>>20, copyEl, ceiling)

	const hsz = 256 << 20
	pinned, err := d.HostAlloc(hsz)
	if err != nil {
		t.Fatal(err)
	}
	defer d.FreeHost(pinned)
	for i := range pinned {
		pinned[i] = byte(i)
	}
	h2d := median(5, func() { d.UploadAsync(big, 0, pinned) })
	t.Logf("CEILING host->device pinned: %d MiB in %v = %.1f GB/s", hsz>>20, h2d, gbs(hsz, h2d))
	pageable := make([]byte, hsz)
	for i := range pageable {
		pageable[i] = byte(i)
	}
	h2dp := median(5, func() { d.UploadAsync(big, 0, pageable) })
	t.Logf("CEILING host->device pageable: %d MiB in %v = %.1f GB/s", hsz>>20, h2dp, gbs(hsz, h2dp))

	r := rand.New(rand.NewPCG(1, 1))
	// 512 MiB of weights: far beyond the 50 MB L2, so each run streams HBM.
	// 2048 columns (Qwen3-30B's hidden size) and 4096 (Qwen3.5-397B's).
	const weightBytes = 512 << 20
	for _, base := range []backend.MatrixDesc{
		{Cols: 2048, Format: backend.Affine, Bits: 4, GroupSize: 64, ScaleFormat: backend.BF16},
		{Cols: 4096, Format: backend.Affine, Bits: 4, GroupSize: 64, ScaleFormat: backend.BF16},
		{Cols: 2048, Format: backend.Affine, Bits: 2, GroupSize: 64, ScaleFormat: backend.BF16},
		{Cols: 2048, Format: backend.Affine, Bits: 8, GroupSize: 64, ScaleFormat: backend.BF16},
		{Cols: 2048, Format: backend.Affine, Bits: 3, GroupSize: 64, ScaleFormat: backend.BF16},
		{Cols: 2048, Format: backend.BF16},
	} {
		desc := base
		cols := desc.Cols
		per := desc.RowBytes() + 2*desc.ScaleBytes()/max(1, desc.Rows)
		if desc.Format == backend.Affine {
			per = desc.RowBytes() + 2*(cols/desc.GroupSize)*2
		}
		desc.Rows = weightBytes / per
		data := make([]byte, desc.DataBytes())
		for i := range data {
			data[i] = byte(uint32(i) * 0x9E3779B1 >> 13)
		}
		sc := make([]byte, desc.ScaleBytes())
		for i := 0; i+1 < len(sc); i += 2 {
			sc[i+1] = 0x3c // bf16 ~0.01
		}
		m, err := bd.BindDense(desc, data, sc, sc)
		if err != nil {
			t.Fatal(err)
		}
		bytes := int64(desc.DataBytes() + 2*desc.ScaleBytes())
		for _, T := range []int{1, 8} {
			x, _ := bd.NewTensor(T, cols)
			bd.Upload(x, randVec(r, T*cols, 1))
			y, _ := bd.NewTensor(T, desc.Rows)
			el := median(7, func() { bd.MatMul(y, m, x); g.flushExperts() }) // T = 1 products are deferred
			bw := gbs(bytes, el)
			t.Logf("MATMUL %v T=%d: %.0f MiB weights in %v = %.0f GB/s = %.2f of the copy ceiling", desc, T, float64(bytes)/(1<<20), el, bw, bw/ceiling)
			x.Release()
			y.Release()
		}
		m.Release()
		if err := bd.Sync(); err != nil {
			t.Fatal(err)
		}
	}

	// Host cost per launch through the backend (lock, thread pin, context,
	// cuLaunchKernel): a stream of tiny adds, wall clock.
	a, _ := bd.NewTensor(1, 32)
	b, _ := bd.NewTensor(1, 32)
	const n = 20000
	bd.Sync()
	start := time.Now()
	for i := 0; i < n; i++ {
		bd.Add(a, b)
	}
	issue := time.Since(start)
	bd.Sync()
	all := time.Since(start)
	t.Logf("LAUNCH host issue %.2f µs per op, %.2f µs per op until done (%d tiny adds)", issue.Seconds()/n*1e6, all.Seconds()/n*1e6, n)

	// Where a launch's host time goes: the pieces alone.
	per := func(f func()) float64 {
		start := time.Now()
		for i := 0; i < n; i++ {
			f()
		}
		return time.Since(start).Seconds() / n * 1e6
	}
	ta, tb := a.(*tensor), b.(*tensor)
	d.enter()
	setCur := per(func() { d.drv.call("cuCtxSetCurrent", d.drv.cuCtxSetCurrent, d.ctx) })
	gettid := per(func() { syscall.Gettid() })
	rawLaunch := per(func() { d.launch("add", [3]int{1, 1, 1}, 256, 0, uint64(ta.ptr), uint64(tb.ptr), argL(32)) })
	d.drv.call("cuStreamSynchronize", d.drv.cuStreamSynchronize, d.stream)
	d.leave()
	lockOnly := per(func() { d.enter(); d.leave() })
	t.Logf("LAUNCH pieces: cuCtxSetCurrent %.2f µs, gettid %.2f µs, launch without lock %.2f µs, enter+leave %.2f µs", setCur, gettid, rawLaunch, lockOnly)

	// The model's synchronizing calls per layer: NonFinite of the hidden
	// state (2 per layer) and the router logits' Download (1 per sparse
	// layer), each after one queued kernel, as in a decode step.
	h, _ := bd.NewTensor(1, 2048)
	router, _ := bd.NewTensor(1, 128)
	logits := make([]float32, 128)
	const m = 2000
	start = time.Now()
	for i := 0; i < m; i++ {
		bd.Add(a, b)
		if _, err := bd.NonFinite(h); err != nil {
			t.Fatal(err)
		}
	}
	nf := time.Since(start).Seconds() / m * 1e6
	start = time.Now()
	for i := 0; i < m; i++ {
		bd.Add(a, b)
		if err := bd.Download(logits, router); err != nil {
			t.Fatal(err)
		}
	}
	dl := time.Since(start).Seconds() / m * 1e6
	t.Logf("SYNC one tiny kernel then NonFinite [1×2048]: %.1f µs; then Download of 128 floats: %.1f µs (launch %.1f µs of each)", nf, dl, issue.Seconds()/n*1e6)
}

// TestMeasureLayer breaks a Qwen3-30B-A3B-shaped decode layer (4-bit, groups
// of 64, bf16 scales; hidden 2048, 32 query and 4 KV heads of 128, 128
// experts of 768, K = 8, all experts resident) into its operations as
// pkg/model issues them (FM_CUDA_MEASURE=1): each operation's device time
// (CUDA events, with the queue kept busy before so that launch latency is not
// counted), its host time per call, and the wall time per layer of the whole
// sequence over 8 layers of distinct weights (256 MiB, beyond the L2), next to
// the device-to-device copy ceiling of the same run.
func TestMeasureLayer(t *testing.T) {
	bd, g, d := openMeasured(t)
	const H, nH, nKV, D, E, K, I, NL, P = 2048, 32, 4, 128, 128, 8, 768, 8, 512
	r := rand.New(rand.NewPCG(3, 4))
	q4 := func(rows, cols int) backend.MatrixDesc {
		return backend.MatrixDesc{Rows: rows, Cols: cols, Format: backend.Affine, Bits: 4, GroupSize: 64, ScaleFormat: backend.BF16}
	}
	fill := func(desc backend.MatrixDesc) (data, sc, bi []byte) { return measureBytes(r, desc) }
	bind := func(rows, cols int) backend.Matrix {
		desc := q4(rows, cols)
		data, sc, bi := fill(desc)
		m, err := bd.BindDense(desc, data, sc, bi)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	l := alignedLayout(q4(I, H), q4(I, H), q4(H, I))
	type layerW struct {
		q, k, v, o, router backend.Matrix
		experts            []backend.ExpertKey
	}
	norm := upload(t, bd, 1, H, randVec(r, H, 1))
	qn, kn := upload(t, bd, 1, D, randVec(r, D, 1)), upload(t, bd, 1, D, randVec(r, D, 1))
	ap := &backend.AttentionParams{Heads: nH, KVHeads: nKV, HeadDim: D, RotaryDim: D, RopeTheta: 1e6, QNorm: qn, KNorm: kn, Eps: 1e-6}
	var layers []layerW
	specs := make([]backend.LayerSpec, NL)
	for li := 0; li < NL; li++ {
		// The router stays bf16, as fm's conversion keeps it.
		rd := backend.MatrixDesc{Rows: E, Cols: H, Format: backend.BF16}
		rdata := make([]byte, rd.DataBytes())
		for i := 0; i+1 < len(rdata); i += 2 {
			rdata[i], rdata[i+1] = byte(r.Uint32()), 0x3c // bf16 in ±[0.0078, 0.03)
		}
		rm, err := bd.BindDense(rd, rdata, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		lw := layerW{q: bind(nH*D, H), k: bind(nKV*D, H), v: bind(nKV*D, H), o: bind(H, nH*D), router: rm}
		for e := 0; e < K; e++ {
			buf, err := bd.ExpertBuffer(l.FileSize)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range []*backend.ExpertMatrix{&l.Gate, &l.Up, &l.Down} {
				data, sc, bi := fill(m.Desc)
				copy(buf[m.Data.Offset:], data)
				copy(buf[m.Scales.Offset:], sc)
				copy(buf[m.Biases.Offset:], bi)
			}
			key := backend.ExpertKey{Owner: 1, Layer: li, ID: e}
			ex, err := g.BindExpertCached(key, l, buf)
			if err != nil {
				t.Fatal(err)
			}
			ex.Release()
			bd.FreeExpertBuffer(buf)
			lw.experts = append(lw.experts, key)
		}
		layers = append(layers, lw)
		specs[li] = backend.LayerSpec{Attention: ap}
	}
	st, err := bd.NewState(specs)
	if err != nil {
		t.Fatal(err)
	}
	// A P-token prompt in every layer's KV cache.
	{
		qp, _ := bd.NewTensor(P, nH*D)
		kp, _ := bd.NewTensor(P, nKV*D)
		vp, _ := bd.NewTensor(P, nKV*D)
		out, _ := bd.NewTensor(P, nH*D)
		bd.Upload(qp, randVec(r, P*nH*D, 1))
		bd.Upload(kp, randVec(r, P*nKV*D, 1))
		bd.Upload(vp, randVec(r, P*nKV*D, 1))
		for li := 0; li < NL; li++ {
			bd.Attention(out, qp, kp, vp, st, li, 0, ap)
			// One decode position more: the cache grows (doubling) here,
			// not inside the measured operations.
			bd.Attention(out.Slice(0, 1), qp.Slice(0, 1), kp.Slice(0, 1), vp.Slice(0, 1), st, li, P, ap)
		}
	}
	h := upload(t, bd, 1, H, randVec(r, H, 1))
	xn, _ := bd.NewTensor(1, H)
	mix, _ := bd.NewTensor(1, H)
	q, _ := bd.NewTensor(1, nH*D)
	k, _ := bd.NewTensor(1, nKV*D)
	v, _ := bd.NewTensor(1, nKV*D)
	attn, _ := bd.NewTensor(1, nH*D)
	router, _ := bd.NewTensor(1, E)
	logits := make([]float32, E)
	mk, err := g.NewMarks(2 * NL)
	if err != nil {
		t.Fatal(err)
	}
	defer mk.Release()
	rows := make([]int, 2*NL)
	wts := make([]float32, K)
	for i := range wts {
		wts[i] = 1.0 / K
	}
	// The operations as pkg/model issues them for one layer, grouped where
	// the backend fuses them (expertBatch): q, k and v are one launch; the
	// residual add, its mark and the next RMSNorm run in the last block of
	// o_proj and of the experts' down projection; the clear joins the
	// experts. With FM_CUDA_DEBUG=nofuse each group's operations are
	// launched one by one (the A/B).
	ops := []struct {
		name string
		f    func(li int)
	}{
		{"q,k,v proj", func(li int) {
			bd.MatMul(q, layers[li].q, xn)
			bd.MatMul(k, layers[li].k, xn)
			bd.MatMul(v, layers[li].v, xn)
		}},
		{"attention (pos 512)", nil},
		{"o_proj+add+mark+rmsnorm", func(li int) {
			bd.MatMul(mix, layers[li].o, attn)
			bd.Add(h, mix)
			mk.Mark(2*li, h)
			bd.RMSNorm(xn, h, norm, 1e-6)
		}},
		{"router bf16 + download", func(li int) {
			// The logits and the marks come back through mapped memory
			// (one synchronization): see gpu.downloadProduct.
			bd.MatMul(router, layers[li].router, xn)
			if err := bd.Download(logits, router); err != nil {
				t.Fatal(err)
			}
			if err := mk.Read(rows); err != nil {
				t.Fatal(err)
			}
		}},
		{"clear+8 experts+add+mark+norm", func(li int) {
			bd.Clear(mix)
			// As pkg/model does: every use released after the last
			// ExpertFFN, then the residual add and its check, then the
			// next layer's RMSNorm.
			var held []backend.Expert
			for _, key := range layers[li].experts {
				ex, ok := g.CachedExpert(key)
				if !ok {
					t.Fatalf("expert %v not resident", key)
				}
				bd.ExpertFFN(mix, xn, ex, []int{0}, wts[:1])
				held = append(held, ex)
			}
			for _, ex := range held {
				ex.Release()
			}
			bd.Add(h, mix)
			mk.Mark(2*li+1, h)
			bd.RMSNorm(xn, h, norm, 1e-6)
		}},
	}
	// The attention appends to the layer's cache: each call is at the next
	// position of its layer.
	lpos := make([]int, NL)
	for i := range lpos {
		lpos[i] = P + 1
	}
	for i, op := range ops {
		if op.name == "attention (pos 512)" {
			ops[i].f = func(li int) { bd.Attention(attn, q, k, v, st, li, lpos[li], ap); lpos[li]++ }
		}
	}
	busy, err := d.AllocExact(512 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer d.FreeExact(busy)
	copyEl := func() time.Duration {
		tm, _ := d.StartTimer()
		d.Copy(busy, 256<<20, busy, 0, 256<<20)
		el, _ := d.StopTimer(tm)
		return el
	}()
	ceiling := float64(512<<20) / copyEl.Seconds() / 1e9
	t.Logf("LAYER ceiling: device copy of 256 MiB = %.0f GB/s (read+write)", ceiling)
	// Busy work as a kernel (an add over 2 × 256 MiB): a queued copy would
	// make later copies wait on the host (probed below).
	busyKernel := func() {
		if d.enter() {
			d.launch("add", [3]int{d.Info.SMs * 8, 1, 1}, 256, 0, uint64(busy.Ptr), uint64(busy.Ptr)+256<<20, argL(64<<20))
		}
		d.leave()
	}
	small, _ := d.AllocExact(4096)
	defer d.FreeExact(small)
	for _, behind := range []string{"kernel", "copy"} {
		var host []float64
		for rep := 0; rep < 5; rep++ {
			if behind == "kernel" {
				busyKernel()
			} else {
				d.Copy(busy, 256<<20, busy, 0, 256<<20)
			}
			start := time.Now()
			d.Copy(small, 0, busy, 0, 4096)
			host = append(host, float64(time.Since(start).Microseconds()))
			if err := d.Sync(); err != nil {
				t.Fatal(err)
			}
		}
		sort.Float64s(host)
		t.Logf("LAYER probe: host time of a 4 KiB device copy queued behind a ~150 µs %s: %.0f µs", behind, host[2])
	}
	var devSum, hostSum float64
	for _, op := range ops {
		var dev, host []float64
		for rep := 0; rep < 9; rep++ {
			li := rep % NL
			// Keep the queue busy (a ~200 µs kernel) so the events time the
			// operation's kernels, not the host's issue latency.
			busyKernel()
			tm, err := d.StartTimer()
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			op.f(li)
			g.flushExperts() // launch what the backend deferred, inside the timed span
			host = append(host, float64(time.Since(start).Microseconds()))
			el, err := d.StopTimer(tm)
			if err != nil {
				t.Fatal(err)
			}
			dev = append(dev, el.Seconds()*1e6)
		}
		sort.Float64s(dev)
		sort.Float64s(host)
		devSum += dev[4]
		hostSum += host[4]
		t.Logf("LAYER op %-24s device %7.1f µs  host %6.1f µs", op.name, dev[4], host[4])
	}
	t.Logf("LAYER sum of the operations: device %.1f µs, host %.1f µs (the download's host time includes its wait)", devSum, hostSum)
	if err := bd.Sync(); err != nil {
		t.Fatal(err)
	}
	// The whole sequence, layer after layer, as a decode step issues it.
	const reps = 20
	start := time.Now()
	for rep := 0; rep < reps; rep++ {
		for li := 0; li < NL; li++ {
			for _, op := range ops {
				op.f(li)
			}
		}
	}
	if err := bd.Sync(); err != nil {
		t.Fatal(err)
	}
	per := time.Since(start).Seconds() / (reps * NL) * 1e6
	t.Logf("LAYER sequence: %.1f µs a layer wall clock (%d layers × %d), %.0f µs for 48 layers = %.0f tok/s without the head",
		per, NL, reps, per*48, 1e6/(per*48))
}

// openMeasured opens the device for a measurement, which runs only with
// FM_CUDA_MEASURE set (it takes seconds and prints numbers, not checks).
func openMeasured(t *testing.T) (backend.Device, *gpu, *Device) {
	if os.Getenv("FM_CUDA_MEASURE") == "" {
		t.Skip("set FM_CUDA_MEASURE=1 to measure")
	}
	bd := openGPU(t)
	g := bd.(*gpu)
	return bd, g, g.d
}
