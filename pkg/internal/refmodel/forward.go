package refmodel

import (
	"fmt"
	"math"
	"sort"
)

// Trace is the result of one forward pass over a token sequence.
type Trace struct {
	// Logits[t] is the next-token distribution (unnormalised) after token t.
	Logits [][]float64
	// Hidden[l][t] is the residual stream after layer l−1 (Hidden[0] is the
	// embedding), as HF's output_hidden_states reports it, except that the last
	// entry is before the final norm.
	Hidden [][][]float64
	// MinRouterGap is the smallest difference, over every token and MoE layer,
	// between the router logits of the K-th and the (K+1)-th expert. A
	// float32 runtime can only pick other experts than the reference where
	// this gap is at rounding level.
	MinRouterGap float64
}

// Forward runs ids from an empty state, causally, and returns the logits
// after every token. Row t depends on ids[0..t] only, so it is the reference
// for both a batched prefill and a token-by-token decode.
func (m *Model) Forward(ids []int) (*Trace, error) {
	c := m.Config
	T := len(ids)
	tr := &Trace{MinRouterGap: math.Inf(1)}
	h := make([][]float64, T)
	for t, id := range ids {
		if id < 0 || id >= c.Vocab {
			return nil, fmt.Errorf("token %d at position %d is outside the vocabulary of %d", id, t, c.Vocab)
		}
		h[t] = make([]float64, c.Hidden)
		for j, v := range m.embed.w[id*c.Hidden : (id+1)*c.Hidden] {
			h[t][j] = float64(v)
		}
	}
	tr.Hidden = append(tr.Hidden, clone(h))
	for l := range m.layers {
		L := &m.layers[l]
		x := make([][]float64, T)
		for t := range h {
			x[t] = rmsNorm(h[t], L.inNorm, c.Eps)
		}
		var mixed [][]float64
		if c.Linear[l] {
			mixed = m.deltaNet(L, x)
		} else {
			mixed = m.attention(L, x)
		}
		for t := range h {
			add(h[t], mixed[t])
			y := m.feedForward(L, rmsNorm(h[t], L.postNorm, c.Eps), &tr.MinRouterGap)
			add(h[t], y)
		}
		tr.Hidden = append(tr.Hidden, clone(h))
	}
	tr.Logits = make([][]float64, T)
	for t := range h {
		tr.Logits[t] = m.head.apply(rmsNorm(h[t], m.finalNorm, c.Eps))
	}
	return tr, nil
}

// rmsNorm returns x / sqrt(mean(x²) + eps) ⊙ mult, where mult is the norm's
// effective multiplier (w, or 1+w already folded in by Load).
func rmsNorm(x, mult []float64, eps float64) []float64 {
	var ss float64
	for _, v := range x {
		ss += v * v
	}
	inv := 1 / math.Sqrt(ss/float64(len(x))+eps)
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = v * inv * mult[i]
	}
	return y
}

func silu(x float64) float64    { return x / (1 + math.Exp(-x)) }
func sigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

// softplus is log(1+eˣ) with torch's linear cut-over above 20.
func softplus(x float64) float64 {
	if x > 20 {
		return x
	}
	return math.Log1p(math.Exp(x))
}

func add(dst, x []float64) {
	for i, v := range x {
		dst[i] += v
	}
}

func dot(a, b []float64) float64 {
	var s float64
	for i, v := range a {
		s += v * b[i]
	}
	return s
}

func clone(h [][]float64) [][]float64 {
	out := make([][]float64, len(h))
	for i, r := range h {
		out[i] = append([]float64(nil), r...)
	}
	return out
}

// rope rotates the first R dims of x in place for position pos, NeoX style:
// dim i pairs with dim i+R/2 (reference-math.md §3.6). The angle is formed in
// float32 as transformers does (inv_freq and position·inv_freq are float32
// tensors), then rotated in float64.
func rope(x []float64, pos, R int, theta float64) {
	half := R / 2
	for i := 0; i < half; i++ {
		exponent := float32(2*i) / float32(R)
		invFreq := 1 / float32(math.Pow(theta, float64(exponent)))
		angle := float64(float32(pos) * invFreq)
		cos, sin := math.Cos(angle), math.Sin(angle)
		a, b := x[i], x[i+half]
		x[i] = a*cos - b*sin
		x[i+half] = b*cos + a*sin
	}
}

