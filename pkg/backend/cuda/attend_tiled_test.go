//go:build cuda && linux

package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
)

// attendCase is one Device.Attend launch of the tiled-attention tests: T
// query rows at positions pos0… of nH heads over nKV KV heads of D, q, gate
// and o rows padLdq floats longer than nH·D and cache rows padLdkv longer
// than nKV·D (the strides Attention does not use, to catch a stride bug).
// exact draws integer queries and half-integer keys at D 64 or 256 (scale a
// power of two): float32 scores are then exact and up to ~±150, so a
// missing or wrong per-row maximum overflows or underflows expf.
type attendCase struct {
	T, pos0, nH, nKV, D int
	gated               bool
	padLdq, padLdkv     int
	qScale              float64
	exact               bool
}

func (c attendCase) String() string {
	return fmt.Sprintf("T=%d pos0=%d heads %d/%d D=%d gated=%v ld+%d/+%d qscale=%g exact=%v", c.T, c.pos0, c.nH, c.nKV,
		c.D, c.gated, c.padLdq, c.padLdkv, c.qScale, c.exact)
}

// attendData is a case's inputs: q and gate [T, ldq], caches [pos0+T, ldkv].
type attendData struct {
	c               attendCase
	ldq, ldkv       int
	scale           float32
	q, gate, kc, vc []float32
}

func newAttendData(r *rand.Rand, c attendCase) *attendData {
	a := &attendData{c: c, ldq: c.nH*c.D + c.padLdq, ldkv: c.nKV*c.D + c.padLdkv,
		scale: float32(1 / math.Sqrt(float64(c.D)))}
	n := c.pos0 + c.T
	a.q, a.gate = randVec(r, c.T*a.ldq, c.qScale), randVec(r, c.T*a.ldq, 3)
	a.kc, a.vc = randVec(r, n*a.ldkv, 1), randVec(r, n*a.ldkv, 1)
	if c.exact {
		for i := range a.q {
			a.q[i] = float32(r.IntN(33) - 16)
		}
		for i := range a.kc {
			a.kc[i] = float32(r.IntN(33)-16) / 2
		}
	}
	return a
}

// ref is Attend's contract in float64: per head h and row t, softmax over
// keys 0 … pos0+t of (q·scale)·k, Σ p·v, times sigmoid(gate) if gated. It
// returns [T, nH·D].
func (a *attendData) ref() []float64 {
	c := a.c
	out := make([]float64, c.T*c.nH*c.D)
	var wg sync.WaitGroup
	for h := 0; h < c.nH; h++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := h / (c.nH / c.nKV)
			sc := make([]float64, c.pos0+c.T)
			for t := 0; t < c.T; t++ {
				qr := a.q[t*a.ldq+h*c.D:]
				n := c.pos0 + t + 1
				mx := math.Inf(-1)
				for s := 0; s < n; s++ {
					kr := a.kc[s*a.ldkv+g*c.D:]
					var dot float64
					for i := 0; i < c.D; i++ {
						dot += float64(qr[i]) * float64(kr[i])
					}
					sc[s] = dot * float64(a.scale)
					mx = max(mx, sc[s])
				}
				var sum float64
				for s := 0; s < n; s++ {
					sc[s] = math.Exp(sc[s] - mx)
					sum += sc[s]
				}
				o := out[(t*c.nH+h)*c.D:]
				for s := 0; s < n; s++ {
					p, vr := sc[s]/sum, a.vc[s*a.ldkv+g*c.D:]
					for i := 0; i < c.D; i++ {
						o[i] += p * float64(vr[i])
					}
				}
				if c.gated {
					for i := 0; i < c.D; i++ {
						o[i] /= 1 + math.Exp(-float64(a.gate[t*a.ldq+h*c.D+i]))
					}
				}
			}
		}()
	}
	wg.Wait()
	return out
}

