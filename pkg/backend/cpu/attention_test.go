package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/fm-moe/fm/pkg/backend"
)

// attendNaive is the attention core as it was before blocking: one (token,
// head) at a time, a Dot per key, the float64-exp softmax, an Axpy per value.
// It is the reference attendCausal is compared with, parallel as it was.
func (d *Device) attendNaive(o, q, gate, keys, vals []float32, nH, nKV, D, T, pos0 int) {
	kvDim, attnDim := nKV*D, nH*D
	scale := float32(1 / math.Sqrt(float64(D)))
	group := nH / nKV
	n := pos0 + T
	d.pool.For(T*nH, n*D*2, func(lo, hi int) {
		scores := make([]float32, n)
		for idx := lo; idx < hi; idx++ {
			t, h := idx/nH, idx%nH
			g := h / group
			qh := q[t*attnDim+h*D : t*attnDim+(h+1)*D]
			sc := scores[:pos0+t+1]
			for s := range sc {
				sc[s] = Dot(qh, keys[s*kvDim+g*D:s*kvDim+(g+1)*D]) * scale
			}
			softmaxRef(sc)
			oh := o[t*attnDim+h*D : t*attnDim+(h+1)*D]
			clear(oh)
			for s, p := range sc {
				Axpy(oh, p, vals[s*kvDim+g*D:s*kvDim+(g+1)*D])
			}
			if gate != nil {
				gh := gate[t*attnDim+h*D : t*attnDim+(h+1)*D]
				for i := range oh {
					oh[i] *= Sigmoid(gh[i])
				}
			}
		}
	})
}

// attnShape is an attention layer's geometry for the tests.
type attnShape struct {
	nH, nKV, D int
	gated      bool
}

func (a attnShape) attnDim() int { return a.nH * a.D }
func (a attnShape) kvDim() int   { return a.nKV * a.D }

type attnInputs struct{ q, gate, keys, vals []float32 }

// view is the inputs' cache as attendCausal reads it: as generated,
// [positions, KVHeads·D], or regrouped as a layerState keeps it, each KV
// head's positions together, with room for 3 more positions.
func (in attnInputs) view(m attnShape, byHead bool) kvView {
	if !byHead {
		return kvView{in.keys, in.vals, m.D, m.kvDim()}
	}
	n := len(in.keys) / m.kvDim()
	k, v := make([]float32, m.nKV*(n+3)*m.D), make([]float32, m.nKV*(n+3)*m.D)
	l := layerState{k: k, v: v}
	l.appendKV(in.keys, in.vals, n, n+3, m.nKV, m.D)
	return kvView{k, v, (n + 3) * m.D, m.D}
}

func randAttnInputs(r *rand.Rand, m attnShape, T, pos0 int) attnInputs {
	f := func(n int, s float64) []float32 {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(r.NormFloat64() * s)
		}
		return x
	}
	// Larger q makes the softmax peaked, as after q/k RMSNorm in real models.
	in := attnInputs{f(T*m.attnDim(), 3), f(T*m.attnDim(), 1), f((pos0+T)*m.kvDim(), 1), f((pos0+T)*m.kvDim(), 1)}
	if !m.gated {
		in.gate = nil
	}
	return in
}

