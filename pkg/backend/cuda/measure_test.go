//go:build cuda && linux

package cuda

import (
	"math/rand/v2"
	"os"
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
	if os.Getenv("FM_CUDA_MEASURE") == "" {
		t.Skip("set FM_CUDA_MEASURE=1 to measure")
	}
	bd := openGPU(t)
	g := bd.(*gpu)
	d := g.d
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
	const cols, weightBytes = 2048, 512 << 20
	for _, base := range []backend.MatrixDesc{
		{Format: backend.Affine, Bits: 4, GroupSize: 64, ScaleFormat: backend.BF16},
		{Format: backend.Affine, Bits: 2, GroupSize: 64, ScaleFormat: backend.BF16},
		{Format: backend.Affine, Bits: 8, GroupSize: 64, ScaleFormat: backend.BF16},
		{Format: backend.Affine, Bits: 3, GroupSize: 64, ScaleFormat: backend.BF16},
		{Format: backend.BF16},
	} {
		desc := base
		desc.Cols = cols
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
			el := median(7, func() { bd.MatMul(y, m, x) })
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
