package model

import (
	"context"
	"fmt"

	"github.com/fm-moe/fm/pkg/backend/cpu"
)

// Forward appends tokens to the sequence in st and returns next-token logits:
// of the last token ([vocab]) or, when all is true, of every token
// ([len(tokens)·vocab], row t after token t). Long inputs run in chunks of
// Options.PrefillChunk tokens; a single token is the decode path. The returned
// slice is owned by the caller.
func (m *Model) Forward(ctx context.Context, st *State, tokens []int, all bool) ([]float32, error) {
	if len(tokens) == 0 {
		return nil, fmt.Errorf("forward: no tokens")
	}
	V := m.cfg.VocabSize
	for i, id := range tokens {
		if id < 0 || id >= V {
			return nil, fmt.Errorf("forward: token %d (position %d) outside the vocabulary [0, %d)", id, i, V)
		}
	}
	var out []float32
	if all {
		out = make([]float32, 0, len(tokens)*V)
	}
	for start := 0; start < len(tokens); start += m.opts.PrefillChunk {
		chunk := tokens[start:min(start+m.opts.PrefillChunk, len(tokens))]
		last := start+len(chunk) == len(tokens)
		logits, err := m.step(ctx, st, chunk, all, last)
		if err != nil {
			return nil, err
		}
		if all {
			out = append(out, logits...)
		} else if last {
			out = append([]float32(nil), logits...)
		}
	}
	return out, nil
}

// step runs one chunk through every layer. It computes logits for every row
// when all, for the last row when last, otherwise none.
func (m *Model) step(ctx context.Context, st *State, tokens []int, all, last bool) ([]float32, error) {
	T := len(tokens)
	H := m.cfg.HiddenSize
	ws := &st.ws
	clk := newClock(st.Profile, len(m.layers))

	h := grow(&ws.h, T*H)
	for t, id := range tokens {
		m.embed.Row(h[t*H:(t+1)*H], id)
	}
	clk.lap(-1, PhaseOther)

	xn := grow(&ws.xn, T*H)
	mix := grow(&ws.mix, T*H)
	for li, l := range m.layers {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		for t := 0; t < T; t++ {
			cpu.RMSNorm(xn[t*H:(t+1)*H], h[t*H:(t+1)*H], l.inNorm, m.cfg.RMSNormEps)
		}
		clk.lap(li, PhaseOther)
		ls := &st.layers[li]
		switch l.kind {
		case fullAttention:
			m.attention(l, ls, ws, xn, mix, T, st.pos)
		case linearAttention:
			m.deltaNet(l, ls, ws, xn, mix, T)
		}
		clk.lap(li, PhaseMixer)
		cpu.Add(h, mix)
		for t := 0; t < T; t++ {
			cpu.RMSNorm(xn[t*H:(t+1)*H], h[t*H:(t+1)*H], l.postNorm, m.cfg.RMSNormEps)
		}
		clk.lap(li, PhaseOther)
		if l.sparse {
			if err := m.moe(ctx, l, ws, xn, mix, T, &clk); err != nil {
				return nil, err
			}
		} else {
			m.denseMLP(l, ws, xn, mix, T)
			clk.lap(li, PhaseExpertCompute)
		}
		cpu.Add(h, mix)
		clk.lap(li, PhaseOther)
	}
	st.pos += T
	if st.Profile != nil {
		st.Profile.Tokens += T
	}

	var logits []float32
	switch {
	case all:
		hn := grow(&ws.hn, T*H)
		for t := 0; t < T; t++ {
			cpu.RMSNorm(hn[t*H:(t+1)*H], h[t*H:(t+1)*H], m.finalNorm, m.cfg.RMSNormEps)
		}
		logits = grow(&ws.logits, T*m.cfg.VocabSize)
		m.pool.MatMul(logits, &m.lmHead, hn, T)
	case last:
		hn := grow(&ws.hn, H)
		cpu.RMSNorm(hn, h[(T-1)*H:T*H], m.finalNorm, m.cfg.RMSNormEps)
		logits = grow(&ws.logits, m.cfg.VocabSize)
		m.pool.MatVec(logits, &m.lmHead, hn)
	}
	clk.lap(-1, PhaseOther)
	return logits, nil
}

// denseMLP is the SwiGLU MLP of an mlp_only layer: out = down(silu(gate x) ⊙ up x).
func (m *Model) denseMLP(l *layer, ws *workspace, x, out []float32, T int) {
	I := l.mlpGate.Rows
	g := grow(&ws.sg, T*I)
	u := grow(&ws.su, T*I)
	m.pool.MatMul(g, &l.mlpGate, x, T)
	m.pool.MatMul(u, &l.mlpUp, x, T)
	cpu.SwiGLU(g, u)
	m.pool.MatMul(out, &l.mlpDown, g, T)
}