// TestAttendCausalMatchesNaive compares the blocked attention with the
// per-(token, head) loop on random inputs: several query and key blocks, a
// partial last block, a prefix already in the cache (pos0 > 0), decode (T = 1),
// GQA groups of 1, 2 and 4, head dims that are and are not multiples of 16.
func TestAttendCausalMatchesNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for _, tc := range []struct {
		nH, nKV, D, T, pos0 int
		gated               bool
	}{
		{4, 2, 64, 150, 0, true},
		{4, 2, 64, 1, 200, true},
		{4, 4, 64, 37, 70, false},
		{8, 2, 128, 70, 5, true},
		{2, 1, 40, 33, 64, false},
		{4, 1, 24, 17, 0, true},
		{8, 2, 128, 5, 61, true}, // untransposed keys, rows ending in different score blocks
		// Groups of 4 and 8 heads scored four at a time (DotHeads4): decode
		// past scoreBlockFrom, a short step across score blocks, a head
		// dim the AVX-512 kernel does not take.
		{32, 4, 128, 1, 600, false},
		{16, 4, 64, 3, 517, true},
		{8, 2, 24, 2, 40, false},
		// ... and prefills through the transposed keys: partial key
		// blocks, a prefix in the cache.
		{32, 4, 128, 40, 100, false},
		{16, 4, 64, 70, 0, true},
		{4, 2, 64, 3, 30, false},
	} {
		name := fmt.Sprintf("nH%d_nKV%d_D%d_T%d_pos%d", tc.nH, tc.nKV, tc.D, tc.T, tc.pos0)
		t.Run(name, func(t *testing.T) {
			m := attnShape{tc.nH, tc.nKV, tc.D, tc.gated}
			d := NewDevice(0)
			in := randAttnInputs(r, m, tc.T, tc.pos0)
			want := make([]float32, tc.T*m.attnDim())
			d.attendNaive(want, in.q, in.gate, in.keys, in.vals, m.nH, m.nKV, m.D, tc.T, tc.pos0)
			for _, byHead := range []bool{false, true} {
				got := make([]float32, tc.T*m.attnDim())
				d.attendCausal(got, in.q, in.gate, in.view(m, byHead), m.nH, m.nKV, m.D, tc.T, tc.pos0)
				var num, den float64
				for i := range want {
					d := float64(got[i] - want[i])
					num += d * d
					den += float64(want[i]) * float64(want[i])
				}
				if rel := math.Sqrt(num / den); rel > 1e-6 || math.IsNaN(rel) {
					t.Errorf("cache by KV head %v: relative error %.3g vs the naive loop, want ≤ 1e-6", byHead, rel)
				} else {
					t.Logf("cache by KV head %v: relative error %.3g vs the naive loop", byHead, rel)
				}
			}
		})
	}
}

// TestDecodeSplitMatchesWhole checks that a decode step whose KV heads are
// split over more workers (decodeSplit) computes every output bit for bit as
// one unit per KV head does, for groups of 8, 12 and 16 query heads, gated
// and not, with the cache both ways.
func TestDecodeSplitMatchesWhole(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	one, many := NewDevice(1), NewDevice(16)
	for _, tc := range []struct {
		nH, nKV, D, pos0 int
		gated            bool
		split            int // decodeSplit at 16 workers
	}{
		{32, 4, 128, 600, false, 2}, // Qwen3-30B-A3B, past scoreBlockFrom
		{32, 4, 128, 37, true, 2},
		{32, 2, 128, 300, true, 4}, // Qwen3.5-397B: 2 KV heads, groups of 16
		{24, 2, 64, 90, false, 3},  // groups of 12: three parts of four
		{16, 1, 64, 10, true, 4},
	} {
		name := fmt.Sprintf("nH%d_nKV%d_D%d_pos%d", tc.nH, tc.nKV, tc.D, tc.pos0)
		t.Run(name, func(t *testing.T) {
			group := tc.nH / tc.nKV
			if s := decodeSplit(1, tc.nKV, group, many.pool.Workers()); s != tc.split {
				t.Fatalf("decodeSplit = %d at 16 workers, want %d", s, tc.split)
			}
			if s := decodeSplit(1, tc.nKV, group, one.pool.Workers()); s != 1 {
				t.Fatalf("decodeSplit = %d at one worker, want 1", s)
			}
			m := attnShape{tc.nH, tc.nKV, tc.D, tc.gated}
			in := randAttnInputs(r, m, 1, tc.pos0)
			for _, byHead := range []bool{false, true} {
				want := make([]float32, m.attnDim())
				got := make([]float32, m.attnDim())
				one.attendCausal(want, in.q, in.gate, in.view(m, byHead), m.nH, m.nKV, m.D, 1, tc.pos0)
				many.attendCausal(got, in.q, in.gate, in.view(m, byHead), m.nH, m.nKV, m.D, 1, tc.pos0)
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("cache by KV head %v: output %d (head %d) = %v split, %v whole", byHead, i, i/m.D, got[i], want[i])
					}
				}
			}
		})
	}
	// Prefills, groups that are not a multiple of four and no more workers
	// than KV heads keep one unit per KV head; parts are equal whole fours.
	for _, c := range [][5]int{
		{2, 4, 8, 16, 1}, {1, 4, 6, 16, 1}, {1, 4, 8, 4, 1}, {1, 2, 16, 2, 1},
		{1, 2, 16, 6, 2}, {1, 4, 20, 8, 1}, {1, 2, 20, 16, 5}, {1, 4, 16, 5, 2},
	} {
		if s := decodeSplit(c[0], c[1], c[2], c[3]); s != c[4] {
			t.Errorf("decodeSplit(T %d, nKV %d, group %d, workers %d) = %d, want %d", c[0], c[1], c[2], c[3], s, c[4])
		}
	}
}