// attendCases is the table: every T in {16, 37, 64, 200, 512} with every
// pos0 in {0, 5, 300} and every D in {64, 128, 256}, the head layouts
// (32/4, 16/16, 64/4: GQA ratios 8, 1, 16) and gating taking turns so that
// each D meets each layout and both gatings; every other case with padded
// strides and peakier scores. Then long contexts (score rows in chunks),
// head dimensions 32 and 96, exact large scores and the models' shapes.
func attendCases() []attendCase {
	heads := [][2]int{{32, 4}, {16, 16}, {64, 4}}
	var cs []attendCase
	i := 0
	for _, T := range []int{16, 37, 64, 200, 512} {
		for _, pos0 := range []int{0, 5, 300} {
			for di, D := range []int{64, 128, 256} {
				hd := heads[(i/3+di)%3]
				c := attendCase{T: T, pos0: pos0, nH: hd[0], nKV: hd[1], D: D, gated: (i/3+di/2)%2 == 1, qScale: 3}
				if i%2 == 1 {
					c.padLdq, c.padLdkv, c.qScale = 12, 20, 10
				}
				cs = append(cs, c)
				i++
			}
		}
	}
	return append(cs,
		attendCase{T: 100, pos0: 1200, nH: 16, nKV: 2, D: 128, gated: true, qScale: 3},       // one pass over 1312 keys
		attendCase{T: 40, pos0: 2000, nH: 8, nKV: 2, D: 128, qScale: 3, padLdkv: 4},          // chunks of 608 keys
		attendCase{T: 64, pos0: 3000, nH: 4, nKV: 2, D: 256, gated: true, qScale: 3},         // 8 rows a block
		attendCase{T: 33, pos0: 0, nH: 8, nKV: 8, D: 32, qScale: 3},                          // one dimension a lane
		attendCase{T: 21, pos0: 7, nH: 6, nKV: 3, D: 96, gated: true, qScale: 3},             // three dimensions a lane
		attendCase{T: 77, pos0: 50, nH: 8, nKV: 2, D: 64, gated: true, exact: true},          // exact large scores
		attendCase{T: 130, pos0: 3, nH: 4, nKV: 1, D: 256, exact: true, padLdq: 4},           // exact large scores
		attendCase{T: 512, pos0: 0, nH: 32, nKV: 2, D: 256, gated: true, qScale: 3},          // Qwen3.5's shape
		attendCase{T: 512, pos0: 512, nH: 32, nKV: 4, D: 128, qScale: 3, padLdkv: 0},         // 30B's, second chunk
		attendCase{T: 17, pos0: 1000, nH: 32, nKV: 4, D: 128, gated: true, qScale: 3},        // first T past attend_split
		attendCase{T: 500, pos0: 0, nH: 2, nKV: 1, D: 128, qScale: 3, padLdq: 1, padLdkv: 3}, // odd strides
	)
}

// runAttend uploads a's inputs, runs Device.Attend with o first filled with
// NaN, and returns o's [T, nH·D] part; the padding columns of o must still
// be NaN (nothing written outside the heads).
func runAttend(t *testing.T, g *gpu, a *attendData) []float32 {
	t.Helper()
	c := a.c
	n := c.pos0 + c.T
	q, gate := upload(t, g, c.T, a.ldq, a.q), upload(t, g, c.T, a.ldq, a.gate)
	kc, vc := upload(t, g, n, a.ldkv, a.kc), upload(t, g, n, a.ldkv, a.vc)
	nan := make([]float32, c.T*a.ldq)
	for i := range nan {
		nan[i] = float32(math.NaN())
	}
	o := upload(t, g, c.T, a.ldq, nan)
	defer func() {
		for _, x := range []interface{ Release() }{q, gate, kc, vc, o} {
			x.Release()
		}
	}()
	g.d.Attend(&AttendArgs{O: g.tt(o, "o").ptr, Q: g.tt(q, "q").ptr, Gate: g.tt(gate, "gate").ptr,
		KC: g.tt(kc, "kc").ptr, VC: g.tt(vc, "vc").ptr, NH: c.nH, NKV: c.nKV, D: c.D, Pos0: c.pos0, T: c.T,
		LdQ: a.ldq, LdKV: a.ldkv, Scale: a.scale, Gated: c.gated})
	all := download(t, g, o)
	got := make([]float32, 0, c.T*c.nH*c.D)
	for r := 0; r < c.T; r++ {
		row := all[r*a.ldq : (r+1)*a.ldq]
		got = append(got, row[:c.nH*c.D]...)
		for j, v := range row[c.nH*c.D:] {
			if !math.IsNaN(float64(v)) {
				t.Fatalf("%v: o[%d][%d], past the heads, was written (%v)", c, r, c.nH*c.D+j, v)
			}
		}
	}
	return got
}

