package experts

import (
	"context"
	"errors"
	"slices"
)

// Slot fetches one expert at a time for one caller and is reused from fetch
// to fetch: Start, Wait, Release, over and over. Once the store's entries,
// buffers and open files are warm this allocates nothing (Fetch allocates its
// result), and no goroutine stands between the read worker and the caller:
// the worker that finishes the read wakes the caller's Wait directly. The
// model's decode loop keeps one Slot per expert in flight, so that each
// expert's read is queued as soon as routing names it.
//
// A Slot is used by one goroutine at a time. Slots of one store may be used
// concurrently with each other and with Fetch: they share reads and the RAM
// cache as Fetch calls do, and an error (a failed or short read, a checksum
// mismatch, the context cancelled) is the one Fetch would return for that
// expert, naming the file.
type Slot struct {
	s      *Store
	ctx    context.Context // Start's, until Release
	k      key
	start  int64       // when Start queued the read, since Store.epoch
	e      *entry      // held (one reference) from Start to Release
	notify chan *entry // e's end, when e was being read (capacity 1)
	// waiting: notify is among e.waiters, or its value not yet received.
	waiting bool
	err     error  // the outcome of a failed Start or Wait, until the next Start
	data    []byte // Wait's result, until Release
}

// NewSlot returns an idle Slot of the store.
func (s *Store) NewSlot() *Slot { return &Slot{s: s, notify: make(chan *entry, 1)} }

// Start begins fetching expert id of layer (releasing what the Slot held
// before) and returns without waiting: the read is queued for the workers,
// unless the expert is cached or being read for another caller. Its errors
// are reported by Wait.
func (sl *Slot) Start(ctx context.Context, layer, id int) {
	sl.Release()
	s := sl.s
	sl.ctx, sl.k, sl.err = ctx, key{layer, id}, nil
	one := [1]int{id}
	if err := s.checkIDs(layer, one[:]); err != nil {
		sl.fail(err)
		return
	}
	if ctx.Err() != nil {
		sl.fail(s.cancelled(ctx, layer, []int{id}))
		return
	}
	if s.closed.Load() {
		sl.fail(errClosed)
		return
	}
	s.stats.fetches.Add(1)
	s.stats.experts.Add(1)
	sl.start = int64(s.since())
	s.mu.Lock()
	e, isNew := s.acquireLocked(sl.k)
	sl.awaitLocked(e)
	s.mu.Unlock()
	if isNew {
		s.submitOne(ctx, e)
	}
}

// awaitLocked makes e the Slot's expert, registering for its end while it is
// being read.
func (sl *Slot) awaitLocked(e *entry) {
	sl.e = e
	if e.state == loading {
		e.waiters = append(e.waiters, sl.notify)
		sl.waiting = true
	}
}

func (sl *Slot) fail(err error) {
	sl.err, sl.ctx = err, nil
}

// Ready reports whether the expert's read is over (Wait would not block,
// unless the read failed for another caller's cancellation and is redone).
func (sl *Slot) Ready() bool {
	return sl.err != nil || sl.e == nil || !sl.waiting || len(sl.notify) > 0
}

// Wait waits for the expert Start asked for and returns its whole file,
// valid until Release: the store's buffer, read-only. On an error the Slot
// holds nothing (Release is harmless).
func (sl *Slot) Wait() ([]byte, error) {
	if sl.err != nil {
		return nil, sl.err
	}
	if sl.e == nil {
		return nil, errors.New("experts: Slot.Wait without Start")
	}
	if sl.data != nil {
		return sl.data, nil
	}
	s := sl.s
	for {
		if sl.waiting {
			select {
			case <-sl.notify:
				sl.waiting = false
			case <-sl.ctx.Done():
				err := s.cancelled(sl.ctx, sl.k.layer, []int{sl.k.id})
				sl.Release()
				sl.fail(err)
				return nil, err
			}
		}
		e := sl.e
		if e.err == nil {
			break
		}
		var err error
		switch {
		case sl.ctx.Err() != nil:
			err = s.cancelled(sl.ctx, sl.k.layer, []int{sl.k.id})
		case !isContextErr(e.err):
			err = e.err
		case s.closed.Load():
			err = errClosed
		}
		if err != nil {
			sl.Release()
			sl.fail(err)
			return nil, err
		}
		// The read belonged to another caller who gave up; read it for us.
		s.mu.Lock()
		ne, isNew := s.acquireLocked(sl.k)
		sl.awaitLocked(ne)
		e.refs--
		s.recycleLocked(e)
		s.mu.Unlock()
		if isNew {
			s.submitOne(sl.ctx, ne)
		}
	}
	if d := int64(sl.e.doneAt) - sl.start; d > 0 {
		s.stats.waitTime.Add(d)
	}
	sl.data = sl.e.buf
	return sl.data, nil
}

// Release gives the expert back; its data must not be used afterwards. A read
// still in flight is abandoned (it completes for the cache, or for other
// callers sharing it, and its buffer is recycled). Releasing an idle Slot
// does nothing.
func (sl *Slot) Release() {
	e := sl.e
	if e == nil {
		return
	}
	s := sl.s
	s.mu.Lock()
	if sl.waiting {
		if e.state == loading {
			if i := slices.Index(e.waiters, chan<- *entry(sl.notify)); i >= 0 {
				e.waiters = slices.Delete(e.waiters, i, i+1)
			}
		} else {
			<-sl.notify // finish sent it, under the lock held now
		}
		sl.waiting = false
	}
	e.refs--
	s.recycleLocked(e)
	s.mu.Unlock()
	sl.e, sl.data, sl.ctx = nil, nil, nil
}
