package model

import (
	"context"
	"fmt"

	"github.com/fm-moe/fm/pkg/internal/nonfinite"
)

// Forward appends tokens to the sequence in st and returns next-token logits:
// of the last token ([vocab]) or, when all is true, of every token
// ([len(tokens)·vocab], row t after token t). Long inputs run in chunks of
// Options.PrefillChunk tokens; a single token is the decode path. The returned
// slice is owned by the caller. Non-finite activations stop it with a
// *NonFiniteError naming the layer (and expert) where they appeared. After
// any error the state is unusable (Forward refuses it) until Reset.
func (m *Model) Forward(ctx context.Context, st *State, tokens []int, all bool) ([]float32, error) {
	if len(tokens) == 0 {
		return nil, fmt.Errorf("forward: no tokens")
	}
	if st.m != m {
		return nil, fmt.Errorf("forward: the state belongs to another model")
	}
	V := m.cfg.VocabSize
	for i, id := range tokens {
		if id < 0 || id >= V {
			return nil, fmt.Errorf("forward: token %d (position %d) outside the vocabulary [0, %d)", id, i, V)
		}
	}
	if err := st.ready(); err != nil {
		return nil, err
	}
	var out []float32
	if all {
		out = make([]float32, len(tokens)*V)
	} else {
		out = make([]float32, V)
	}
	for start := 0; start < len(tokens); start += m.opts.PrefillChunk {
		end := min(start+m.opts.PrefillChunk, len(tokens))
		var dst []float32 // where this chunk's logits go, if anywhere
		switch {
		case all:
			dst = out[start*V : end*V]
		case end == len(tokens):
			dst = out
		}
		if err := m.step(ctx, st, tokens[start:end], dst); err != nil {
			// Some layers' caches hold the step and others not: refuse to
			// continue from it.
			st.err = fmt.Errorf("forward: the state is unusable after a failed step (%w); Reset it", err)
			return nil, err
		}
	}
	return out, nil
}

// Decode appends one token to the sequence in st and writes its next-token
// logits into logits ([vocab] floats): Forward's decode path without the
// returned slice, so that a generation loop allocates nothing per token. Its
// errors are Forward's.
func (m *Model) Decode(ctx context.Context, st *State, token int, logits []float32) error {
	if st.m != m {
		return fmt.Errorf("decode: the state belongs to another model")
	}
	if V := m.cfg.VocabSize; token < 0 || token >= V {
		return fmt.Errorf("decode: token %d outside the vocabulary [0, %d)", token, V)
	}
	if len(logits) != m.cfg.VocabSize {
		return fmt.Errorf("decode: logits of %d floats, want the vocabulary's %d", len(logits), m.cfg.VocabSize)
	}
	if err := st.ready(); err != nil {
		return err
	}
	st.one[0] = token
	if err := m.step(ctx, st, st.one[:], logits); err != nil {
		st.err = fmt.Errorf("decode: the state is unusable after a failed step (%w); Reset it", err)
		return err
	}
	return nil
}

// step runs one chunk of T tokens through every layer (reference-math.md §3:
// embedding, then per layer h += mixer(norm(h)); h += ffn(norm(h)), then the
// final norm and the output head). logits receives the logits of every row
// (T·V floats), of the last row (V), or none (nil).
func (m *Model) step(ctx context.Context, st *State, tokens []int, logits []float32) error {
	T := len(tokens)
	d, eps := m.dev, m.cfg.RMSNormEps
	x, err := st.ws.step(m, T)
	if err != nil {
		return err
	}
	clk := newClock(st.Profile, len(m.layers))
	pos := st.pos
	if err := m.startChecks(st); err != nil {
		return err
	}

	d.Embed(x.h, m.embed, tokens)
	clk.lap(-1, PhaseOther)
	for _, l := range m.layers {
		if err := ctx.Err(); err != nil {
			return err
		}
		d.RMSNorm(x.xn, x.h, l.inNorm, eps)
		clk.lap(l.index, PhaseOther)
		switch l.kind {
		case fullAttention:
			m.attention(l, st, x)
		case linearAttention:
			m.deltaNet(l, st, x)
		}
		clk.lap(l.index, PhaseMixer)
		d.Add(x.h, x.mix)
		if err := m.check(ctx, st, x, l, slotMixer, pos); err != nil {
			return err
		}
		if err := m.observe(l, slotMixer, x); err != nil {
			return err
		}
		d.RMSNorm(x.xn, x.h, l.postNorm, eps)
		clk.lap(l.index, PhaseOther)
		if l.sparse {
			if err := m.moe(ctx, l, st, x, pos, &clk); err != nil {
				return err
			}
		} else {
			d.MLP(x.mix, x.xn, l.mlpGate, l.mlpUp, l.mlpDown)
			clk.lap(l.index, PhaseExpertCompute)
		}
		d.Add(x.h, x.mix)
		if l.sparse {
			// Keep this layer's MoE input and output for a diagnosis that
			// the deferred check may ask for after the next layers ran.
			x.xn, x.xnAlt = x.xnAlt, x.xn
			x.mix, x.mixAlt = x.mixAlt, x.mix
		}
		if err := m.check(ctx, st, x, l, slotFFN, pos); err != nil {
			return err
		}
		if err := m.observe(l, slotFFN, x); err != nil {
			return err
		}
		clk.lap(l.index, PhaseOther)
	}
	st.pos += T
	if st.Profile != nil {
		st.Profile.Tokens += T
	}
	if logits != nil {
		if err := m.head(ctx, st, x, pos, logits); err != nil {
			return err
		}
	} else if err := m.readChecks(ctx, st, x, pos); err != nil {
		return err
	}
	clk.lap(-1, PhaseOther)
	return nil
}

// head computes logits = lm_head(norm(h)) of every row of the step or of the
// last one only (as len(logits) says) and downloads them, then reads the
// step's deferred non-finite checks (the download synchronized them).
func (m *Model) head(ctx context.Context, st *State, x *tensors, pos int, logits []float32) error {
	V := m.cfg.VocabSize
	n := len(logits) / V
	T := x.h.Rows()
	h, hn := x.h, x.xn
	if n != T {
		h, hn = x.h.Slice(T-n, T), x.xn.Slice(T-n, T)
	}
	m.dev.RMSNorm(hn, h, m.finalNorm, m.cfg.RMSNormEps)
	out, err := st.ws.logitsView(m, n)
	if err != nil {
		return err
	}
	m.dev.MatMul(out, m.lmHead, hn)
	if err := m.dev.Download(logits, out); err != nil {
		return fmt.Errorf("%s: logits: %w", m.dev.Name(), err)
	}
	if err := m.readChecks(ctx, st, x, pos); err != nil {
		return err
	}
	if r := nonfinite.FirstRow(logits, V); r >= 0 {
		return &NonFiniteError{Layer: -1, Block: "final norm and lm_head", Expert: -1, Position: st.pos - n + r}
	}
	return nil
}

// observe hands the residual stream after block slot of layer l to
// Options.OnBlock, when set.
func (m *Model) observe(l *layer, slot int, x *tensors) error {
	if m.opts.OnBlock == nil {
		return nil
	}
	h := make([]float32, x.h.Rows()*x.h.Cols())
	if err := m.dev.Download(h, x.h); err != nil {
		return fmt.Errorf("%s: layer %d %s: %w", m.dev.Name(), l.index, blockName(l, slot), err)
	}
	m.opts.OnBlock(l.index, blockName(l, slot), h)
	return nil
}