// TestAttendTiled compares attend_tiled with the float64 reference (the
// attention tests' tolerance) and with attend (the one-block-a-row kernel,
// FM_CUDA_DEBUG=noattntile) over attendCases; each case must take the tiled
// kernel (T = 16 too: the decode split is switched off for the test). Each
// case runs again with the score rows capped at 32–128 keys, forcing the
// three-pass path (scores recomputed chunk by chunk), which must give the
// one-pass results (bit for bit by construction; checked at 1e-6).
func TestAttendTiled(t *testing.T) {
	d := openGPU(t)
	g := d.(*gpu)
	saved := [2]bool{debugNoSplit, debugNoAttnTile}
	savedChunk := attendTiledMaxChunk
	defer func() { debugNoSplit, debugNoAttnTile, attendTiledMaxChunk = saved[0], saved[1], savedChunk }()
	debugNoSplit = true
	r := rand.New(rand.NewPCG(41, 42))
	for ci, c := range attendCases() {
		a := newAttendData(r, c)
		args := &AttendArgs{NH: c.nH, NKV: c.nKV, D: c.D, Pos0: c.pos0, T: c.T}
		warps, sc, smem := attendTiledShape(args, g.d.maxDynamicShared(), 0)
		if warps == 0 {
			t.Fatalf("%v: attend_tiled does not take the case", c)
		}
		want := a.ref()
		debugNoAttnTile, attendTiledMaxChunk = false, 0
		tiled := runAttend(t, g, a)
		chunkCap := []int{32, 64, 96, 128}[ci%4]
		attendTiledMaxChunk = chunkCap
		_, scCap, _ := attendTiledShape(args, g.d.maxDynamicShared(), chunkCap)
		chunked := runAttend(t, g, a)
		attendTiledMaxChunk = 0
		debugNoAttnTile = true
		plain := runAttend(t, g, a)
		relT := compare(t, fmt.Sprintf("attend_tiled %v", c), tiled, want, 1e-5)
		relP := compare(t, fmt.Sprintf("attend %v", c), plain, want, 1e-5)
		relA := compare(t, fmt.Sprintf("attend_tiled against attend %v", c), tiled, f64s(plain), 1e-5)
		relC := compare(t, fmt.Sprintf("attend_tiled in chunks of %d against one pass %v", scCap, c), chunked, f64s(tiled), 1e-6)
		differ := 0
		for i := range tiled {
			if math.Float32bits(tiled[i]) != math.Float32bits(chunked[i]) {
				differ++
			}
		}
		t.Logf("%v: %d rows a block, score rows of %d keys, %d B shared: relative error tiled %.3g, attend %.3g, tiled against attend %.3g; chunks of %d keys against one pass %.3g (%d values differ)",
			c, atRW*warps, sc, smem, relT, relP, relA, scCap, relC, differ)
	}
}

// TestAttendTiledShape pins the dispatch: blocks of 32 rows (16 for
// T = 16), score rows over every key where they fit, else chunks sized for
// two blocks a multiprocessor; none (attend) for short chunks or head
// dimensions or head counts the kernel does not take.
func TestAttendTiledShape(t *testing.T) {
	const h200 = 227*1024 - 4096 // an H100/H200's opt-in limit less the static arrays
	for _, c := range []struct {
		T, pos0, nH, nKV, D, maxSmem, maxChunk int
		warps, sc, smem                        int
	}{
		{512, 0, 32, 4, 128, h200, 0, 8, 512, 4 * (64*132 + 32*512)},
		{512, 0, 32, 2, 256, h200, 0, 8, 512, 4 * (64*260 + 32*512)},
		{16, 0, 32, 4, 128, h200, 0, 4, 32, 4 * (48*132 + 16*32)},
		{15, 0, 32, 4, 128, h200, 0, 0, 0, 0},
		{17, 0, 32, 4, 128, h200, 0, 8, 32, 4 * (64*132 + 32*32)},
		{100, 1200, 16, 2, 128, h200, 0, 8, 1312, 4 * (64*132 + 32*1312)},
		{40, 2000, 8, 2, 128, h200, 0, 8, 608, 4 * (64*132 + 32*608)},            // chunks: half the shared memory
		{64, 3000, 4, 2, 256, h200, 0, 8, 352, 4 * (64*260 + 32*352)},            // chunks
		{64, 20000, 4, 2, 256, h200, 0, 8, 352, 4 * (64*260 + 32*352)},           // chunks
		{64, 3000, 4, 2, 256, 100*1024 - 4096, 0, 8, 224, 4 * (64*260 + 32*224)}, // half too small: all of it
		{200, 45, 2, 1, 64, h200, 96, 8, 96, 4 * (64*68 + 32*96)},                // capped (tests)
		{37, 5, 4, 2, 128, h200, 64, 8, 64, 4 * (64*132 + 32*64)},                // the cap covers every key
		{64, 0, 4, 2, 256, 64 * 260 * 4, 0, 0, 0, 0},                             // not even one tile
		{64, 0, 4, 2, 80, h200, 0, 0, 0, 0},
		{64, 0, 4, 2, 512, h200, 0, 0, 0, 0},
		{64, 0, 6, 4, 128, h200, 0, 0, 0, 0},
	} {
		w, sc, s := attendTiledShape(&AttendArgs{T: c.T, Pos0: c.pos0, NH: c.nH, NKV: c.nKV, D: c.D}, c.maxSmem, c.maxChunk)
		if w != c.warps || sc != c.sc || s != c.smem {
			t.Errorf("attendTiledShape(T=%d pos0=%d heads %d/%d D=%d, %d B, cap %d) = %d warps, %d keys, %d B; want %d, %d, %d",
				c.T, c.pos0, c.nH, c.nKV, c.D, c.maxSmem, c.maxChunk, w, sc, s, c.warps, c.sc, c.smem)
		}
	}
}
