package model

import (
	"errors"
	"fmt"
	"time"

	"github.com/fm-moe/fm/pkg/backend"
)

// State is one sequence's memory: the backend's per-layer state (the KV cache
// of every full-attention layer, the conv and recurrent state of every
// GatedDeltaNet layer), the number of tokens consumed, and the step's
// workspace. It belongs to the Model that made it and may be used by one
// goroutine at a time.
type State struct {
	m   *Model
	pos int
	st  backend.State // nil until the first Forward
	err error         // returned by Forward until Reset: a failed Clone, a step left half done, Release
	ws  workspace
	one [1]int // Decode's token, so that its slice is not allocated

	// Profile, when non-nil, accumulates where Forward spends its time.
	Profile *Profile
}

// NewState returns an empty state (position 0). Device memory is allocated
// by the first Forward, which reports an allocation failure.
func (m *Model) NewState() *State { return &State{m: m} }

// Len is the number of tokens the state has consumed (the next position).
func (s *State) Len() int { return s.pos }

// Reset empties the state for a new sequence, keeping its allocations. It
// also makes a state usable again after a failed Forward.
func (s *State) Reset() {
	s.pos = 0
	if s.err != nil {
		// A step that failed may have left the device state anywhere:
		// free it; the next Forward allocates a new one.
		if s.st != nil {
			s.st.Release()
		}
		s.st, s.err = nil, nil
	}
	if s.st != nil {
		s.st.Reset()
	}
}

// Clone returns an independent copy (e.g. to keep a chat prefix and try a
// continuation). The profile is not copied. If the device cannot allocate
// the copy, the clone's first Forward returns the error.
func (s *State) Clone() *State {
	c := &State{m: s.m, pos: s.pos, err: s.err}
	if s.st != nil && s.err == nil {
		c.st, c.err = s.st.Clone()
	}
	return c
}

// Bytes is the memory the caches hold (KV cache plus recurrent state).
func (s *State) Bytes() int64 {
	if s.st == nil {
		return 0
	}
	return s.st.Bytes()
}

// Err says why Forward refuses the state (a failed Clone, a step left half
// done by an error or a cancellation, Release), or nil when the state holds
// exactly its Len tokens and can continue.
func (s *State) Err() error { return s.err }

// errReleased makes a released state fail loudly if it is used again: a
// fresh allocation behind a position > 0 would compute from an empty cache.
var errReleased = errors.New("forward: the state was released")

// Release frees the state's device memory now rather than when it becomes
// unreachable; the state must not be used afterwards (Forward and Clone
// refuse it). Releasing twice does nothing more.
func (s *State) Release() {
	if s.st != nil {
		s.st.Release()
		s.st = nil
	}
	s.ws.release()
	if s.ws.marks != nil {
		s.ws.marks.Release()
		s.ws.marks, s.ws.marked = nil, false
	}
	s.err = errReleased
}

// Shrink frees the step workspace (the activations of the largest step so
// far, which Bytes does not count) and keeps the sequence; the next Forward
// allocates the workspace again. For states kept idle, such as snapshots.
func (s *State) Shrink() { s.ws.release() }

// ready allocates the backend state on first use.
func (s *State) ready() error {
	if s.err != nil {
		return s.err
	}
	if s.st == nil {
		s.st, s.err = s.m.dev.NewState(s.m.specs)
	}
	return s.err
}

