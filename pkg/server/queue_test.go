package server

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestQueueFIFO: with one slot, waiters get it in arrival order; a waiter
// whose context ends leaves the line; beyond maxWait a request is refused.
func TestQueueFIFO(t *testing.T) {
	q := newQueue(1, 3)
	ctx := context.Background()
	if err := q.acquire(ctx); err != nil {
		t.Fatal(err)
	}
	order := make(chan int, 3)
	gone, leave := context.WithCancel(ctx)
	for i := range 3 {
		c := ctx
		if i == 1 {
			c = gone
		}
		go func() {
			if err := q.acquire(c); err != nil {
				order <- -i - 1
				return
			}
			order <- i
			time.Sleep(time.Millisecond)
			q.release()
		}()
		// Wait until it is in line, so the arrival order is known.
		for {
			if _, w := q.load(); w == i+1 {
				break
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	if err := q.acquire(ctx); !errors.Is(err, errQueueFull) {
		t.Errorf("fourth waiter: %v, want errQueueFull", err)
	}
	leave()
	if got := <-order; got != -2 {
		t.Fatalf("first event %d, want the cancelled waiter 1 leaving (-2)", got)
	}
	q.release()
	for _, want := range []int{0, 2} {
		if got := <-order; got != want {
			t.Errorf("slot went to waiter %d, want %d", got, want)
		}
	}
	time.Sleep(5 * time.Millisecond)
	if r, w := q.load(); r != 0 || w != 0 {
		t.Errorf("after all: %d running, %d waiting", r, w)
	}
}
