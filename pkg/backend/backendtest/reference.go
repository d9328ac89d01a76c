package backendtest

import (
	"math"

	"github.com/fm-moe/fm/pkg/backend"
)

// The float64 twins of the contract's operations. Inputs are the float32
// values given to the device, widened; every intermediate is float64, except
// where the contract prescribes a float32 rounding (RoPE's angles).

func widen(x []float32) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
	}
	return out
}

func sigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }
func silu(x float64) float64    { return x * sigmoid(x) }

func softplus(x float64) float64 {
	if x > 20 {
		return x
	}
	return math.Log1p(math.Exp(x))
}

// refMatMul is y [T × rows] = x [T × cols] · wᵀ, w [rows × cols].
func refMatMul(w []float64, rows, cols int, x []float64) []float64 {
	T := len(x) / cols
	y := make([]float64, T*rows)
	for t := 0; t < T; t++ {
		xt := x[t*cols : (t+1)*cols]
		for r := 0; r < rows; r++ {
			var s float64
			for c, v := range w[r*cols : (r+1)*cols] {
				s += v * xt[c]
			}
			y[t*rows+r] = s
		}
	}
	return y
}

// refRMSNorm normalizes each row of x (n wide) and scales it by w.
func refRMSNorm(x []float64, n int, w []float64, eps float64) []float64 {
	out := make([]float64, len(x))
	for r := 0; r < len(x)/n; r++ {
		row := x[r*n : (r+1)*n]
		var ss float64
		for _, v := range row {
			ss += v * v
		}
		inv := 1 / math.Sqrt(ss/float64(n)+eps)
		for i, v := range row {
			out[r*n+i] = v * inv * w[i]
		}
	}
	return out
}

// refMLP is down·(silu(gate·x) ⊙ up·x) per row of x.
func refMLP(gate, up, down *dense, x []float64) []float64 {
	g := refMatMul(gate.w, gate.rows, gate.cols, x)
	u := refMatMul(up.w, up.rows, up.cols, x)
	for i := range g {
		g[i] = silu(g[i]) * u[i]
	}
	return refMatMul(down.w, down.rows, down.cols, g)
}

// refRope rotates the first dim values of x NeoX style for position pos,
// with the angles rounded to float32 as the contract prescribes.
func refRope(x []float64, dim int, theta float64, pos int) {
	h := dim / 2
	for i := 0; i < h; i++ {
		e := float32(2*i) / float32(dim)
		inv := 1 / float32(math.Pow(theta, float64(e)))
		a := float64(float32(pos) * inv)
		c, s := math.Cos(a), math.Sin(a)
		x0, x1 := x[i], x[i+h]
		x[i], x[i+h] = x0*c-x1*s, x1*c+x0*s
	}
}

// refAttention is the attention core with its own float64 KV cache.
type refAttention struct {
	p            *backend.AttentionParams
	qNorm, kNorm []float64
	keys, vals   [][]float64 // per position, KVHeads·HeadDim
}

// step processes T tokens (q, k, v as given to the device) at the next
// positions and returns out [T × Heads·HeadDim].
func (a *refAttention) step(q, k, v []float64) []float64 {
	p := a.p
	nH, nKV, D := p.Heads, p.KVHeads, p.HeadDim
	qStride := D
	if p.Gated {
		qStride = 2 * D
	}
	T := len(k) / (nKV * D)
	out := make([]float64, T*nH*D)
	for t := 0; t < T; t++ {
		pos := len(a.keys)
		kr := make([]float64, nKV*D)
		for g := 0; g < nKV; g++ {
			kg := refRMSNorm(k[t*nKV*D+g*D:t*nKV*D+(g+1)*D], D, a.kNorm, p.Eps)
			refRope(kg, p.RotaryDim, p.RopeTheta, pos)
			copy(kr[g*D:], kg)
		}
		a.keys = append(a.keys, kr)
		a.vals = append(a.vals, append([]float64(nil), v[t*nKV*D:(t+1)*nKV*D]...))
		for h := 0; h < nH; h++ {
			src := q[t*nH*qStride+h*qStride:]
			qh := refRMSNorm(src[:D], D, a.qNorm, p.Eps)
			refRope(qh, p.RotaryDim, p.RopeTheta, pos)
			g := h / (nH / nKV)
			scores := make([]float64, pos+1)
			mx := math.Inf(-1)
			for s := range scores {
				var dot float64
				for i, x := range qh {
					dot += x * a.keys[s][g*D+i]
				}
				scores[s] = dot / math.Sqrt(float64(D))
				mx = max(mx, scores[s])
			}
			var sum float64
			for s := range scores {
				scores[s] = math.Exp(scores[s] - mx)
				sum += scores[s]
			}
			o := out[t*nH*D+h*D : t*nH*D+(h+1)*D]
			for s, w := range scores {
				for i := range o {
					o[i] += w / sum * a.vals[s][g*D+i]
				}
			}
			if p.Gated {
				for i := range o {
					o[i] *= sigmoid(src[D+i])
				}
			}
		}
	}
	return out
}

