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
// [positions, KVHeads·D], or regrouped as layerState keeps it, each KV head's
// positions together with room for 3 more positions.
func (in attnInputs) view(m attnShape, byHead bool) kvView {
	if !byHead {
		return kvView{in.keys, in.vals, m.D, m.kvDim()}
	}
	n := len(in.keys) / m.kvDim()
	var l layerState
	l.appendKV(in.keys, in.vals, n, m.nKV, m.D)
	l.k = regroupKV(l.k, n, l.kvCap, n+3, m.nKV, m.D)
	l.v = regroupKV(l.v, n, l.kvCap, n+3, m.nKV, m.D)
	return kvView{l.k, l.v, (n + 3) * m.D, m.D}
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
// steps, a chunk crossing a doubling) and checks that every position of every
// KV head is where kvView says, before and after growth and in a Clone, whose
// cache is exactly as long as it holds.
func TestAppendKVByHead(t *testing.T) {
	const nKV, D = 3, 8
	r := rand.New(rand.NewPCG(5, 6))
	var l layerState
	var keys, vals []float32 // [positions, nKV·D], as appended
	for _, T := range []int{5, 1, 1, 4, 7, 1, 20} {
		kt, vt := make([]float32, T*nKV*D), make([]float32, T*nKV*D)
		for i := range kt {
			kt[i], vt[i] = r.Float32(), r.Float32()
		}
		l.appendKV(kt, vt, T, nKV, D)
		keys, vals = append(keys, kt...), append(vals, vt...)
		s := &state{specs: []backend.LayerSpec{{Attention: &backend.AttentionParams{KVHeads: nKV, HeadDim: D}}}, layers: []layerState{l}}
		c, err := s.Clone()
		if err != nil {
			t.Fatal(err)
		}
		cl := c.(*state).layers[0]
		if want := int64(2 * len(keys) * 4); c.Bytes() != want {
			t.Errorf("after %d positions: clone holds %d bytes, want %d", l.kvLen, c.Bytes(), want)
		}
		for _, ls := range []layerState{l, cl} {
			if ls.kvLen != len(keys)/(nKV*D) || len(ls.k) != nKV*ls.kvCap*D {
				t.Fatalf("cache of %d positions, capacity %d, %d floats: want %d positions", ls.kvLen, ls.kvCap, len(ls.k), len(keys)/(nKV*D))
			}
			kv := kvView{ls.k, ls.v, ls.kvCap * D, D}
			for s := 0; s < ls.kvLen; s++ {
				for g := 0; g < nKV; g++ {
					at := g*kv.head + s*kv.pos
					want := keys[(s*nKV+g)*D:][:D]
					if !slices.Equal(kv.k[at:at+D], want) || !slices.Equal(kv.v[at:at+D], vals[(s*nKV+g)*D:][:D]) {
						t.Fatalf("position %d of KV head %d moved (capacity %d)", s, g, ls.kvCap)
					}
				}
			}
		}
	}
}
