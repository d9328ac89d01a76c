//go:build cuda && linux

package cuda

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/fm-moe/fm/pkg/backend"
)

// deltaRuleCase is one delta-rule launch's inputs on the device, with the
// float64 reference holding the same state.
type deltaRuleCase struct {
	p                  *backend.DeltaNetParams
	ref                *deltaRef
	negA, dtBias, norm backend.Tensor
}

// newDeltaRuleCase draws a layer's gates as the golden models have them:
// A = e^{A_log} log-uniform in [aLo, aHi] (NegA = −A), dt_bias in ±1, so that
// with a in ±2 the decay α = e^{−A·softplus(a + dt_bias)}; q̂, k̂, v come
// from deltaRows.
func newDeltaRuleCase(t *testing.T, bd backend.Device, r *rand.Rand, nk, nv, dk, dv int, aLo, aHi float64) *deltaRuleCase {
	p := &backend.DeltaNetParams{KeyHeads: nk, ValueHeads: nv, KeyDim: dk, ValueDim: dv, ConvKernel: 4, Eps: 1e-6}
	negA, dt, norm := make([]float32, nv), randVec(r, nv, 1), randVec(r, dv, 1)
	for j := range negA {
		negA[j] = -float32(aLo * math.Pow(aHi/aLo, r.Float64()))
	}
	ref := &deltaRef{p: p, negA: f64s(negA), dtBias: f64s(dt), norm: f64s(norm)}
	for range nv {
		ref.S = append(ref.S, make([]float64, dk*dv))
	}
	return &deltaRuleCase{p: p, ref: ref, negA: upload(t, bd, 1, nv, negA), dtBias: upload(t, bd, 1, nv, dt),
		norm: upload(t, bd, 1, dv, norm)}
}

// deltaRows draws T conv output rows as the delta rule sees them: q̂ =
// q/‖q‖·dk^−½ and k̂ = k/‖k‖ per key head, then v.
func deltaRows(r *rand.Rand, p *backend.DeltaNetParams, T int) []float32 {
	nk, dk, cc := p.KeyHeads, p.KeyDim, p.Channels()
	x := make([]float32, T*cc)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	for t := 0; t < T; t++ {
		for h := 0; h < 2*nk; h++ {
			v := x[t*cc+h*dk : t*cc+(h+1)*dk]
			var ss float64
			for _, e := range v {
				ss += float64(e) * float64(e)
			}
			scale := 1 / math.Sqrt(ss+1e-6)
			if h < nk {
				scale /= math.Sqrt(float64(dk))
			}
			for i := range v {
				v[i] = float32(float64(v[i]) * scale)
			}
		}
	}
	return x
}

// rules is the float64 delta rule and gated norm of T rows of normalized
// conv output (no conv), the heads in parallel.
func (r *deltaRef) rules(qkv, z, b, a []float32, T int) []float64 {
	cc, nv, vd := r.p.Channels(), r.p.ValueHeads, r.p.ValueHeads*r.p.ValueDim
	u := f64s(qkv)
	out := make([]float64, T*vd)
	var wg sync.WaitGroup
	for j := 0; j < nv; j++ {
		wg.Go(func() {
			for t := 0; t < T; t++ {
				r.rule(j, u[t*cc:(t+1)*cc], z[t*vd:(t+1)*vd], b[t*nv:(t+1)*nv], a[t*nv:(t+1)*nv], out[t*vd:(t+1)*vd])
			}
		})
	}
	wg.Wait()
	return out
}

// args returns the launch of T rows on state S into core.
func (c *deltaRuleCase) args(g *gpu, core, S, qkv, z, b, a backend.Tensor, T int) *DeltaRuleArgs {
	p := c.p
	return &DeltaRuleArgs{Core: g.tt(core, "core").ptr, S: g.tt(S, "S").ptr, QKV: g.tt(qkv, "qkv").ptr, B: g.tt(b, "b").ptr,
		A: g.tt(a, "a").ptr, Z: g.tt(z, "z").ptr, NegA: g.tt(c.negA, "NegA").ptr, DtBias: g.tt(c.dtBias, "DtBias").ptr,
		NormW: g.tt(c.norm, "Norm").ptr, T: T, NK: p.KeyHeads, NV: p.ValueHeads, DK: p.KeyDim, DV: p.ValueDim,
		LdQKV: p.Channels(), LdBA: p.ValueHeads, LdZ: p.ValueHeads * p.ValueDim, Eps: p.Eps}
}

