package backendtest

import (
	"errors"
	"fmt"
	"sync"

	"github.com/fm-moe/fm/pkg/backend"
)

// Counting wraps a Device and keeps account of its States: how many are
// alive (made by NewState or Clone and not yet released) and every misuse —
// a second Release, a released State used again. Code that owns States (the
// engine's prefix cache and sessions, the HTTP server) is tested with it: on
// a GPU an unreleased State is device memory lost per request. SetCloneError
// injects allocation failures into Clone, for the error paths.
type Counting struct {
	backend.Device

	mu       sync.Mutex
	live     int
	made     int
	misuse   []error
	cloneErr error
}

// NewCounting wraps d; Close closes d.
func NewCounting(d backend.Device) *Counting { return &Counting{Device: d} }

// Live is the number of States made and not yet released.
func (c *Counting) Live() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.live
}

// Made is the number of States made so far (NewState and Clone).
func (c *Counting) Made() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.made
}

// Misuse returns the misuses seen so far, joined (nil: none).
func (c *Counting) Misuse() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return errors.Join(c.misuse...)
}

// SetCloneError makes every Clone fail with err from now on (nil: succeed
// again), as a device out of memory would.
func (c *Counting) SetCloneError(err error) {
	c.mu.Lock()
	c.cloneErr = err
	c.mu.Unlock()
}

func (c *Counting) track(st backend.State) backend.State {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.live++
	c.made++
	return &countedState{c: c, st: st, id: c.made}
}

func (c *Counting) misused(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.misuse = append(c.misuse, fmt.Errorf(format, args...))
}

// NewState makes a counted State.
func (c *Counting) NewState(layers []backend.LayerSpec) (backend.State, error) {
	st, err := c.Device.NewState(layers)
	if err != nil {
		return nil, err
	}
	return c.track(st), nil
}

// unwrap returns the wrapped device's State of st, recording the use of a
// released one.
func (c *Counting) unwrap(st backend.State, op string) backend.State {
	s := st.(*countedState)
	s.use(op)
	return s.st
}

// Attention runs the wrapped device's Attention on st's own State.
func (c *Counting) Attention(out, q, k, v backend.Tensor, st backend.State, layer, pos int, p *backend.AttentionParams) {
	c.Device.Attention(out, q, k, v, c.unwrap(st, "Attention"), layer, pos, p)
}

// DeltaNet runs the wrapped device's DeltaNet on st's own State.
func (c *Counting) DeltaNet(out, qkv, z, b, a backend.Tensor, st backend.State, layer int, p *backend.DeltaNetParams) {
	c.Device.DeltaNet(out, qkv, z, b, a, c.unwrap(st, "DeltaNet"), layer, p)
}

// countedState is a State of a Counting device.
type countedState struct {
	c        *Counting
	st       backend.State
	id       int // the order it was made in, for messages
	released bool
}

// use records a use of a released state and reports whether it was one
// (the wrapped state is then not touched where that can be avoided).
func (s *countedState) use(op string) (released bool) {
	s.c.mu.Lock()
	released = s.released
	s.c.mu.Unlock()
	if released {
		s.c.misused("state #%d: %s after Release", s.id, op)
	}
	return released
}

func (s *countedState) Clone() (backend.State, error) {
	if s.use("Clone") {
		return nil, errors.New("backendtest: Clone of a released state")
	}
	s.c.mu.Lock()
	err := s.c.cloneErr
	s.c.mu.Unlock()
	if err != nil {
		return nil, err
	}
	cl, err := s.st.Clone()
	if err != nil {
		return nil, err
	}
	return s.c.track(cl), nil
}

func (s *countedState) Reset() {
	if !s.use("Reset") {
		s.st.Reset()
	}
}

func (s *countedState) Bytes() int64 {
	if s.use("Bytes") {
		return 0
	}
	return s.st.Bytes()
}

func (s *countedState) Release() {
	s.c.mu.Lock()
	again := s.released
	if !again {
		s.released = true
		s.c.live--
	}
	s.c.mu.Unlock()
	if again {
		s.c.misused("state #%d: released twice", s.id)
		return
	}
	s.st.Release()
}
