package workpool

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
)

func TestRunAll(t *testing.T) {
	var sum atomic.Int64
	if err := Run(context.Background(), 3, 100, func(_ context.Context, i int) error {
		sum.Add(int64(i))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if sum.Load() != 4950 {
		t.Fatalf("sum %d, want 4950", sum.Load())
	}
	if err := Run(context.Background(), 0, 0, nil); err != nil {
		t.Fatalf("empty run: %v", err)
	}
}

func TestRunFirstErrorCancels(t *testing.T) {
	boom := errors.New("boom")
	var ran atomic.Int64
	err := Run(context.Background(), 2, 1000, func(ctx context.Context, i int) error {
		ran.Add(1)
		switch {
		case i < 5:
			return nil
		case i == 5:
			return boom
		}
		<-ctx.Done() // later items wait until the failure cancels them
		return ctx.Err()
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want boom", err)
	}
	if ran.Load() >= 1000 {
		t.Fatal("items kept being fed after the first error")
	}
}

func TestRunCallerCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := Run(ctx, 2, 10, func(context.Context, int) error { return nil })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}