// BenchmarkAttendCausal is the attention core of one tiny-code layer (4 heads,
// 2 KV heads, D 64) prefilling 2048 tokens, blocked and naive.
func BenchmarkAttendCausal(b *testing.B) {
	const T = 2048
	m := attnShape{4, 2, 64, true}
	d := NewDevice(0)
	in := randAttnInputs(rand.New(rand.NewPCG(1, 2)), m, T, 0)
	o := make([]float32, T*m.attnDim())
	for _, bc := range []struct {
		name string
		fn   func(o, q, gate, keys, vals []float32, nH, nKV, D, T, pos0 int)
	}{{"blocked", func(o, q, gate, keys, vals []float32, nH, nKV, D, T, pos0 int) {
		d.attendCausal(o, q, gate, in.view(m, true), nH, nKV, D, T, pos0)
	}}, {"naive", d.attendNaive}} {
		b.Run(bc.name, func(b *testing.B) {
			for range b.N {
				bc.fn(o, in.q, in.gate, in.keys, in.vals, m.nH, m.nKV, m.D, T, 0)
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/layer")
		})
	}
}

// BenchmarkAttendDecode is the attention core of one decode step of a
// Qwen3-30B-A3B layer (32 query heads, 4 KV heads, D 128) at several
// positions: the keys and values are read from L2 or DRAM, and the score
// loop's key blocks decide how often.
func BenchmarkAttendDecode(b *testing.B) {
	m := attnShape{32, 4, 128, false}
	d := NewDevice(0)
	for _, pos := range []int{256, 1024, 4096} {
		in := randAttnInputs(rand.New(rand.NewPCG(3, 4)), m, 1, pos)
		kv := in.view(m, true)
		o := make([]float32, m.attnDim())
		b.Run(fmt.Sprintf("pos%d", pos), func(b *testing.B) {
			b.SetBytes(int64(2 * (pos + 1) * m.kvDim() * 4)) // the K and V caches
			for range b.N {
				d.attendCausal(o, in.q, in.gate, kv, m.nH, m.nKV, m.D, 1, pos)
			}
		})
	}
}

// TestAppendKVByHead appends steps of several lengths (a prefill, decode
// steps, chunks crossing growths) to a state of two attention layers of
// different shapes around a delta-net layer, and checks that every position of
// every KV head is where kvView says, before and after growth, after a Reset,
// and in a Clone, whose caches are exactly as long as they hold.
func TestAppendKVByHead(t *testing.T) {
	shapes := []attnShape{{nKV: 3, D: 8}, {nKV: 2, D: 16}}
	s := &state{specs: []backend.LayerSpec{
		{Attention: &backend.AttentionParams{KVHeads: 3, HeadDim: 8}},
		{DeltaNet: &backend.DeltaNetParams{}},
		{Attention: &backend.AttentionParams{KVHeads: 2, HeadDim: 16}},
	}, layers: make([]layerState, 3)}
	r := rand.New(rand.NewPCG(5, 6))
	for round := 0; round < 2; round++ {
		s.Reset()
		appended := [2][2][]float32{} // [layer][keys, values]: [positions, nKV·D]
		for _, T := range []int{5, 1, 1, 4, 7, 1, 20} {
			for i, li := range []int{0, 2} {
				m := shapes[i]
				kt, vt := make([]float32, T*m.kvDim()), make([]float32, T*m.kvDim())
				for j := range kt {
					kt[j], vt[j] = r.Float32(), r.Float32()
				}
				l := &s.layers[li]
				s.reserveKV(l.kvLen + T)
				l.appendKV(kt, vt, T, s.kvCap, m.nKV, m.D)
				appended[i][0], appended[i][1] = append(appended[i][0], kt...), append(appended[i][1], vt...)
			}
			c, err := s.Clone()
			if err != nil {
				t.Fatal(err)
			}
			n := len(appended[0][0]) / shapes[0].kvDim()
			if want := int64(2*n*(shapes[0].kvDim()+shapes[1].kvDim())) * 4; c.Bytes() != want {
				t.Errorf("after %d positions: clone holds %d bytes, want %d", n, c.Bytes(), want)
			}
			for _, st := range []*state{s, c.(*state)} {
				for i, li := range []int{0, 2} {
					m, ls := shapes[i], st.layers[li]
					if ls.kvLen != n || len(ls.k) != m.nKV*st.kvCap*m.D {
						t.Fatalf("layer %d: %d positions, capacity %d, %d floats: want %d positions", li, ls.kvLen, st.kvCap, len(ls.k), n)
					}
					kv := kvView{ls.k, ls.v, st.kvCap * m.D, m.D}
					for p := 0; p < n; p++ {
						for g := 0; g < m.nKV; g++ {
							at, want := g*kv.head+p*kv.pos, (p*m.nKV+g)*m.D
							if !slices.Equal(kv.k[at:at+m.D], appended[i][0][want:want+m.D]) || !slices.Equal(kv.v[at:at+m.D], appended[i][1][want:want+m.D]) {
								t.Fatalf("layer %d: position %d of KV head %d moved (capacity %d)", li, p, g, st.kvCap)
							}
						}
					}
				}
			}
		}
	}
}

// TestReserveKV: Reserve makes room for exactly the positions asked at once,
// keeps what the caches hold, and never shrinks them; Attention's own growth
// then has nothing to do.
func TestReserveKV(t *testing.T) {
	const nKV, D = 2, 16
	d := NewDevice(1)
	st, err := d.NewState([]backend.LayerSpec{{Attention: &backend.AttentionParams{KVHeads: nKV, HeadDim: D}}})
	if err != nil {
		t.Fatal(err)
	}
	s := st.(*state)
	var _ backend.Reserver = s
	kt := make([]float32, 3*nKV*D)
	for i := range kt {
		kt[i] = float32(i)
	}
	s.reserveKV(3)
	s.layers[0].appendKV(kt, kt, 3, s.kvCap, nKV, D)
	for _, tc := range []struct{ reserve, wantCap int }{{10, 10}, {8, 10}, {2, 10}, {25, 25}} {
		if err := s.Reserve(tc.reserve); err != nil {
			t.Fatal(err)
		}
		if s.kvCap != tc.wantCap || s.Bytes() != int64(2*nKV*tc.wantCap*D*4) {
			t.Errorf("Reserve(%d): capacity %d, %d bytes; want capacity %d", tc.reserve, s.kvCap, s.Bytes(), tc.wantCap)
		}
		l := s.layers[0]
		for p := 0; p < 3; p++ {
			for g := 0; g < nKV; g++ {
				at, want := (g*s.kvCap+p)*D, (p*nKV+g)*D
				if !slices.Equal(l.k[at:at+D], kt[want:want+D]) {
					t.Fatalf("Reserve(%d): position %d of KV head %d moved", tc.reserve, p, g)
				}
			}
		}
	}
	s.reserveKV(25) // a step within the reservation: no growth
	if s.kvCap != 25 {
		t.Errorf("a step within the reservation grew the caches to %d", s.kvCap)
	}
	// A request for far more than it will use gets kvReserveMax bytes.
	if got, want := s.reservable(1<<40), kvReserveMax/(2*nKV*D*4); got != want {
		t.Errorf("Reserve(2^40) would make room for %d positions, want the cap's %d", got, want)
	}
}

// BenchmarkAttendPrefill is the attention core of a 512-token prefill chunk
// of a Qwen3-30B-A3B layer (32 query heads, 4 KV heads, D 128): transposed
// keys, query heads scored and summed four at a time, a partial key block at
// the end of every row.
func BenchmarkAttendPrefill(b *testing.B) {
	const T = 512
	m := attnShape{32, 4, 128, false}
	d := NewDevice(0)
	in := randAttnInputs(rand.New(rand.NewPCG(3, 4)), m, T, 0)
	kv := in.view(m, true)
	o := make([]float32, T*m.attnDim())
	for range b.N {
		d.attendCausal(o, in.q, in.gate, kv, m.nH, m.nKV, m.D, T, 0)
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/layer")
}