// attention is causal softmax attention over the whole sequence, with GQA
// (query head h reads kv head h / (nH/nKV)), per-head q/k RMSNorm, partial
// RoPE and — for qwen3_next / qwen3_5 — the per-head interleaved sigmoid
// output gate (§3.4).
func (m *Model) attention(L *layer, x [][]float64) [][]float64 {
	c := m.Config
	T, nH, nKV, D := len(x), c.Heads, c.KVHeads, c.HeadDim
	gated := c.Family != Qwen3MoE
	q := make([][][]float64, T)    // [t][h][D]
	gate := make([][][]float64, T) // [t][h][D]
	k := make([][][]float64, T)    // [t][g][D]
	v := make([][][]float64, T)
	for t := range x {
		P := L.q.apply(x[t])
		K := L.k.apply(x[t])
		V := L.v.apply(x[t])
		q[t] = make([][]float64, nH)
		gate[t] = make([][]float64, nH)
		for h := 0; h < nH; h++ {
			if gated {
				q[t][h] = P[h*2*D : h*2*D+D]
				gate[t][h] = P[h*2*D+D : (h+1)*2*D]
			} else {
				q[t][h] = P[h*D : (h+1)*D]
			}
			q[t][h] = rmsNorm(q[t][h], L.qNorm, c.Eps)
			rope(q[t][h], t, c.RotaryDim, c.RopeTheta)
		}
		k[t] = make([][]float64, nKV)
		v[t] = make([][]float64, nKV)
		for g := 0; g < nKV; g++ {
			k[t][g] = rmsNorm(K[g*D:(g+1)*D], L.kNorm, c.Eps)
			rope(k[t][g], t, c.RotaryDim, c.RopeTheta)
			v[t][g] = V[g*D : (g+1)*D]
		}
	}
	scale := 1 / math.Sqrt(float64(D))
	group := nH / nKV
	out := make([][]float64, T)
	for t := range x {
		o := make([]float64, nH*D)
		for h := 0; h < nH; h++ {
			g := h / group
			scores := make([]float64, t+1)
			maxScore := math.Inf(-1)
			for s := 0; s <= t; s++ {
				scores[s] = dot(q[t][h], k[s][g]) * scale
				maxScore = math.Max(maxScore, scores[s])
			}
			var sum float64
			for s := range scores {
				scores[s] = math.Exp(scores[s] - maxScore)
				sum += scores[s]
			}
			oh := o[h*D : (h+1)*D]
			for s, p := range scores {
				for d, val := range v[s][g] {
					oh[d] += p / sum * val
				}
			}
			if gated {
				for d := range oh {
					oh[d] *= sigmoid(gate[t][h][d])
				}
			}
		}
		out[t] = L.o.apply(o)
	}
	return out
}

// deltaNet is the GatedDeltaNet mixer (§3.2–3.3) run as the plain recurrence,
// one token at a time from zero conv and recurrent state.
func (m *Model) deltaNet(L *layer, x [][]float64) [][]float64 {
	c := m.Config
	nk, nv, dk, dv, Kc := c.LinearKeyHeads, c.LinearValueHeads, c.LinearKeyDim, c.LinearValueDim, c.ConvKernel
	r := nv / nk
	Kd, Vd := nk*dk, nv*dv
	Cc := 2*Kd + Vd
	// window[j] holds the pre-conv projected vector of the token j steps
	// before the oldest one still needed; the current token is appended.
	window := make([][]float64, Kc-1)
	for j := range window {
		window[j] = make([]float64, Cc)
	}
	S := make([][][]float64, nv) // S[j][row of dk][col of dv]
	for j := range S {
		S[j] = make([][]float64, dk)
		for i := range S[j] {
			S[j][i] = make([]float64, dv)
		}
	}
	out := make([][]float64, len(x))
	for t := range x {
		var qkv, z, b, a []float64
		if L.interleavedLA {
			qkv, z, b, a = splitQKVZ(L.qkvz.apply(x[t]), L.ba.apply(x[t]), nk, dk, dv, r)
		} else {
			qkv, z, b, a = L.qkv.apply(x[t]), L.z.apply(x[t]), L.b.apply(x[t]), L.a.apply(x[t])
		}
		// Causal depthwise conv: tap Kc−1 multiplies the current token.
		u := make([]float64, Cc)
		for ch := 0; ch < Cc; ch++ {
			var s float64
			for j := 0; j < Kc-1; j++ {
				s += L.conv[ch][j] * window[j][ch]
			}
			s += L.conv[ch][Kc-1] * qkv[ch]
			u[ch] = silu(s)
		}
		if Kc > 1 {
			window = append(window[1:], qkv)
		}
		q := make([][]float64, nk)
		k := make([][]float64, nk)
		for i := 0; i < nk; i++ {
			q[i] = l2Normalise(u[i*dk:(i+1)*dk], 1/math.Sqrt(float64(dk)))
			k[i] = l2Normalise(u[Kd+i*dk:Kd+(i+1)*dk], 1)
		}
		o := make([]float64, Vd)
		for j := 0; j < nv; j++ {
			i := j / r
			vj := u[2*Kd+j*dv : 2*Kd+(j+1)*dv]
			beta := sigmoid(b[j])
			alpha := math.Exp(-math.Exp(L.aLog[j]) * softplus(a[j]+L.dtBias[j]))
			Sj := S[j]
			for row := range Sj {
				for col := range Sj[row] {
					Sj[row][col] *= alpha
				}
			}
			delta := make([]float64, dv)
			for col := 0; col < dv; col++ {
				var mem float64
				for row := 0; row < dk; row++ {
					mem += Sj[row][col] * k[i][row]
				}
				delta[col] = beta * (vj[col] - mem)
			}
			for row := 0; row < dk; row++ {
				for col := 0; col < dv; col++ {
					Sj[row][col] += k[i][row] * delta[col]
				}
			}
			oj := make([]float64, dv)
			for col := 0; col < dv; col++ {
				for row := 0; row < dk; row++ {
					oj[col] += Sj[row][col] * q[i][row]
				}
			}
			// Gated RMSNorm with the plain weight, shared by all value heads.
			n := rmsNorm(oj, L.gatedNorm, c.Eps)
			for col := range n {
				o[j*dv+col] = n[col] * silu(z[j*dv+col])
			}
		}
		out[t] = L.out.apply(o)
	}
	return out
}

