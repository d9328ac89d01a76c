package experts

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"
)

// Options.Mmap: the expert files are mapped instead of read. What it saves is
// the copy of every expert a token routes to (a pread from the page cache
// copies at memory speed, the whole working set per token) and the hand-off
// to a read worker for experts already mapped.

// checkMmapOptions rejects the options Mmap cannot honour.
func checkMmapOptions(opts Options) error {
	switch {
	case !mmapSupported:
		return errors.New("mapping expert files (Mmap) is not supported on this platform")
	case opts.DirectIO:
		return errors.New("Mmap and DirectIO exclude each other: a mapping reads through the page cache")
	case opts.CacheBytes > 0:
		return errors.New("Mmap keeps no RAM cache of its own (the page cache is the cache): leave CacheBytes at 0")
	case opts.FS != nil:
		if _, ok := opts.FS.(osFS); !ok {
			return errors.New("Mmap needs the operating system's files, not a custom FS")
		}
	}
	return nil
}

// mapExpert maps the file of k whole, asks the kernel to read it ahead, and
// touches every page so that the computation that follows does not fault
// (the read workers do this in parallel, one file each).
func (s *Store) mapExpert(ctx context.Context, k key) ([]byte, error) {
	path := s.set.Path(s.dir, k.layer, k.id)
	start := time.Now()
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: open: %w", path, stripPath(err, path))
	}
	defer f.Close() // the mapping outlives the descriptor
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: stat: %w", path, stripPath(err, path))
	}
	if st.Size() != int64(s.size) {
		return nil, fmt.Errorf("%s: short read: got %d of %d bytes", path, min(st.Size(), int64(s.size)), s.size)
	}
	data, err := mapFile(f, s.size)
	if err != nil {
		return nil, fmt.Errorf("%s: mmap: %w", path, err)
	}
	var sink byte
	for off := 0; off < len(data); off += mmapPage {
		if off%(1<<20) == 0 && ctx.Err() != nil {
			unmapFile(data)
			return nil, ctx.Err()
		}
		sink += data[off]
	}
	mmapSink.Store(uint32(sink))
	s.stats.ioTime.Add(int64(time.Since(start)))
	s.stats.reads.Add(1)
	s.stats.bytes.Add(int64(len(data)))
	if err := s.checker.check(k.layer, k.id, data); err != nil {
		unmapFile(data)
		return nil, err
	}
	return data, nil
}

// unmapIdle unmaps, at Close, every mapping no Expert handle still uses (those
// still handed out stay mapped: unmapping them would turn a late read into a
// crash).
func (s *Store) unmapIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, e := range s.live {
		if e.refs == 0 && e.buf != nil {
			unmapFile(e.buf)
			e.buf = nil
			delete(s.live, k)
		}
	}
}

// keepAll is the "policy" of Mmap mode: every mapped expert stays.
type keepAll struct{ n int }

func (p *keepAll) admit(e *entry, evict func(*entry)) { p.n++ }
func (p *keepAll) hit(e *entry)                       {}
func (p *keepAll) len() int                           { return p.n }
