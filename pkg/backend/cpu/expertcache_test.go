package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/fm-moe/fm/pkg/backend"
)

// packedCacheOn reports whether this machine and build compute packed
// experts (int8 mode on AVX-512 VNNI, FM_ROWPACK and FM_ROWPACK_EXPERTS not
// 0).
func packedCacheOn() bool {
	return simdLevel >= levelAVX512 && haveVNNI && !rowPackOff && !rowPackExpertsOff
}

// cacheDevice opens an int8-mode device whose expert cache has budget bytes.
func cacheDevice(t testing.TB, threads int, budget int64) *Device {
	t.Helper()
	d, err := OpenDevice(backend.Options{Threads: threads, Matmul: backend.MatmulInt8, ExpertCacheBytes: budget})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// expertOut runs one ExpertFFN of e over the first n rows of x (weights 1)
// into a fresh [n × H] tensor and returns its data.
func expertOut(d *Device, e backend.Expert, x backend.Tensor, n int) []float32 {
	out, _ := d.NewTensor(x.Rows(), x.Cols())
	rows, weights := make([]int, n), make([]float32, n)
	for i := range rows {
		rows[i], weights[i] = i, 1
	}
	d.ExpertFFN(out, x, e, rows, weights)
	return out.(*Tensor).data[:n*x.Cols()]
}

// closeTo fails unless got matches want within tol of want's largest
// magnitude (the packed and the row kernels sum the same integer dots in
// another float order, and a tiny difference can move one element of the
// re-quantized SwiGLU output by a rounding step).
func closeTo(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	var mag float64
	for _, v := range want {
		mag = max(mag, math.Abs(float64(v)))
	}
	for i := range want {
		if d := math.Abs(float64(got[i]) - float64(want[i])); d > tol*mag || math.IsNaN(float64(got[i])) {
			t.Fatalf("%s: element %d: %g, want %g (|Δ| %g, largest |want| %g)", what, i, got[i], want[i], d, mag)
		}
	}
}

// TestExpertCacheMatchesUnpacked: an expert bound through the packed cache
// (on a miss, then on hits through CachedExpert and BindExpertCached)
// computes what the same expert bound unpacked computes in int8 mode (2-,
// 3-, 4- and 8-bit codes), for
// 1 to 17 tokens (the 8-token kernel and the 1-token one), on one and two
// workers, through ExpertFFN and ExpertFFNs.
func TestExpertCacheMatchesUnpacked(t *testing.T) {
	if !packedCacheOn() {
		t.Skip("no packed experts here (needs AVX-512 VNNI; FM_ROWPACK, FM_ROWPACK_EXPERTS)")
	}
	r := rand.New(rand.NewPCG(41, 42))
	for _, tc := range []struct{ H, I, threads, bits int }{{256, 128, 2, 4}, {512, 192, 1, 4}, {128, 64, 2, 4}, {256, 128, 2, 8}, {128, 192, 1, 8}, {256, 128, 2, 2}, {256, 128, 2, 3}} {
		l, file := randomExpertFile(r, tc.H, tc.I, tc.bits)
		ref := cacheDevice(t, tc.threads, 0) // no budget: unpacked row kernels
		d := cacheDevice(t, tc.threads, 1<<30)
		key := backend.ExpertKey{Owner: 1, Layer: 2, ID: 3}
		for _, n := range []int{1, 2, 7, 8, 9, 17} {
			t.Run(fmt.Sprintf("H%d_I%d_w%d_b%d_n%d", tc.H, tc.I, tc.threads, tc.bits, n), func(t *testing.T) {
				x, _ := d.NewTensor(n, tc.H)
				d.Upload(x, randomVector(r, n*tc.H))
				plain, err := ref.BindExpertCached(key, l, file)
				if err != nil {
					t.Fatal(err)
				}
				if plain.(*expert).slot != nil {
					t.Fatal("a device without budget handed out a packed expert")
				}
				want := expertOut(ref, plain, x, n)
				plain.Release()

				// A miss the first time (n == 1), hits after.
				bound, err := d.BindExpertCached(key, l, file)
				if err != nil {
					t.Fatal(err)
				}
				if bound.(*expert).slot == nil {
					t.Fatal("BindExpertCached with a budget did not pack")
				}
				closeTo(t, "bound", expertOut(d, bound, x, n), want, 2e-3)
				bound.Release()
				hit, ok := d.CachedExpert(key)
				if !ok {
					t.Fatal("CachedExpert missed an expert just bound")
				}
				closeTo(t, "cached", expertOut(d, hit, x, n), want, 2e-3)
				// ExpertFFNs (whole experts per worker) as ExpertFFN.
				out, _ := d.NewTensor(n, tc.H)
				rows, ws := make([]int, n), make([]float32, n)
				for i := range rows {
					rows[i], ws[i] = i, 1
				}
				es := []backend.Expert{hit, hit, hit}
				d.ExpertFFNs(out, x, es, [][]int{rows, rows, rows}, [][]float32{ws, ws, ws})
				three := make([]float32, len(want))
				for i, v := range want {
					three[i] = 3 * v
				}
				closeTo(t, "ExpertFFNs", out.(*Tensor).data, three, 2e-3)
				hit.Release()
			})
		}
		st := d.ExpertCacheStats()
		if st.Misses != 1 || st.Hits != 11 || st.Evictions != 0 || !st.Host || st.Budget != 1<<30 {
			t.Fatalf("stats %+v: want 1 miss, 11 hits, no eviction, host, budget 1 GiB", st)
		}
	}
}

// TestExpertCacheEviction: with room for two experts, a third evicts the
// least recently used; an expert evicted while held still computes right
// and its slot is reused only after its release; when every slot is held,
// a miss is bound unpacked; the counters say so.
func TestExpertCacheEviction(t *testing.T) {
	if !packedCacheOn() {
		t.Skip("no packed experts here (needs AVX-512 VNNI; FM_ROWPACK, FM_ROWPACK_EXPERTS)")
	}
	r := rand.New(rand.NewPCG(43, 44))
	const H, I = 256, 128
	type ex struct {
		l    *backend.ExpertLayout
		file []byte
		want []float32
	}
	ref := cacheDevice(t, 2, 0)
	x, _ := ref.NewTensor(1, H)
	ref.Upload(x, randomVector(r, H))
	var es [4]ex
	for i := range es {
		es[i].l, es[i].file = randomExpertFile(r, H, I, 4)
		e, err := ref.BindExpert(es[i].l, es[i].file)
		if err != nil {
			t.Fatal(err)
		}
		es[i].want = expertOut(ref, e, x, 1)
		e.Release()
	}
	size := slotBytes(es[0].l)
	d, err := OpenDevice(backend.Options{Threads: 2, Matmul: backend.MatmulInt8, ExpertCacheBytes: int64(2*size + size/2), ExpertCachePolicy: "lru"})
	if err != nil {
		t.Fatal(err)
	}
	key := func(i int) backend.ExpertKey { return backend.ExpertKey{Owner: 7, Layer: 0, ID: i} }
	bind := func(i int, packed bool) backend.Expert {
		t.Helper()
		e, err := d.BindExpertCached(key(i), es[i].l, es[i].file)
		if err != nil {
			t.Fatal(err)
		}
		if got := e.(*expert).slot != nil; got != packed {
			t.Fatalf("expert %d bound packed %v, want %v", i, got, packed)
		}
		closeTo(t, fmt.Sprintf("expert %d", i), expertOut(d, e, x, 1), es[i].want, 2e-3)
		return e
	}
	bind(0, true).Release()
	held := bind(1, true)   // held through the evictions below
	bind(2, true).Release() // evicts 0 (least recent), reusing its slot
	if _, ok := d.CachedExpert(key(0)); ok {
		t.Fatal("expert 0 still cached after two newer ones filled both slots")
	}
	if e, ok := d.CachedExpert(key(2)); !ok {
		t.Fatal("expert 2 not cached")
	} else {
		e.Release()
	}
	// 0 evicts 1, which is held: its slot is not reused while held, and the
	// other holds 2, so 0 is bound unpacked.
	e0 := bind(0, false)
	closeTo(t, "held expert 1 after its eviction", expertOut(d, held, x, 1), es[1].want, 2e-3)
	held.Release() // 1's slot is free now
	// 3 evicts 2 and gets a slot.
	bind(3, true).Release()
	e0.Release()
	if c := d.xc; c.slots != 2 || len(c.byKey) > 2 {
		t.Fatalf("%d slots allocated, %d experts cached; want 2, at most 2", c.slots, len(c.byKey))
	}
	st := d.ExpertCacheStats()
	if st.Misses != 5 || st.Hits != 1 || st.Evictions != 3 {
		t.Fatalf("stats %+v: want 5 misses, 1 hit, 3 evictions", st)
	}
	// Every cached expert still computes its own result.
	for i := range es {
		if e, ok := d.CachedExpert(key(i)); ok {
			closeTo(t, fmt.Sprintf("cached expert %d", i), expertOut(d, e, x, 1), es[i].want, 2e-3)
			e.Release()
		}
	}
}

// TestExpertCacheConcurrent: goroutines bind, look up, compute and release
// six experts through a cache of three slots at once (run with -race); every
// result matches the expert's unpacked one.
func TestExpertCacheConcurrent(t *testing.T) {
	if !packedCacheOn() {
		t.Skip("no packed experts here (needs AVX-512 VNNI; FM_ROWPACK, FM_ROWPACK_EXPERTS)")
	}
	r := rand.New(rand.NewPCG(45, 46))
	const H, I, N = 128, 64, 6
	ref := cacheDevice(t, 2, 0)
	x, _ := ref.NewTensor(2, H)
	ref.Upload(x, randomVector(r, 2*H))
	ls, files, wants := make([]*backend.ExpertLayout, N), make([][]byte, N), make([][]float32, N)
	for i := range ls {
		ls[i], files[i] = randomExpertFile(r, H, I, 4)
		e, err := ref.BindExpert(ls[i], files[i])
		if err != nil {
			t.Fatal(err)
		}
		wants[i] = expertOut(ref, e, x, 2)
		e.Release()
	}
	d := cacheDevice(t, 2, int64(3*slotBytes(ls[0])))
	var wg sync.WaitGroup
	errs := make(chan string, 4)
	for g := 0; g < 4; g++ {
		wg.Go(func() {
			rg := rand.New(rand.NewPCG(uint64(g), 47))
			for it := 0; it < 60; it++ {
				i := rg.IntN(N)
				k := backend.ExpertKey{Owner: 9, ID: i}
				e, ok := d.CachedExpert(k)
				if !ok {
					var err error
					if e, err = d.BindExpertCached(k, ls[i], files[i]); err != nil {
						errs <- err.Error()
						return
					}
				}
				got := expertOut(d, e, x, 2)
				e.Release()
				var mag float64
				for _, v := range wants[i] {
					mag = max(mag, math.Abs(float64(v)))
				}
				for j := range got {
					if math.Abs(float64(got[j]-wants[i][j])) > 2e-3*mag {
						errs <- fmt.Sprintf("goroutine %d expert %d element %d: %g, want %g", g, i, j, got[j], wants[i][j])
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
	st := d.ExpertCacheStats()
	if st.Hits == 0 || st.Misses < N || d.xc.slots > 3 {
		t.Fatalf("stats %+v, %d slots: want hits, at least %d misses, at most 3 slots", st, d.xc.slots, N)
	}
}

// TestExpertCacheOff: outside int8 mode, without a budget, or for a layout
// the packed kernels do not take (5-bit, bf16), the cache holds nothing:
// CachedExpert misses, BindExpertCached binds unpacked, the counters and
// budget stay 0, and TakeRAMBudget refuses.
func TestExpertCacheOff(t *testing.T) {
	r := rand.New(rand.NewPCG(48, 49))
	l4, f4 := randomExpertFile(r, 128, 64, 4)
	l5, f5 := randomExpertFile(r, 128, 64, 5)
	l16, f16 := randomExpertFile(r, 128, 64, 16)
	for _, tc := range []struct {
		name   string
		mode   backend.Matmul
		budget int64
		l      *backend.ExpertLayout
		file   []byte
	}{
		{"exact", backend.MatmulExact, 1 << 30, l4, f4},
		{"no budget", backend.MatmulInt8, 0, l4, f4},
		{"5-bit", backend.MatmulInt8, 1 << 30, l5, f5},
		{"bf16", backend.MatmulInt8, 1 << 30, l16, f16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := OpenDevice(backend.Options{Threads: 2, Matmul: tc.mode, ExpertCacheBytes: tc.budget})
			if err != nil {
				t.Fatal(err)
			}
			if tc.budget > 0 && d.TakeRAMBudget(tc.l, 1<<20) {
				t.Fatal("TakeRAMBudget took a budget it cannot use")
			}
			k := backend.ExpertKey{Owner: 3}
			for range 2 {
				e, err := d.BindExpertCached(k, tc.l, tc.file)
				if err != nil {
					t.Fatal(err)
				}
				if e.(*expert).slot != nil {
					t.Fatal("bound packed")
				}
				e.Release()
				if _, ok := d.CachedExpert(k); ok {
					t.Fatal("CachedExpert hit")
				}
			}
			if st := d.ExpertCacheStats(); st.Hits+st.Misses+st.Evictions+st.UploadBytes+st.Budget != 0 || d.xc.slots != 0 {
				t.Fatalf("stats %+v, %d slots: want nothing", st, d.xc.slots)
			}
		})
	}
}

// TestTakeRAMBudget: in int8 mode on a VNNI CPU the device takes a budget
// for 4-bit experts once, before the first bind, and reports it.
func TestTakeRAMBudget(t *testing.T) {
	r := rand.New(rand.NewPCG(50, 51))
	l, file := randomExpertFile(r, 128, 64, 4)
	d := cacheDevice(t, 2, 0)
	took := d.TakeRAMBudget(l, 3*int64(slotBytes(l)))
	if took != packedCacheOn() {
		t.Fatalf("TakeRAMBudget %v on a machine where packed experts are %v", took, packedCacheOn())
	}
	if !took {
		return
	}
	if st := d.ExpertCacheStats(); st.Budget != 3*int64(slotBytes(l)) {
		t.Fatalf("budget %d, want %d", st.Budget, 3*slotBytes(l))
	}
	e, err := d.BindExpertCached(backend.ExpertKey{Owner: 4}, l, file)
	if err != nil {
		t.Fatal(err)
	}
	e.Release()
	if d.TakeRAMBudget(l, 1<<30) {
		t.Fatal("TakeRAMBudget after the first bind")
	}
	if d.xc.maxSlots != 3 {
		t.Fatalf("%d slots, want 3", d.xc.maxSlots)
	}
}

// BenchmarkExpertCacheAB alternates one layer step of 8 of 128 4-bit experts
// of Qwen3-30B-A3B's shape (H 2048, I 768; 340 MB, beyond the caches)
// through ExpertFFNs in int8 mode, bound unpacked (the row kernels) and
// through the packed cache, step by step: "speedup" is the median of
// unpacked time / packed time over the pairs, with each one's best in GB/s
// of expert bytes. n is the tokens per expert (1: decode; 32: a 512-token
// prefill chunk's average with K = 8 of 128).
func BenchmarkExpertCacheAB(b *testing.B) {
	if !packedCacheOn() {
		b.Skip("no packed experts here")
	}
	const H, I, K, N = 2048, 768, 8, 128
	r := rand.New(rand.NewPCG(1, 2))
	plain := cacheDevice(b, 0, 0)
	packed := cacheDevice(b, 0, 1<<40)
	var ep, eq [N]backend.Expert
	for i := range N {
		l, file := randomExpertFile(r, H, I, 4)
		var err error
		if ep[i], err = plain.BindExpert(l, file); err != nil {
			b.Fatal(err)
		}
		if eq[i], err = packed.BindExpertCached(backend.ExpertKey{Owner: 1, ID: i}, l, file); err != nil {
			b.Fatal(err)
		}
	}
	bytes := float64(K) * float64(3*H*I/2+3*H*I/64*4)
	for _, n := range []int{1, 32} {
		b.Run(fmt.Sprintf("n%d", n), func(b *testing.B) {
			x, _ := plain.NewTensor(n, H)
			plain.Upload(x, randomVector(r, n*H))
			out, _ := plain.NewTensor(n, H)
			rows, ws := make([][]int, K), make([][]float32, K)
			for k := range rows {
				for t := 0; t < n; t++ {
					rows[k], ws[k] = append(rows[k], t), append(ws[k], 0.125)
				}
			}
			pairedAB(b, bytes, "GB/s-rows-best", "GB/s-packed-best", "speedup", func(i int) {
				o := (2 * i * K) % N
				plain.ExpertFFNs(out, x, ep[o:o+K], rows, ws)
			}, func(i int) {
				o := ((2*i + 1) * K) % N
				packed.ExpertFFNs(out, x, eq[o:o+K], rows, ws)
			})
		})
	}
}
