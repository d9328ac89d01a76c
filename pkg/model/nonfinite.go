package model

import (
	"context"
	"fmt"
	"math"

	"github.com/fm-moe/fm/pkg/backend"
)

// NonFiniteError reports activations or logits that became NaN or infinite:
// the weights (or the input) are damaged, and generating from them would
// print a wrong answer. Forward checks the residual stream after every block,
// which costs one reduction per block; only when it finds a non-finite value
// does it re-run the layer's experts one at a time to name the culprit.
type NonFiniteError struct {
	Layer    int    // −1: the output head
	Block    string // "full attention", "linear attention", "router", "routed expert", "shared expert", …
	Expert   int    // the routed expert, or −1
	Position int    // the first token position affected
}

func (e *NonFiniteError) Error() string {
	where := fmt.Sprintf("layer %d %s", e.Layer, e.Block)
	if e.Layer < 0 {
		where = e.Block
	}
	if e.Expert >= 0 {
		where = fmt.Sprintf("layer %d routed expert %d", e.Layer, e.Expert)
	}
	return fmt.Sprintf("non-finite values (NaN or Inf) from %s at token position %d: the model's weights or its numbers are damaged — run fm-infer verify", where, e.Position)
}

// firstNonFinite returns the first row (of n floats) of x holding a NaN or an
// infinity, or −1.
func firstNonFinite(x []float32, n int) int {
	for i, v := range x {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return i / n
		}
	}
	return -1
}

// checkFinite returns a *NonFiniteError for layer l's block when t (the
// residual stream after it) holds a non-finite value.
func (m *Model) checkFinite(t backend.Tensor, l *layer, block string, pos int) error {
	r, err := m.dev.NonFinite(t)
	if err != nil {
		return fmt.Errorf("%s: layer %d %s: %w", m.dev.Name(), l.index, block, err)
	}
	if r >= 0 {
		return &NonFiniteError{Layer: l.index, Block: block, Expert: -1, Position: pos + r}
	}
	return nil
}

// diagnoseMoE finds which part of sparse layer l made the residual stream
// non-finite at row r: it checks the MoE output, then re-runs the shared
// expert and every routed expert of the step (fetching them again) one at a
// time. x.xn still holds the block's input and st.ws.routing its routing.
func (m *Model) diagnoseMoE(ctx context.Context, l *layer, st *State, x *tensors, r int) error {
	d := m.dev
	nf := &NonFiniteError{Layer: l.index, Block: "MoE residual add", Expert: -1, Position: st.pos + r}
	if row, err := d.NonFinite(x.mix); err != nil || row < 0 {
		return nf // the sum with the residual overflowed
	}
	nf.Block = "MoE block (sum of the experts)"
	T, H := x.xn.Rows(), m.cfg.HiddenSize
	scratch, err := d.NewTensor(T, H)
	if err != nil {
		return nf
	}
	defer scratch.Release()
	check := func(block string, expert int) bool {
		if row, err := d.NonFinite(scratch); err == nil && row >= 0 {
			nf.Block, nf.Expert, nf.Position = block, expert, st.pos+row
			return true
		}
		return false
	}
	if l.hasShared {
		d.Clear(scratch)
		m.sharedExpert(l, x, scratch)
		if check("shared expert", -1) {
			return nf
		}
	}
	rt := st.ws.routing
	f := m.fetch(ctx, l.index, rt.union, m.opts.ExpertBatch)
	for i, e := range rt.union {
		buf, release, err := f.next(i)
		if err != nil {
			return nf
		}
		d.Clear(scratch)
		err = m.expertFFN(scratch, x.xn, buf, rt.rows[e], rt.weights[e], m.expertKey(l.index, e))
		release()
		if err == nil && check("routed expert", e) {
			f.drain()
			return nf
		}
	}
	return nf
}
