package experts

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fm-moe/fm/pkg/layout"
)

// checkData fails unless data is the whole file of (layer, id).
func (fx *fixture) checkData(t testing.TB, layer, id int, data []byte) {
	t.Helper()
	fx.check(t, []*Expert{{Layer: layer, ID: id, Data: data}})
}

// waitInFlight waits until n reads have been in flight at once (blocked on
// the gate).
func (f *fakeFS) waitInFlight(n int) {
	for {
		if m, _, _, _ := f.counts(); m >= n {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSlotReadsAndReuses: Slots hand out the right files, reused fetch after
// fetch, on the page-cache and the O_DIRECT + RAM-cache paths, with several
// Slots sharing one read of the same expert.
func TestSlotReadsAndReuses(t *testing.T) {
	fx := newFixture(2, 8, testSize)
	for _, opts := range []Options{{IOThreads: 3}, {IOThreads: 3, DirectIO: true, CacheBytes: 3 * testSize}} {
		t.Run(fmt.Sprintf("cache=%d", opts.CacheBytes/testSize), func(t *testing.T) {
			fs := fx.fs()
			fs.latency = 100 * time.Microsecond
			s := openStore(t, fx, fs, opts)
			slots := []*Slot{s.NewSlot(), s.NewSlot(), s.NewSlot()}
			ctx := context.Background()
			for round := range 20 {
				layer := round % 2
				ids := []int{round % 8, (round * 3) % 8, round % 8} // the first and last share a read
				for i, sl := range slots {
					sl.Start(ctx, layer, ids[i])
				}
				for i, sl := range slots {
					data, err := sl.Wait()
					if err != nil {
						t.Fatal(err)
					}
					if !sl.Ready() {
						t.Error("Ready is false after Wait")
					}
					fx.checkData(t, layer, ids[i], data)
				}
				for _, sl := range slots {
					sl.Release()
					sl.Release() // harmless
				}
			}
			st := s.Stats()
			if st.Fetches != 60 || st.Experts != 60 {
				t.Errorf("stats: %d fetches of %d experts, want 60 of 60", st.Fetches, st.Experts)
			}
			if st.Shared == 0 {
				t.Error("no read shared between Slots asking for the same expert")
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			for k, e := range s.live {
				if e.refs != 0 || !e.cached {
					t.Errorf("layer %d expert %d: %d references left after Release", k.layer, k.id, e.refs)
				}
			}
		})
	}
}

// TestSlotErrorsAreFetchs: a failed read reaches Wait as exactly the error
// Fetch returns for that expert, naming the file, and the Slot is reusable.
func TestSlotErrorsAreFetchs(t *testing.T) {
	fx := newFixture(2, 8, testSize)
	bad := fx.path(1, 5)
	for _, tc := range []struct {
		name   string
		inject func(*fakeFS)
		is     error
	}{
		{"eio", func(f *fakeFS) { f.setReadErr(bad, syscall.EIO) }, syscall.EIO},
		{"short-file", func(f *fakeFS) { f.files[bad] = f.files[bad][:testSize-100] }, nil},
		{"missing", func(f *fakeFS) { delete(f.files, bad) }, syscall.ENOENT},
		{"checksum", func(f *fakeFS) {
			b := append([]byte(nil), f.files[bad]...)
			b[testSize-1]++
			f.files[bad] = b
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := Options{VerifyChecksums: true, CacheBytes: 4 * testSize, ChunkBytes: Alignment}
			fsA, fsB := fx.fs(), fx.fs()
			tc.inject(fsA)
			tc.inject(fsB)
			_, want := openStore(t, fx, fsA, opts).Fetch(context.Background(), 1, []int{5})
			if want == nil {
				t.Fatal("Fetch succeeded")
			}
			s := openStore(t, fx, fsB, opts)
			sl := s.NewSlot()
			sl.Start(context.Background(), 1, 5)
			data, err := sl.Wait()
			if err == nil || data != nil {
				t.Fatalf("Wait: %d bytes, error %v; want an error", len(data), err)
			}
			// A file read in chunks reports the chunk that failed first, so
			// the offset may differ between two stores (both name the file).
			if anyOffset(err.Error()) != anyOffset(want.Error()) {
				t.Errorf("Wait: %q, Fetch: %q", err, want)
			}
			if !strings.Contains(err.Error(), bad) {
				t.Errorf("error %q does not name %s", err, bad)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %q is not %v", err, tc.is)
			}
			if _, again := sl.Wait(); again == nil || again.Error() != err.Error() {
				t.Errorf("second Wait: %v, want the same error", again)
			}
			sl.Release()
			sl.Start(context.Background(), 1, 2)
			if data, err = sl.Wait(); err != nil {
				t.Fatal(err)
			}
			fx.checkData(t, 1, 2, data)
			sl.Release()
			// Out of range: Fetch's error too.
			_, want = s.Fetch(context.Background(), 1, []int{8})
			sl.Start(context.Background(), 1, 8)
			if _, err := sl.Wait(); err == nil || err.Error() != want.Error() {
				t.Errorf("out of range: %v, want %v", err, want)
			}
		})
	}
}

// TestSlotCancellation: a cancelled context ends Wait at once, even while the
// read is blocked, with Fetch's error; the abandoned read completes for the
// store and leaks nothing; the Slot is reusable.
func TestSlotCancellation(t *testing.T) {
	fx := newFixture(1, 8, testSize)
	fs := fx.fs()
	fs.gate = make(chan struct{})
	s := openStore(t, fx, fs, Options{IOThreads: 2})
	ctx, cancel := context.WithCancel(context.Background())
	sl := s.NewSlot()
	sl.Start(ctx, 0, 3)
	fs.waitInFlight(1)
	if sl.Ready() {
		t.Error("Ready while the read is blocked")
	}
	cancel()
	errc := make(chan error, 1)
	go func() { _, err := sl.Wait(); errc <- err }()
	var err error
	select {
	case err = <-errc:
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return after cancellation while the read was blocked")
	}
	want := fmt.Sprintf("%s: fetch layer 0 experts [3]: context canceled", fx.set.Dir)
	if !errors.Is(err, context.Canceled) || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
	// Already cancelled at Start: nothing read.
	sl.Start(ctx, 0, 4)
	if _, err := sl.Wait(); err == nil || err.Error() != strings.Replace(want, "[3]", "[4]", 1) {
		t.Errorf("cancelled Start: %v", err)
	}
	close(fs.gate)
	sl.Start(context.Background(), 0, 3)
	data, err := sl.Wait()
	if err != nil {
		t.Fatal(err)
	}
	fx.checkData(t, 0, 3, data)
	sl.Release()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The abandoned read may still be in flight at the second Start, which
	// then shares it (it completes: its one ReadAt had begun), or not.
	if _, _, _, calls := fs.counts(); calls < 1 || calls > 2 {
		t.Errorf("%d reads, want 1 or 2 (the abandoned one, shared or followed by a new one)", calls)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.live) != 0 {
		t.Errorf("%d entries live after every Slot released", len(s.live))
	}
}

// TestSlotReleaseAbandonsRead: Release while the read is in flight returns at
// once; the read's buffer goes back to the pool when it ends.
func TestSlotReleaseAbandonsRead(t *testing.T) {
	fx := newFixture(1, 8, testSize)
	fs := fx.fs()
	fs.gate = make(chan struct{})
	s := openStore(t, fx, fs, Options{IOThreads: 4})
	slots := []*Slot{s.NewSlot(), s.NewSlot(), s.NewSlot()}
	for i, sl := range slots {
		sl.Start(context.Background(), 0, i)
	}
	for _, sl := range slots {
		sl.Release()
	}
	close(fs.gate)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.live) != 0 {
		t.Errorf("%d entries live after the abandoned reads ended", len(s.live))
	}
	if live, _ := s.pool.counts(); live != 3 || len(s.pool.idle) != 3 {
		t.Errorf("%d buffers, %d idle; want the 3 read, all idle", live, len(s.pool.idle))
	}
}

// TestSlotJoinsCancelledRead: a Slot sharing a read that its first caller
// cancels gets the expert anyway (read again for it).
func TestSlotJoinsCancelledRead(t *testing.T) {
	fx, fs, s, cancelA, errA := fetchBlocked(t)
	sl := s.NewSlot()
	sl.Start(context.Background(), 0, 1) // queued behind A's, shared
	if s.Stats().Shared != 1 {
		t.Fatalf("the Slot did not join A's read: %+v", s.Stats())
	}
	cancelA()
	if err := <-errA; !errors.Is(err, context.Canceled) {
		t.Fatalf("A: got %v, want context.Canceled", err)
	}
	close(fs.gate)
	data, err := sl.Wait()
	if err != nil {
		t.Fatal(err)
	}
	fx.checkData(t, 0, 1, data)
	sl.Release()
}

// TestSlotAllocations: once the store is warm, a Start/Wait/Release round of
// a layer's experts allocates nothing, from real files through the page
// cache, with O_DIRECT, and with O_DIRECT and a RAM cache smaller than the
// working set (admissions and ARC evictions every round).
func TestSlotAllocations(t *testing.T) {
	fx := newFixture(2, 16, testSize)
	dir := t.TempDir()
	writeSet(t, dir, fx)
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"pread", Options{}},
		{"direct-io", Options{DirectIO: true}},
		{"direct-io+cache", Options{DirectIO: true, CacheBytes: 10 * testSize}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.VerifyChecksums = true
			s, err := Open(dir, fx.set, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			slots := []*Slot{s.NewSlot(), s.NewSlot(), s.NewSlot(), s.NewSlot()}
			ctx := context.Background()
			round := 0
			step := func() {
				for i, sl := range slots {
					sl.Start(ctx, round%2, (round*5+i*3)%16)
				}
				for _, sl := range slots {
					if _, err := sl.Wait(); err != nil {
						t.Fatal(err)
					}
				}
				for _, sl := range slots {
					sl.Release()
				}
				round++
			}
			for range 64 { // every file opened and verified, entries and buffers made
				step()
			}
			if n := testing.AllocsPerRun(100, step); n != 0 {
				t.Errorf("%.1f allocations per round of %d experts, want 0", n, len(slots))
			}
		})
	}
}

// TestSlotStress: Slots and Fetch calls on one store from several goroutines,
// some giving up early, on every cache policy (run it with -race).
func TestSlotStress(t *testing.T) {
	stress(t, 11, func(s *Store, fx *fixture, r *rand.Rand, g int) error {
		layers, experts := len(fx.set.Checksums), len(fx.set.Checksums[0])
		slots := []*Slot{s.NewSlot(), s.NewSlot(), s.NewSlot()}
		defer func() {
			for _, sl := range slots {
				sl.Release()
			}
		}()
		for range 150 {
			ctx, cancel := stressContext(r)
			layer := r.IntN(layers)
			if g%3 == 0 { // a Fetch caller among the Slot users
				ex, err := s.Fetch(ctx, layer, []int{r.IntN(8), r.IntN(experts)})
				cancel()
				if err == nil {
					s.Release(ex)
				} else if !isContextErr(err) {
					return err
				}
				continue
			}
			err := slotRound(slots, ctx, fx, layer, r, experts)
			cancel()
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// slotRound starts the slots on random experts of layer, checks what they
// hand out (leaving the last one unread at times) and releases them.
func slotRound(slots []*Slot, ctx context.Context, fx *fixture, layer int, r *rand.Rand, experts int) error {
	for _, sl := range slots {
		sl.Start(ctx, layer, r.IntN(experts))
	}
	defer func() {
		for _, sl := range slots {
			sl.Release()
		}
	}()
	for i, sl := range slots {
		if i == len(slots)-1 && r.IntN(4) == 0 {
			continue // released unread
		}
		data, err := sl.Wait()
		if err != nil {
			if isContextErr(err) {
				continue
			}
			return err
		}
		if layout.Checksum(data) != fx.set.Checksums[layer][sl.k.id] {
			return fmt.Errorf("layer %d expert %d: corrupted buffer", layer, sl.k.id)
		}
	}
	return nil
}

var readOffset = regexp.MustCompile(`read at offset [0-9]+`)

// anyOffset replaces the offset in a read error with N.
func anyOffset(msg string) string { return readOffset.ReplaceAllString(msg, "read at offset N") }
