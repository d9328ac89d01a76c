package cpu

import "math"

// deltaChunk is the chunk length of the chunked delta rule (HF's 64).
const deltaChunk = 64

// tinyDecay is where a decay factor is taken as zero: far below float32's
// resolution next to the terms it is added to, and it keeps the kernels off
// subnormal numbers, which cost the CPU a microcode assist each (a fast-decaying
// head made the chunked form 2.3× slower before this).
const tinyDecay = 1e-30

func flushTiny(x float64) float32 {
	if x < tinyDecay {
		return 0
	}
	return float32(x)
}

// deltaHead holds one value head's inputs to the delta rule for T tokens, as
// contiguous rows: q̂ and k̂ [T×dk], v [T×dv], the write strength β [T] and
// the log-decay g ≤ 0 [T] (α = eᵍ).
type deltaHead struct {
	q, k, v, beta, g []float32
	dk, dv           int
}

// recurrentDeltaRule runs reference-math.md §3.2 step 7 token by token on the
// state S [dk×dv], writing o [T×dv]: decay, read m = Sᵀk, δ = β(v − m),
// S += kδᵀ, o = Sᵀq. It is the exact form, and the reference for the chunked one.
func recurrentDeltaRule(S []float32, h *deltaHead, o []float32) {
	dk, dv := h.dk, h.dv
	mem := make([]float32, dv)
	delta := make([]float32, dv)
	for t := range h.beta {
		q, k, v := h.q[t*dk:(t+1)*dk], h.k[t*dk:(t+1)*dk], h.v[t*dv:(t+1)*dv]
		alpha := float32(math.Exp(float64(h.g[t])))
		clear(mem)
		for r := 0; r < dk; r++ {
			DecayRead(S[r*dv:(r+1)*dv], mem, alpha, k[r])
		}
		for c := range delta {
			delta[c] = (v[c] - mem[c]) * h.beta[t]
		}
		ot := o[t*dv : (t+1)*dv]
		clear(ot)
		for r := 0; r < dk; r++ {
			UpdateRead(S[r*dv:(r+1)*dv], delta, ot, k[r], q[r])
		}
	}
}

