package model

import (
	"context"
	"fmt"
	"slices"

	"github.com/fm-moe/fm/pkg/backend/cpu"
	"github.com/fm-moe/fm/pkg/layout"
)

// route turns one token's router logits into its top-k experts and weights
// (reference-math.md §3.7): softmax over all experts in float32, the k largest
// probabilities (ties go to the lower expert index), renormalized to sum to 1
// when renorm. probs is overwritten with the softmax.
func route(probs []float32, k int, renorm bool, ids []int, weights []float32) {
	cpu.Softmax(probs)
	for s := 0; s < k; s++ {
		best := -1
		for e, p := range probs {
			if slices.Contains(ids[:s], e) {
				continue
			}
			if best < 0 || p > probs[best] {
				best = e
			}
		}
		ids[s], weights[s] = best, probs[best]
	}
	if renorm {
		var sum float32
		for _, w := range weights[:k] {
			sum += w
		}
		for i := range weights[:k] {
			weights[i] /= sum
		}
	}
}

// renormalizes reports whether the top-k weights are renormalized: qwen3_5
// always does, the others when norm_topk_prob is set.
func (m *Model) renormalizes() bool {
	return m.cfg.Arch == layout.ArchQwen35MoE || m.cfg.NormTopKProb
}

// routedToken is one (token, weight) pair routed to an expert.
type routedToken struct {
	t int
	w float32
}

type fetchResult struct {
	data    [][]byte
	release func()
	err     error
}

// moe is the sparse MoE block: router, the routed experts' SwiGLU FFNs weighted
// by their routing weights, plus the sigmoid-gated shared expert. The experts
// of the whole chunk are fetched once each (the union of the chunk's routing).
func (m *Model) moe(ctx context.Context, l *layer, ws *workspace, x, out []float32, T int, clk *clock) error {
	E, H, K := m.cfg.NumExperts, m.cfg.HiddenSize, m.k
	router := grow(&ws.router, T*E)
	m.pool.MatMul(router, &l.router, x, T)
	ids := make([]int, T*K)
	weights := make([]float32, T*K)
	perExpert := map[int][]routedToken{}
	for t := 0; t < T; t++ {
		route(router[t*E:(t+1)*E], K, m.renormalizes(), ids[t*K:(t+1)*K], weights[t*K:(t+1)*K])
		for s := 0; s < K; s++ {
			e := ids[t*K+s]
			perExpert[e] = append(perExpert[e], routedToken{t, weights[t*K+s]})
		}
	}
	if m.opts.OnRoute != nil {
		rows := make([][]int, T)
		for t := range rows {
			rows[t] = ids[t*K : (t+1)*K]
		}
		m.opts.OnRoute(l.index, rows)
	}
	union := make([]int, 0, len(perExpert))
	for e := range perExpert {
		union = append(union, e)
	}
	slices.Sort(union)
	clk.lap(l.index, PhaseRouting)
	if clk.p != nil {
		clk.p.ExpertsFetched += int64(len(union))
	}

	// Every expert is fetched on its own, at most ExpertBatch at a time, and
	// computed as soon as it is in — in union order, so the sum is the same
	// whatever the I/O timing — while the following ones are still being read.
	// The shared expert runs while the first reads are in flight.
	start := func(e int) chan fetchResult {
		ch := make(chan fetchResult, 1)
		go func() {
			data, release, err := m.experts.FetchExperts(ctx, l.index, []int{e})
			ch <- fetchResult{data, release, err}
		}()
		return ch
	}
	inflight := make([]chan fetchResult, len(union))
	for i := 0; i < min(len(union), m.opts.ExpertBatch); i++ {
		inflight[i] = start(union[i])
	}
	// On an error, give back whatever is still arriving.
	drain := func(from int) {
		for _, ch := range inflight[from:] {
			if ch == nil {
				break
			}
			if r := <-ch; r.err == nil {
				r.release()
			}
		}
	}

	clear(out)
	if l.hasShared {
		m.sharedExpert(l, ws, x, out, T)
	}
	clk.lap(l.index, PhaseExpertCompute)
	for i, e := range union {
		res := <-inflight[i]
		clk.lap(l.index, PhaseExpertIO)
		if res.err == nil && (len(res.data) != 1 || int64(len(res.data[0])) < m.expertFileSize) {
			res.release()
			res.err = fmt.Errorf("got %d files, the expert file layout needs one of %d bytes", len(res.data), m.expertFileSize)
		}
		if res.err != nil {
			drain(i + 1)
			return fmt.Errorf("layer %d expert %d: %w", l.index, e, res.err)
		}
		if next := i + m.opts.ExpertBatch; next < len(union) {
			inflight[next] = start(union[next])
		}
		m.expertFFN(ws, res.data[0], perExpert[e], x, out, H)
		res.release()
		clk.lap(l.index, PhaseExpertCompute)
	}
	return nil
}

// expertFFN adds Σ w·down(silu(gate x_t) ⊙ up x_t) over the tokens routed to
// one expert whose file is buf.
func (m *Model) expertFFN(ws *workspace, buf []byte, toks []routedToken, x, out []float32, H int) {
	gate, up, down := m.expertGate.bind(buf), m.expertUp.bind(buf), m.expertDown.bind(buf)
	I := gate.Rows
	n := len(toks)
	var xs []float32
	if n == 1 {
		xs = x[toks[0].t*H : (toks[0].t+1)*H]
	} else {
		xs = grow(&ws.ex, n*H)
		for i, rt := range toks {
			copy(xs[i*H:(i+1)*H], x[rt.t*H:(rt.t+1)*H])
		}
	}
	g := grow(&ws.eg, n*I)
	u := grow(&ws.eu, n*I)
	y := grow(&ws.ey, n*H)
	m.pool.MatMul(g, &gate, xs, n)
	m.pool.MatMul(u, &up, xs, n)
	cpu.SwiGLU(g, u)
	m.pool.MatMul(y, &down, g, n)
	for i, rt := range toks {
		cpu.Axpy(out[rt.t*H:(rt.t+1)*H], rt.w, y[i*H:(i+1)*H])
	}
}

// sharedExpert adds sigmoid(w_sg·x)·SwiGLU_shared(x) to out for every token.
func (m *Model) sharedExpert(l *layer, ws *workspace, x, out []float32, T int) {
	H, Is := m.cfg.HiddenSize, l.sgProj.Rows
	g := grow(&ws.sg, T*Is)
	u := grow(&ws.su, T*Is)
	d := grow(&ws.sd, T*H)
	s := grow(&ws.sgs, T)
	m.pool.MatMul(g, &l.sgProj, x, T)
	m.pool.MatMul(u, &l.suProj, x, T)
	cpu.SwiGLU(g, u)
	m.pool.MatMul(d, &l.sdProj, g, T)
	m.pool.MatMul(s, &l.sharedGate, x, T)
	for t := 0; t < T; t++ {
		cpu.Axpy(out[t*H:(t+1)*H], cpu.Sigmoid(s[t]), d[t*H:(t+1)*H])
	}
}