// refDeltaNet is the GatedDeltaNet core with its own float64 states.
type refDeltaNet struct {
	p                        *backend.DeltaNetParams
	conv, negA, dtBias, norm []float64
	convState                []float64 // [K−1 × C], oldest first
	rec                      [][]float64
}

func newRefDeltaNet(p *backend.DeltaNetParams, conv, negA, dtBias, norm []float64) *refDeltaNet {
	r := &refDeltaNet{p: p, conv: conv, negA: negA, dtBias: dtBias, norm: norm,
		convState: make([]float64, (p.ConvKernel-1)*p.Channels())}
	for range p.ValueHeads {
		r.rec = append(r.rec, make([]float64, p.KeyDim*p.ValueDim))
	}
	return r
}

func l2norm(x []float64, scale float64) {
	var ss float64
	for _, v := range x {
		ss += v * v
	}
	inv := 1 / math.Sqrt(ss+1e-6) * scale
	for i := range x {
		x[i] *= inv
	}
}

// step processes T tokens and returns out [T × ValueHeads·ValueDim].
func (d *refDeltaNet) step(qkv, z, b, a []float64) []float64 {
	p := d.p
	C, K := p.Channels(), p.ConvKernel
	nk, nv, dk, dv := p.KeyHeads, p.ValueHeads, p.KeyDim, p.ValueDim
	kd, vd := nk*dk, nv*dv
	T := len(qkv) / C
	out := make([]float64, T*vd)
	for t := 0; t < T; t++ {
		x := qkv[t*C : (t+1)*C]
		u := make([]float64, C)
		for c := range u {
			acc := d.conv[c*K+K-1] * x[c]
			for j := 0; j < K-1; j++ {
				acc += d.conv[c*K+j] * d.convState[j*C+c]
			}
			u[c] = silu(acc)
		}
		if K > 1 {
			copy(d.convState, d.convState[C:])
			copy(d.convState[(K-2)*C:], x)
		}
		for i := 0; i < nk; i++ {
			l2norm(u[i*dk:(i+1)*dk], 1/math.Sqrt(float64(dk)))
			l2norm(u[kd+i*dk:kd+(i+1)*dk], 1)
		}
		for j := 0; j < nv; j++ {
			i := j / (nv / nk)
			q, k, v := u[i*dk:(i+1)*dk], u[kd+i*dk:kd+(i+1)*dk], u[2*kd+j*dv:2*kd+(j+1)*dv]
			beta := sigmoid(b[t*nv+j])
			alpha := math.Exp(d.negA[j] * softplus(a[t*nv+j]+d.dtBias[j]))
			S := d.rec[j]
			for i := range S {
				S[i] *= alpha
			}
			delta := make([]float64, dv)
			for c := range delta {
				var m float64
				for r := 0; r < dk; r++ {
					m += S[r*dv+c] * k[r]
				}
				delta[c] = beta * (v[c] - m)
			}
			for r := 0; r < dk; r++ {
				for c := 0; c < dv; c++ {
					S[r*dv+c] += k[r] * delta[c]
				}
			}
			o := out[t*vd+j*dv : t*vd+(j+1)*dv]
			for c := range o {
				for r := 0; r < dk; r++ {
					o[c] += S[r*dv+c] * q[r]
				}
			}
			normed := refRMSNorm(o, dv, d.norm, p.Eps)
			for c := range o {
				o[c] = normed[c] * silu(z[t*vd+j*dv+c])
			}
		}
	}
	return out
}