// chunkedDeltaRule computes the same as recurrentDeltaRule, chunk by chunk
// (reference-math.md §3.5, HF's torch_chunk_gated_delta_rule): within a chunk
// of C tokens the recurrence is solved in closed form with C×C matrices, so
// the state is read and written once per chunk instead of twice per token, and
// the work is in matrix-shaped kernels. With γ the in-chunk cumulative g and
// Γ_ts = exp(γ_t − γ_s) (s ≤ t):
//
//	A  = strictly-lower(diag(β) K Kᵀ ∘ Γ)
//	U  = (I + A)⁻¹ diag(β) V,  W = (I + A)⁻¹ diag(β eᵞ) K   (forward substitution)
//	V' = U − W S
//	O  = diag(eᵞ) Q S + ((Q Kᵀ) ∘ Γ) V'
//	S ← e^{γ_C} S + (diag(e^{γ_C − γ}) K)ᵀ V'
//
// Equal to the recurrence in exact arithmetic; in float32 they differ by
// rounding (TestChunkedDeltaRuleMatchesRecurrence). γ, Γ and the exponentials
// are computed in float64.
func chunkedDeltaRule(S []float32, h *deltaHead, o []float32) {
	dk, dv, T := h.dk, h.dv, len(h.beta)
	C := min(deltaChunk, T)
	gam := make([]float64, C)
	alpha := make([]float64, C)
	negA := make([]float32, C*C) // −A, row t holds s < t
	qk := make([]float32, C*C)   // (QKᵀ ∘ Γ), row t holds s ≤ t
	U := make([]float32, C*dv)
	W := make([]float32, C*dk)
	kt := make([]float32, dk*C) // e^{γ_C − γ_s} k_s[r], [dk × C]
	tmp := make([]float32, dv)
	kTr := make([]float32, dk*C) // the chunk's k̂ transposed, [dk × C]
	kk := make([]float32, C)
	for c0 := 0; c0 < T; c0 += deltaChunk {
		n := min(deltaChunk, T-c0)
		q, k, v := h.q[c0*dk:(c0+n)*dk], h.k[c0*dk:(c0+n)*dk], h.v[c0*dv:(c0+n)*dv]
		beta, g := h.beta[c0:c0+n], h.g[c0:c0+n]
		acc := 0.0
		for t := 0; t < n; t++ {
			acc += float64(g[t])
			gam[t] = acc
			alpha[t] = math.Exp(float64(g[t]))
		}
		// K Kᵀ and Q Kᵀ a whole row at a time against the transposed keys.
		for s := 0; s < n; s++ {
			for r, x := range k[s*dk : (s+1)*dk] {
				kTr[r*C+s] = x
			}
		}
		for t := 0; t < n; t++ {
			kkRow, qkRow := kk[:n], qk[t*C:t*C+n]
			clear(kkRow)
			clear(qkRow)
			WeightedRowSum(kkRow, k[t*dk:(t+1)*dk], kTr, C)
			WeightedRowSum(qkRow, q[t*dk:(t+1)*dk], kTr, C)
			// Γ_ts = Π_{s<u≤t} α_u, built from the diagonal down: one multiply
			// per entry instead of an exp, and no under/overflow of e^{±γ}.
			decay := 1.0
			for s := t; s >= 0; s-- {
				if decay < tinyDecay {
					clear(qkRow[:s+1])
					clear(negA[t*C : t*C+min(s+1, t)])
					break
				}
				qkRow[s] = float32(float64(qkRow[s]) * decay)
				if s < t {
					negA[t*C+s] = -float32(float64(beta[t]) * float64(kkRow[s]) * decay)
				}
				decay *= alpha[s]
			}
		}
		// Forward substitution: row t of U and W from the rows before it.
		for t := 0; t < n; t++ {
			ut, wt := U[t*dv:(t+1)*dv], W[t*dk:(t+1)*dk]
			for c, x := range v[t*dv : (t+1)*dv] {
				ut[c] = beta[t] * x
			}
			if t > 0 {
				WeightedRowSum(ut, negA[t*C:t*C+t], U, dv)
			}
			// Row t of W scales as e^{γ_t}; below tinyDecay it is dropped
			// whole (its share of V' is < 1e−30·‖S‖), which also keeps the
			// substitution off subnormal products.
			eg := math.Exp(gam[t])
			if eg < tinyDecay {
				clear(wt)
				continue
			}
			bg := float32(float64(beta[t]) * eg)
			for r, x := range k[t*dk : (t+1)*dk] {
				wt[r] = bg * x
			}
			if t > 0 {
				WeightedRowSum(wt, negA[t*C:t*C+t], W, dk)
			}
		}
		// V' = U − W S, in place of U.
		for t := 0; t < n; t++ {
			clear(tmp)
			WeightedRowSum(tmp, W[t*dk:(t+1)*dk], S, dv)
			ut := U[t*dv : (t+1)*dv]
			for c := range ut {
				ut[c] -= tmp[c]
			}
		}
		// O from the incoming state and the chunk's own corrected values.
		for t := 0; t < n; t++ {
			ot := o[(c0+t)*dv : (c0+t+1)*dv]
			clear(ot)
			WeightedRowSum(ot, q[t*dk:(t+1)*dk], S, dv)
			eg := flushTiny(math.Exp(gam[t]))
			for c := range ot {
				ot[c] *= eg
			}
			WeightedRowSum(ot, qk[t*C:t*C+t+1], U, dv)
		}
		// S ← e^{γ_C} S + Σ_s e^{γ_C − γ_s} k_s V'_sᵀ, row by row.
		gC := gam[n-1]
		for s := 0; s < n; s++ {
			w := flushTiny(math.Exp(gC - gam[s]))
			for r, x := range k[s*dk : (s+1)*dk] {
				kt[r*C+s] = w * x
			}
		}
		eC := flushTiny(math.Exp(gC))
		for r := 0; r < dk; r++ {
			row := S[r*dv : (r+1)*dv]
			for c := range row {
				row[c] *= eC
			}
			WeightedRowSum(row, kt[r*C:r*C+n], U, dv)
		}
	}
}
