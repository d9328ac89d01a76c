package model

import (
	"context"
	"fmt"

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

// The checked blocks of a layer: its mixer, its FFN (MoE or dense MLP); the
// residual stream after block b of layer l is check slot 2l+b.
const (
	slotMixer = iota
	slotFFN
	slotsPerLayer
)

// startChecks readies the step's deferred checks: the marks are allocated
// on the first step of a device that defers them, and the leftovers of a
// step that stopped early (an error, a cancellation) are dropped.
func (m *Model) startChecks(st *State) error {
	ws := &st.ws
	mk, ok := m.dev.(backend.NonFiniteMarker)
	if !ok {
		return nil
	}
	if ws.marks == nil {
		n := slotsPerLayer * len(m.layers)
		marks, err := mk.NewMarks(n)
		if err != nil {
			return fmt.Errorf("%s: non-finite checks: %w", m.dev.Name(), err)
		}
		ws.marks, ws.markRows = marks, make([]int, n)
	}
	if ws.marked {
		ws.marked = false
		if err := ws.marks.Read(ws.markRows); err != nil {
			return fmt.Errorf("%s: non-finite checks: %w", m.dev.Name(), err)
		}
	}
	return nil
}

// check verifies that the residual stream x.h after block slot of layer l
// is finite: at once with NonFinite (a synchronizing reduction), or, on a
// backend.NonFiniteMarker, as a Mark read by readChecks at the next
// synchronizing call the step makes anyway (the router logits of the next
// sparse layer, the final logits), which saves a GPU two round trips a layer.
// pos is the step's first position.
func (m *Model) check(ctx context.Context, st *State, x *tensors, l *layer, slot, pos int) error {
	if ws := &st.ws; ws.marks != nil {
		ws.marks.Mark(slotsPerLayer*l.index+slot, x.h)
		ws.marked = true
		return nil
	}
	r, err := m.dev.NonFinite(x.h)
	if err != nil {
		return fmt.Errorf("%s: layer %d %s: %w", m.dev.Name(), l.index, blockName(l, slot), err)
	}
	if r >= 0 {
		return m.nonFinite(ctx, st, x, l, slot, pos, r)
	}
	return nil
}

// readChecks returns the error of the first checked block (in the order they
// ran) whose residual stream holds a non-finite value, if any. Call it only
// at a point where the last sparse layer checked is the last one that ran its
// MoE (x.xnAlt, x.mixAlt and st.ws.routing are its own).
func (m *Model) readChecks(ctx context.Context, st *State, x *tensors, pos int) error {
	ws := &st.ws
	if ws.marks == nil || !ws.marked {
		return nil
	}
	ws.marked = false
	if err := ws.marks.Read(ws.markRows); err != nil {
		return fmt.Errorf("%s: non-finite checks: %w", m.dev.Name(), err)
	}
	for i, r := range ws.markRows {
		if r >= 0 {
			return m.nonFinite(ctx, st, x, m.layers[i/slotsPerLayer], i%slotsPerLayer, pos, r)
		}
	}
	return nil
}

func blockName(l *layer, slot int) string {
	switch {
	case slot == slotMixer:
		return l.kind.String()
	case l.sparse:
		return "MoE"
	}
	return "dense MLP"
}

// nonFinite is the error for block slot of layer l, whose residual stream
// first became non-finite in row r of the step starting at position pos; for
// a MoE block it finds the expert to blame.
func (m *Model) nonFinite(ctx context.Context, st *State, x *tensors, l *layer, slot, pos, r int) error {
	if slot == slotFFN && l.sparse {
		return m.diagnoseMoE(ctx, l, st, x, pos, r)
	}
	return &NonFiniteError{Layer: l.index, Block: blockName(l, slot), Expert: -1, Position: pos + r}
}

// diagnoseMoE finds which part of sparse layer l made the residual stream
// non-finite in row r of the step starting at position pos: it checks the MoE output, then re-runs the shared
// expert and every routed expert of the step (fetching them again) one at a
// time. x.xnAlt and x.mixAlt still hold the block's input and output, and
// st.ws.routing its routing.
func (m *Model) diagnoseMoE(ctx context.Context, l *layer, st *State, x *tensors, pos, r int) error {
	d := m.dev
	nf := &NonFiniteError{Layer: l.index, Block: "MoE residual add", Expert: -1, Position: pos + r}
	row, err := d.NonFinite(x.mixAlt)
	if err != nil || row < 0 {
		return nf // the sum with the residual overflowed
	}
	nf.Block = "MoE block (sum of the experts)"
	in := x.xnAlt
	T, H := in.Rows(), m.cfg.HiddenSize
	scratch, err := d.NewTensor(T, H)
	if err != nil {
		return nf
	}
	defer scratch.Release()
	check := func(block string, expert int) bool {
		if row, err := d.NonFinite(scratch); err == nil && row >= 0 {
			nf.Block, nf.Expert, nf.Position = block, expert, pos+row
			return true
		}
		return false
	}
	if l.hasShared {
		d.Clear(scratch)
		m.sharedExpert(l, x, in, scratch)
		if check("shared expert", -1) {
			return nf
		}
	}
	rt := st.ws.routing
	f := st.ws.fetch.begin(m, ctx, l.index, rt.union, m.opts.ExpertBatch)
	for i, e := range rt.union {
		buf, release, err := f.next(i)
		if err != nil {
			return nf
		}
		d.Clear(scratch)
		err = m.expertFFN(scratch, in, buf, rt.rows[e], rt.weights[e], m.expertKey(l.index, e))
		release.Release()
		if err == nil && check("routed expert", e) {
			f.drain()
			return nf
		}
	}
	return nf
}