// TestDeltaRuleChunked runs delta_rule_chunked against the token-by-token
// delta_rule and the float64 reference: one and several chunks, partial
// last chunks, T below one chunk, from a zero state and then continuing from
// the state the first call left; dk = dv in {128, 64}; grouped and equal key
// and value heads; realistic decays (α in (0.3, 1)) and strong ones (α near
// 0, products of α under 1e-30: the tinyDecay cut-offs).
func TestDeltaRuleChunked(t *testing.T) {
	bd := openGPU(t)
	g := bd.(*gpu)
	r := rand.New(rand.NewPCG(61, 62))
	for _, dk := range []int{128, 64} {
		for _, h := range []struct{ nk, nv int }{{16, 32}, {16, 64}, {8, 8}} {
			for _, gate := range []struct {
				name   string
				lo, hi float64
			}{{"realistic", 0.01, 0.35}, {"strong", 5, 60}} {
				for _, T := range []int{16, 63, 64, 65, 200, 512} {
					t.Run(fmt.Sprintf("dk%d_nk%d_nv%d_%s_T%d", dk, h.nk, h.nv, gate.name, T), func(t *testing.T) {
						testDeltaRuleChunked(t, bd, g, r, newDeltaRuleCase(t, bd, r, h.nk, h.nv, dk, dk, gate.lo, gate.hi), T)
					})
				}
			}
		}
	}
}

func testDeltaRuleChunked(t *testing.T, bd backend.Device, g *gpu, r *rand.Rand, c *deltaRuleCase, T int) {
	p := c.p
	nv, dk, dv, vd := p.ValueHeads, p.KeyDim, p.ValueDim, p.ValueHeads*p.ValueDim
	if !g.d.ChunkedDeltaRule(deltaChunk, dk) && !debugNoChunk {
		t.Fatalf("the chunked delta rule does not fit dk = %d on this device", dk)
	}
	sRec, sChk := upload(t, bd, nv*dk, dv, make([]float32, nv*dk*dv)), upload(t, bd, nv*dk, dv, make([]float32, nv*dk*dv))
	for call := range 2 {
		qkv, z, b, a := deltaRows(r, p, T), randVec(r, T*vd, 1), randVec(r, T*nv, 2), randVec(r, T*nv, 2)
		want := c.ref.rules(qkv, z, b, a, T)
		tq, tz, tb, ta := upload(t, bd, T, p.Channels(), qkv), upload(t, bd, T, vd, z), upload(t, bd, T, nv, b), upload(t, bd, T, nv, a)
		oRec, _ := bd.NewTensor(T, vd)
		oChk, _ := bd.NewTensor(T, vd)
		g.d.DeltaRule(c.args(g, oRec, sRec, tq, tz, tb, ta, T))
		g.d.DeltaRuleChunked(c.args(g, oChk, sChk, tq, tz, tb, ta, T))
		rec, chk := download(t, bd, oRec), download(t, bd, oChk)
		sr, sc := download(t, bd, sRec), download(t, bd, sChk)
		var sWant []float64
		for _, s := range c.ref.S {
			sWant = append(sWant, s...)
		}
		what := fmt.Sprintf("call %d", call+1)
		// The chunked form against the recurrence: the CPU's tolerance
		// (TestChunkedDeltaRuleMatchesRecurrence); each against float64 at
		// the float32 error the recurrence itself has over 512 tokens.
		eo := compare(t, what+" output, chunked vs recurrent", chk, f64s(rec), 2e-6)
		es := compare(t, what+" state, chunked vs recurrent", sc, f64s(sr), 2e-6)
		eoR := compare(t, what+" output, recurrent vs float64", rec, want, 1e-5)
		eoC := compare(t, what+" output, chunked vs float64", chk, want, 1e-5)
		esR := compare(t, what+" state, recurrent vs float64", sr, sWant, 1e-5)
		esC := compare(t, what+" state, chunked vs float64", sc, sWant, 1e-5)
		t.Logf("%s: chunked vs recurrent: output %.3g, state %.3g; vs float64: output recurrent %.3g chunked %.3g, state recurrent %.3g chunked %.3g",
			what, eo, es, eoR, eoC, esR, esC)
		for _, x := range []backend.Tensor{tq, tz, tb, ta, oRec, oChk} {
			x.Release()
		}
	}
	for _, x := range []backend.Tensor{sRec, sChk, c.negA, c.dtBias, c.norm} {
		x.Release()
	}
}

