package server

import (
	"context"
	"errors"
	"sync"
)

// queue admits at most `slots` generations at a time and lets the others wait
// in arrival order (a channel semaphore would let any waiter win, so a
// request could starve behind later ones). A waiter whose context ends
// leaves the line; at most maxWait may wait.
type queue struct {
	mu      sync.Mutex
	free    int
	maxWait int
	waiting []chan struct{} // FIFO; a closed channel owns a slot
	running int
}

var errQueueFull = errors.New("too many requests waiting")

func newQueue(slots, maxWait int) *queue {
	return &queue{free: slots, maxWait: maxWait}
}

// acquire waits for a slot; release must follow a nil return.
func (q *queue) acquire(ctx context.Context) error {
	q.mu.Lock()
	if q.free > 0 && len(q.waiting) == 0 {
		q.free--
		q.running++
		q.mu.Unlock()
		return nil
	}
	if len(q.waiting) >= q.maxWait {
		q.mu.Unlock()
		return errQueueFull
	}
	ch := make(chan struct{})
	q.waiting = append(q.waiting, ch)
	q.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		q.mu.Lock()
		defer q.mu.Unlock()
		for i, w := range q.waiting {
			if w == ch {
				q.waiting = append(q.waiting[:i], q.waiting[i+1:]...)
				return context.Cause(ctx)
			}
		}
		// The slot was handed over just as the context ended: pass it on.
		q.releaseLocked()
		return context.Cause(ctx)
	}
}

func (q *queue) release() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.releaseLocked()
}

func (q *queue) releaseLocked() {
	q.running--
	if len(q.waiting) > 0 {
		ch := q.waiting[0]
		q.waiting = q.waiting[1:]
		q.running++
		close(ch)
		return
	}
	q.free++
}

// load returns the running and waiting counts.
func (q *queue) load() (running, waiting int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.running, len(q.waiting)
}
