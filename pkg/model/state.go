package model

import (
	"slices"
	"time"
)

// State is one sequence's memory: the KV cache of every full-attention layer,
// the conv and recurrent state of every GatedDeltaNet layer, and the number of
// tokens consumed. It belongs to the Model that made it.
type State struct {
	pos    int
	layers []layerState
	ws     workspace

	// Profile, when non-nil, accumulates where Forward spends its time.
	Profile *Profile
}

type layerState struct {
	// Full attention: post-norm, post-RoPE keys and raw values, [pos, nKV·D].
	k, v []float32
	// GatedDeltaNet: the last Kc−1 pre-conv inputs, oldest first, [Kc−1, Cc];
	// and the recurrent state S_j for each value head, [nv, dk, dv].
	conv, rec []float32
}

// NewState returns an empty state (position 0, zero caches).
func (m *Model) NewState() *State {
	s := &State{layers: make([]layerState, len(m.layers))}
	for i, l := range m.layers {
		if l.kind == linearAttention {
			c := &m.cfg
			s.layers[i].conv = make([]float32, (c.LinearConvKernelDim-1)*m.cc)
			s.layers[i].rec = make([]float32, c.LinearNumValueHeads*c.LinearKeyHeadDim*c.LinearValueHeadDim)
		}
	}
	return s
}

// Len is the number of tokens the state has consumed (the next position).
func (s *State) Len() int { return s.pos }

// Reset empties the state for a new sequence, keeping its allocations.
func (s *State) Reset() {
	s.pos = 0
	for i := range s.layers {
		l := &s.layers[i]
		l.k, l.v = l.k[:0], l.v[:0]
		clear(l.conv)
		clear(l.rec)
	}
}

// Clone returns an independent copy (e.g. to keep a chat prefix and try a
// continuation). The profile is not copied.
func (s *State) Clone() *State {
	c := &State{pos: s.pos, layers: make([]layerState, len(s.layers))}
	for i, l := range s.layers {
		c.layers[i] = layerState{k: slices.Clone(l.k), v: slices.Clone(l.v), conv: slices.Clone(l.conv), rec: slices.Clone(l.rec)}
	}
	return c
}

// Bytes is the memory the caches hold (KV cache plus recurrent state).
func (s *State) Bytes() int64 {
	var n int64
	for _, l := range s.layers {
		n += int64(cap(l.k)+cap(l.v)+len(l.conv)+len(l.rec)) * 4
	}
	return n
}

// Phase is a category of the per-layer time breakdown.
type Phase int

// The phases of a layer's time.
const (
	// PhaseMixer is full attention or the GatedDeltaNet, projections included.
	PhaseMixer Phase = iota
	// PhaseRouting is the router projection, softmax and top-K.
	PhaseRouting
	// PhaseExpertIO is time spent waiting for expert files (not hidden behind
	// the shared expert's compute).
	PhaseExpertIO
	// PhaseExpertCompute is the routed and shared experts' FFNs (or the dense MLP).
	PhaseExpertCompute
	// PhaseOther is norms, residual adds and bookkeeping.
	PhaseOther
	NumPhases
)

func (p Phase) String() string {
	return [...]string{"attention/delta-net", "routing", "expert I/O", "expert compute", "other"}[p]
}

// Profile accumulates Forward's time per layer and phase.
type Profile struct {
	Layers [][NumPhases]time.Duration
	// Head is embedding lookup, final norm and the output projection.
	Head time.Duration
	// Tokens counts the tokens processed.
	Tokens int
	// ExpertsFetched counts expert files requested (a prefill chunk requests
	// the union of its tokens' experts once).
	ExpertsFetched int64
}

// Total sums every phase of every layer plus the head.
func (p *Profile) Total() time.Duration {
	t := p.Head
	for _, l := range p.Layers {
		for _, d := range l {
			t += d
		}
	}
	return t
}

// PhaseTotal sums one phase over the layers.
func (p *Profile) PhaseTotal(ph Phase) time.Duration {
	var t time.Duration
	for _, l := range p.Layers {
		t += l[ph]
	}
	return t
}

// clock measures consecutive intervals into a profile (no-op when nil).
type clock struct {
	p    *Profile
	last time.Time
}

func newClock(p *Profile, layers int) clock {
	if p == nil {
		return clock{}
	}
	for len(p.Layers) < layers {
		p.Layers = append(p.Layers, [NumPhases]time.Duration{})
	}
	return clock{p: p, last: time.Now()}
}

// lap charges the time since the last lap to (layer, phase); layer −1 is the head.
func (c *clock) lap(layer int, ph Phase) {
	if c.p == nil {
		return
	}
	now := time.Now()
	d := now.Sub(c.last)
	c.last = now
	if layer < 0 {
		c.p.Head += d
		return
	}
	c.p.Layers[layer][ph] += d
}

// workspace holds per-State scratch buffers reused across Forward calls.
type workspace struct {
	h, xn, mix, moe []float32
	qp, kp, vp      []float32
	attn, gate      []float32
	qkv, z, b, a    []float32
	core            []float32
	router          []float32
	sg, su, sd, sgs []float32
	logits, hn      []float32
	ex, eg, eu, ey  []float32
}

// grow returns (*buf)[:n], reallocating when too small.
func grow(buf *[]float32, n int) []float32 {
	if cap(*buf) < n {
		*buf = make([]float32, n)
	}
	*buf = (*buf)[:n]
	return *buf
}