// TestMeasureDeltaRule prints (FM_CUDA_MEASURE=1) the delta rule of one
// GatedDeltaNet layer for Qwen3.5-397B-A17B (nk = 16, nv = 64) and
// Qwen3-Next-80B-A3B (nk = 16, nv = 32) shapes, dk = dv = 128, at T = 512 (a
// prefill chunk) and shorter calls (where the recurrence might still win:
// DeltaNet switches at T ≥ 64): token by token (delta_rule) and chunked
// (delta_rule_chunked + gated_norm_heads), each as device time and as TFLOPS
// of the recurrence's 4·dk·dv FMAs a token and head against the FMA ceiling
// of the same run.
func TestMeasureDeltaRule(t *testing.T) {
	bd, g, d := openMeasured(t)
	peak := fmaPeak(t, d)
	const Tmax, dk, dv = 512, 128, 128
	r := rand.New(rand.NewPCG(71, 72))
	for _, m := range []struct {
		name   string
		nk, nv int
	}{{"Qwen3.5-397B", 16, 64}, {"Qwen3-Next-80B", 16, 32}} {
		c := newDeltaRuleCase(t, bd, r, m.nk, m.nv, dk, dv, 0.01, 0.35)
		p := c.p
		vd := m.nv * dv
		tq, tz := upload(t, bd, Tmax, p.Channels(), deltaRows(r, p, Tmax)), upload(t, bd, Tmax, vd, randVec(r, Tmax*vd, 1))
		tb, ta := upload(t, bd, Tmax, m.nv, randVec(r, Tmax*m.nv, 2)), upload(t, bd, Tmax, m.nv, randVec(r, Tmax*m.nv, 2))
		S, _ := bd.NewTensor(m.nv*dk, dv)
		o, _ := bd.NewTensor(Tmax, vd)
		// The causal conv before it (conv_silu: a thread a channel walking
		// the tokens in order), for scale: the other sequential kernel of
		// the mixer. It runs on a copy of the rows (it works in place).
		const kc = 4
		cc := p.Channels()
		xc := upload(t, bd, Tmax, cc, randVec(r, Tmax*cc, 1))
		cw, cst := upload(t, bd, cc, kc, randVec(r, cc*kc, 0.5)), upload(t, bd, kc-1, cc, make([]float32, (kc-1)*cc))
		conv := medianDevice(t, d, 9, func() {
			d.ConvSiLU(g.tt(xc, "x").ptr, cc, g.tt(cst, "state").ptr, g.tt(cw, "w").ptr, Tmax, cc, kc)
		})
		t.Logf("CONV %s: conv_silu over %d channels, T=%d: %.1f µs", m.name, cc, Tmax, float64(conv.Nanoseconds())/1e3)
		for _, T := range []int{16, 32, 64, 128, 512} {
			args := c.args(g, o, S, tq, tz, tb, ta, T)
			rec := medianDevice(t, d, 9, func() { d.DeltaRule(args) })
			chk := medianDevice(t, d, 9, func() { d.DeltaRuleChunked(args) })
			tflops := func(el time.Duration) float64 { return float64(T*m.nv*4*dk*dv*2) / el.Seconds() / 1e12 }
			t.Logf("DELTARULE %s (nk=%d nv=%d dk=dv=%d) T=%d: recurrent %.1f µs (%.2f TFLOPS, %.3f of FMA), chunked %.1f µs (%.2f TFLOPS, %.3f of FMA): %.2f× (%d B shared a block)",
				m.name, m.nk, m.nv, dk, T, float64(rec.Nanoseconds())/1e3, tflops(rec), tflops(rec)/peak,
				float64(chk.Nanoseconds())/1e3, tflops(chk), tflops(chk)/peak, rec.Seconds()/chk.Seconds(), deltaChunkShared(dk))
		}
		for _, x := range []backend.Tensor{tq, tz, tb, ta, S, o, xc, cw, cst, c.negA, c.dtBias, c.norm} {
			x.Release()
		}
	}
}
