package experts

import (
	"context"
	"sync"
)

// jobQueue is the read workers' FIFO. Unlike a channel it never blocks the
// submitter, so a Fetch can queue all its reads at once and be waiting for
// results (and see the first error) right away.
type jobQueue struct {
	mu     sync.Mutex
	cond   sync.Cond
	jobs   []job
	head   int
	closed bool
}

func newJobQueue() *jobQueue {
	q := &jobQueue{}
	q.cond.L = &q.mu
	return q
}

// pushRead queues the read of e's file of size bytes as chunks of chunk
// bytes in file order (chunk <= 0: one job, n = 0, for the whole file) without
// building a slice of them; it reports false, queueing nothing, after close.
func (q *jobQueue) pushRead(ctx context.Context, e *entry, size, chunk int) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	if q.head > 0 && q.head >= len(q.jobs)/2 { // compact, so a busy queue does not grow forever
		n := copy(q.jobs, q.jobs[q.head:])
		clear(q.jobs[n:])
		q.jobs, q.head = q.jobs[:n], 0
	}
	if chunk <= 0 {
		q.jobs = append(q.jobs, job{ctx: ctx, e: e})
		q.cond.Signal()
		return true
	}
	n := 0
	for off := 0; off < size; off += chunk {
		q.jobs = append(q.jobs, job{ctx, e, off, min(chunk, size-off)})
		n++
	}
	if n == 1 {
		q.cond.Signal()
	} else {
		q.cond.Broadcast()
	}
	return true
}

// pop waits for a job; it reports false once the queue is closed and drained.
func (q *jobQueue) pop() (job, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.head == len(q.jobs) && !q.closed {
		q.cond.Wait()
	}
	if q.head == len(q.jobs) {
		return job{}, false
	}
	j := q.jobs[q.head]
	q.jobs[q.head] = job{}
	q.head++
	return j, true
}

func (q *jobQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.cond.Broadcast()
	q.mu.Unlock()
}