// Reserve asks the device to make room for positions tokens in the KV caches
// now (backend.Reserver), so that they do not grow in the middle of a decode;
// a no-op on devices without it. The engine reserves a request's prompt and
// its most tokens.
func (s *State) Reserve(positions int) error {
	if err := s.ready(); err != nil {
		return err
	}
	if r, ok := s.st.(backend.Reserver); ok {
		return r.Reserve(positions)
	}
	return nil
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

// workspace holds a State's device tensors, sized for the largest step so
// far and reused across Forward calls, plus host buffers for what is
// downloaded.
type workspace struct {
	rows int // the capacity, in tokens, of every tensor below
	tensors

	// logits [V] has its own capacity: most steps need one row of it.
	logits     backend.Tensor
	logitsRows int

	router  []float32 // host copy of the router logits
	routing *routing  // the last sparse layer's routing
	rt      routing   // routeStep's, reused

	// views are the tensors' first viewRows rows (kept while T does not
	// change), lview the logits' first lviewRows rows.
	views     tensors
	viewRows  int
	lview     backend.Tensor
	lviewRows int
	group     expertGroup  // moeBatched's experts in flight
	fetch     fetcher      // the expert reads of the layer, reused
	held      []heldExpert // moe's experts computed and not yet released

	// marks are the deferred non-finite checks of a backend.NonFiniteMarker
	// (nil: checked at once), markRows what Read gives, marked whether a
	// Mark was issued since the last Read.
	marks    backend.Marks
	markRows []int
	marked   bool
}

// logitsView returns n rows of the logits tensor, growing it when needed.
func (ws *workspace) logitsView(m *Model, n int) (backend.Tensor, error) {
	if n > ws.logitsRows {
		if ws.logits != nil {
			ws.logits.Release()
		}
		t, err := m.dev.NewTensor(n, m.cfg.VocabSize)
		if err != nil {
			ws.logits, ws.logitsRows = nil, 0
			return nil, fmt.Errorf("logits for %d tokens: %w", n, err)
		}
		ws.logits, ws.logitsRows = t, n
		ws.lview, ws.lviewRows = nil, 0
	}
	if n != ws.lviewRows { // kept: a decode step makes no view
		ws.lview, ws.lviewRows = ws.logits.Slice(0, n), n
	}
	return ws.lview, nil
}

// tensors are the activations of one step, each [T × the width in brackets].
type tensors struct {
	h, xn, mix backend.Tensor // [H]: residual stream, its norm, a block's output
	// xnAlt and mixAlt [H] trade places with xn and mix after every sparse
	// layer, so that they hold the last sparse layer's MoE input and output
	// until the next one ends: a deferred non-finite check found after later
	// layers ran can still re-run that layer's experts one by one.
	xnAlt, mixAlt backend.Tensor
	qp, kp, vp    backend.Tensor // attention projections [qRows], [kvDim], [kvDim]
	attn          backend.Tensor // attention output before o_proj [attnDim]
	qkv, z, b, a  backend.Tensor // delta-net projections [cc], [vd], [nv], [nv]
	core          backend.Tensor // delta-net output before out_proj [vd]
	router        backend.Tensor // router logits [E]
	shared        backend.Tensor // shared expert output [H]
	sharedGate    backend.Tensor // shared expert gate logit [1]
	// proj holds the outputs of a mixer's input projections for one
	// MatMuls call (filled by the caller each time, so no call allocates).
	proj [4]backend.Tensor
}

// all lists the tensor fields, for allocation, slicing and release.
func (t *tensors) all() []*backend.Tensor {
	return []*backend.Tensor{&t.h, &t.xn, &t.mix, &t.xnAlt, &t.mixAlt, &t.qp, &t.kp, &t.vp, &t.attn, &t.qkv, &t.z, &t.b, &t.a,
		&t.core, &t.router, &t.shared, &t.sharedGate}
}

// widths gives the columns of each field of tensors for model m (0: the model
// has no block that uses it), in the order of all.
func (m *Model) widths() []int {
	c := &m.cfg
	H := c.HiddenSize
	on := func(b bool, n int) int {
		if b {
			return n
		}
		return 0
	}
	att, dn := m.hasAttention, m.hasDeltaNet
	nv := c.LinearNumValueHeads
	shared := m.hasSparse && c.SharedExpertIntermediateSize > 0
	return []int{H, H, H, on(m.hasSparse, H), on(m.hasSparse, H), on(att, m.qRows), on(att, m.kvDim), on(att, m.kvDim), on(att, m.attnDim),
		on(dn, m.cc), on(dn, m.vd), on(dn, nv), on(dn, nv), on(dn, m.vd),
		on(m.hasSparse, c.NumExperts), on(shared, H), on(shared, 1)}
}

// step returns the workspace's tensors as views of T rows, growing them first
// when T exceeds their capacity.
func (ws *workspace) step(m *Model, T int) (*tensors, error) {
	fields := ws.all()
	if T > ws.rows {
		ws.release()
		for i, cols := range m.widths() {
			if cols == 0 {
				continue
			}
			t, err := m.dev.NewTensor(T, cols)
			if err != nil {
				ws.release()
				return nil, fmt.Errorf("workspace for %d tokens: %w", T, err)
			}
			*fields[i] = t
		}
		ws.rows = T
		ws.viewRows = 0
	}
	// The views of the last T are kept: a decode step (T = 1 every time)
	// makes none.
	v := &ws.views
	if ws.viewRows != T {
		for i, f := range v.all() {
			*f = nil
			if t := *fields[i]; t != nil {
				*f = t.Slice(0, T)
			}
		}
		ws.viewRows = T
	}
	return v, nil
}

func (ws *workspace) release() {
	for _, f := range append(ws.all(), &ws.logits) {
		if *f != nil {
			(*f).Release()
			*f = nil
		}
	}
	ws.rows, ws.logitsRows, ws.viewRows = 0, 0, 0
	ws.lview, ws.lviewRows = nil, 0
	ws.views = tensors{}
}

// grow returns (*buf)[:n], reallocating when too small.
func grow(buf *[]float32, n int) []float32 {
	if cap(*buf) < n {
		*buf = make([]float32, n)
	}
	*buf = (*buf)[:n]
	return *buf
}
