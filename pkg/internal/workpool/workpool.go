// Package workpool runs indexed work items on a fixed number of goroutines:
// the shape of every parallel file job in the converters (repack, requantize,
// verify).
package workpool

import (
	"context"
	"sync"
)

// Run calls f(ctx, i) for every i in [0, n) on at most jobs goroutines. The
// first error cancels ctx for the remaining items and is returned; otherwise
// Run returns ctx.Err() (nil unless the caller's context ended), so an
// interrupted run never reports success.
func Run(ctx context.Context, jobs, n int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	next := make(chan int)
	for range max(1, min(jobs, n)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
				}
			}
		}()
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}