// l2Normalise returns x / sqrt(Σx² + 1e−6) · scale (HF l2norm: eps on the sum).
func l2Normalise(x []float64, scale float64) []float64 {
	var ss float64
	for _, v := range x {
		ss += v * v
	}
	inv := scale / math.Sqrt(ss+1e-6)
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = v * inv
	}
	return y
}

// splitQKVZ undoes Qwen3-Next's per-key-head interleaving (§3.3): the qkvz
// output viewed as [nk, 2dk + 2r·dv] splits per group into q_i, k_i, the v of
// value heads i·r..i·r+r−1 and their z; ba viewed as [nk, 2r] into b and a.
// The result is the conv input q|k|v (all q heads, all k heads, all v heads),
// z, b and a in value-head order.
func splitQKVZ(p, ba []float64, nk, dk, dv, r int) (qkv, z, b, a []float64) {
	Kd, Vd := nk*dk, nk*r*dv
	G := 2*dk + 2*r*dv
	qkv = make([]float64, 2*Kd+Vd)
	z = make([]float64, Vd)
	b = make([]float64, nk*r)
	a = make([]float64, nk*r)
	for i := 0; i < nk; i++ {
		g := p[i*G : (i+1)*G]
		copy(qkv[i*dk:], g[:dk])
		copy(qkv[Kd+i*dk:], g[dk:2*dk])
		copy(qkv[2*Kd+i*r*dv:], g[2*dk:2*dk+r*dv])
		copy(z[i*r*dv:], g[2*dk+r*dv:])
		copy(b[i*r:], ba[i*2*r:i*2*r+r])
		copy(a[i*r:], ba[i*2*r+r:(i+1)*2*r])
	}
	return qkv, z, b, a
}

// feedForward is the sparse MoE block (§3.7) — softmax over all experts, top
// K, renormalised per the family's rule, SwiGLU experts, plus the shared
// expert behind its sigmoid gate — or the dense SwiGLU of an mlp_only layer.
func (m *Model) feedForward(L *layer, x []float64, minGap *float64) []float64 {
	c := m.Config
	if L.dense != nil {
		return L.dense.apply(x)
	}
	logits := L.router.apply(x)
	order := make([]int, len(logits))
	for e := range order {
		order[e] = e
	}
	sort.SliceStable(order, func(i, j int) bool { return logits[order[i]] > logits[order[j]] })
	K := c.TopK
	if K < len(order) {
		*minGap = math.Min(*minGap, logits[order[K-1]]-logits[order[K]])
	}
	maxLogit := logits[order[0]]
	var z float64
	for _, v := range logits {
		z += math.Exp(v - maxLogit)
	}
	weights := make([]float64, K)
	var sum float64
	for i := range weights {
		weights[i] = math.Exp(logits[order[i]]-maxLogit) / z
		sum += weights[i]
	}
	if c.NormTopK {
		for i := range weights {
			weights[i] /= sum
		}
	}
	y := make([]float64, c.Hidden)
	for i, w := range weights {
		e := L.experts[order[i]].apply(x)
		for j := range y {
			y[j] += w * e[j]
		}
	}
	if L.shared != nil {
		g := sigmoid(dot(L.sharedGate, x))
		e := L.shared.apply(x)
		for j := range y {
			y[j] += g * e[j]
		}
	}
	return y
}

func (e *expert) apply(x []float64) []float64 {
	g := e.gate.apply(x)
	u := e.up.apply(x)
	for i := range g {
		g[i] = silu(g[i]) * u[i]
	}
	return e.down.apply(g)
}
