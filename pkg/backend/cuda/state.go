//go:build cuda && linux

package cuda

import (
	"fmt"
	"runtime"
	"sync"

	"github.com/fm-moe/fm/pkg/backend"
)

// state is one sequence's per-layer device memory: a KV cache that grows by
// doubling (keys after QK-norm and RoPE, values, [positions × KVHeads·HeadDim]
// each), or a GatedDeltaNet's conv state [(K−1) × C] and recurrent state
// [ValueHeads × KeyDim × ValueDim]. Buffers come from the device pool, so
// growing or releasing never synchronizes the device.
type state struct {
	g       *gpu
	layers  []layerState
	mu      sync.Mutex
	cleanup runtime.Cleanup
	bufs    *[]Buffer // every buffer held, for the cleanup
	freed   bool
}

type layerState struct {
	spec        backend.LayerSpec
	k, v        Buffer
	capPos      int
	length      int
	conv, rec   Buffer
	kvDim       int
	convN, recN int
}

func (g *gpu) state(st backend.State) *state {
	s, ok := st.(*state)
	if !ok || s.g.d != g.d {
		panic(fmt.Sprintf("cuda: state is not of this device (%T)", st))
	}
	if s.freed {
		panic("cuda: state was released")
	}
	return s
}

func (g *gpu) NewState(specs []backend.LayerSpec) (backend.State, error) {
	g.flushExperts()
	s := &state{g: g, layers: make([]layerState, len(specs)), bufs: new([]Buffer)}
	for i, sp := range specs {
		ls := &s.layers[i]
		ls.spec = sp
		if a := sp.Attention; a != nil {
			ls.kvDim = a.KVHeads * a.HeadDim
		}
		if dn := sp.DeltaNet; dn != nil {
			ls.convN = (dn.ConvKernel - 1) * dn.Channels()
			ls.recN = dn.ValueHeads * dn.KeyDim * dn.ValueDim
			var err error
			if ls.conv, err = s.alloc(ls.convN * 4); err != nil {
				s.Release()
				return nil, err
			}
			if ls.rec, err = s.alloc(ls.recN * 4); err != nil {
				s.Release()
				return nil, err
			}
			g.d.Zero(ls.conv, 0, ls.convN*4)
			g.d.Zero(ls.rec, 0, ls.recN*4)
		}
	}
	d := g.d
	s.cleanup = runtime.AddCleanup(s, func(bufs *[]Buffer) {
		for _, b := range *bufs {
			d.Free(b)
		}
	}, s.bufs)
	return s, nil
}

func (s *state) alloc(n int) (Buffer, error) {
	if n == 0 {
		return Buffer{}, nil
	}
	b, err := s.g.d.Alloc(n)
	if err != nil {
		return Buffer{}, err
	}
	*s.bufs = append(*s.bufs, b)
	return b, nil
}

func (s *state) free(b Buffer) {
	if b.Ptr == 0 {
		return
	}
	for i, x := range *s.bufs {
		if x.Ptr == b.Ptr {
			*s.bufs = append((*s.bufs)[:i], (*s.bufs)[i+1:]...)
			break
		}
	}
	s.g.d.Free(b)
}

// reserve makes room for n positions in an attention layer's cache.
func (s *state) reserve(ls *layerState, n int) error {
	if n <= ls.capPos {
		return nil
	}
	c := max(256, 2*ls.capPos)
	for c < n {
		c *= 2
	}
	k, err := s.alloc(c * ls.kvDim * 4)
	if err != nil {
		return err
	}
	v, err := s.alloc(c * ls.kvDim * 4)
	if err != nil {
		s.free(k)
		return err
	}
	if ls.length > 0 {
		s.g.d.Copy(k, 0, ls.k, 0, ls.length*ls.kvDim*4)
		s.g.d.Copy(v, 0, ls.v, 0, ls.length*ls.kvDim*4)
	}
	s.free(ls.k)
	s.free(ls.v)
	ls.k, ls.v, ls.capPos = k, v, c
	return nil
}

func (s *state) Clone() (backend.State, error) {
	s.g.flushExperts()
	s.mu.Lock()
	defer s.mu.Unlock()
	specs := make([]backend.LayerSpec, len(s.layers))
	for i := range s.layers {
		specs[i] = s.layers[i].spec
	}
	cs, err := s.g.NewState(specs)
	if err != nil {
		return nil, err
	}
	c := cs.(*state)
	for i := range s.layers {
		src, dst := &s.layers[i], &c.layers[i]
		if src.spec.Attention != nil && src.length > 0 {
			if err := c.reserve(dst, src.length); err != nil {
				c.Release()
				return nil, err
			}
			n := src.length * src.kvDim * 4
			s.g.d.Copy(dst.k, 0, src.k, 0, n)
			s.g.d.Copy(dst.v, 0, src.v, 0, n)
			dst.length = src.length
		}
		if src.spec.DeltaNet != nil {
			s.g.d.Copy(dst.conv, 0, src.conv, 0, src.convN*4)
			s.g.d.Copy(dst.rec, 0, src.rec, 0, src.recN*4)
		}
	}
	return c, s.g.d.Err()
}

func (s *state) Reset() {
	s.g.flushExperts()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.layers {
		ls := &s.layers[i]
		ls.length = 0
		if ls.spec.DeltaNet != nil {
			s.g.d.Zero(ls.conv, 0, ls.convN*4)
			s.g.d.Zero(ls.rec, 0, ls.recN*4)
		}
	}
}

func (s *state) Bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, b := range *s.bufs {
		n += int64(b.Size)
	}
	return n
}

func (s *state) Release() {
	s.g.flushExperts()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.freed {
		return
	}
	s.freed = true
	s.cleanup.Stop()
	for _, b := range *s.bufs {
		s.g.d.Free(b)
	}
	*s.bufs = nil
}
