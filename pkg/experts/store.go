package experts

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fm-moe/fm/pkg/layout"
)

// DefaultIOThreads is the default number of pread workers. An NVMe drive needs
// a queue depth of 8–32 outstanding reads to reach its bandwidth, and the
// development disk measured in docs/libraries.md §3 stops improving at
// 8–16; the workers sleep in the kernel, so CPU count does not matter.
const DefaultIOThreads = 16

// DefaultChunkBytes is the default size of one read: an expert file is read as
// chunks of this size, queued in the order of the experts asked for, so the
// first experts of a layer complete before the last ones (the caller computes
// on each expert as it arrives) instead of all completing together at the
// end. 4 MiB is the block of the disk ceiling (bench.DiskReadBandwidth: 16
// threads × 4 MiB), so DefaultIOThreads workers keep as many bytes in flight
// as that measurement does; smaller chunks order the reads more finely but
// keep fewer bytes in flight, and docs/PERF.md ("chunked expert reads") found
// no difference it could measure through this machine's noise.
const DefaultChunkBytes = 4 << 20

// Options configure a Store. The zero value reads through the page cache with
// DefaultIOThreads workers and no RAM cache.
type Options struct {
	IOThreads int // pread workers; 0 means DefaultIOThreads
	// ChunkBytes is the size of one read (rounded up to Alignment); 0 means
	// DefaultChunkBytes.
	ChunkBytes int
	DirectIO   bool // bypass the page cache (O_DIRECT / F_NOCACHE)
	// CacheBytes is the RAM budget for cached experts; 0 disables the cache.
	// Only whole experts are cached, so the budget holds
	// CacheBytes / set.FileSize of them.
	CacheBytes  int64
	CachePolicy Policy // "" means DefaultPolicy
	// VerifyChecksums hashes each expert file (XXH3-128) the first time the
	// process reads it and fails that read on a mismatch with the manifest;
	// later reads of the same expert are not hashed again. The cost is in
	// docs/PERF.md ("Run-time expert verification").
	VerifyChecksums bool
	// MaxOpenFiles bounds the expert files kept open; 0 means half the
	// process's descriptor limit (at least 64).
	MaxOpenFiles int
	FS           FS // nil means OS()
	// Buffers, when set, allocates the expert buffers (normally the compute
	// backend.Device, so that its BindExpert reads them without a copy).
	Buffers Allocator
	// Mmap maps each expert file read-only on its first Fetch and hands out
	// the mapping itself, kept until Close: no copy, and a Fetch of an expert
	// already mapped does no I/O at all (the page cache is the cache; pages the
	// kernel dropped fault back in as they are used, like any mapped file). The
	// first Fetch of a file prefaults it with the read workers, in parallel.
	// Unix only; not with DirectIO, CacheBytes or a custom FS. A file
	// truncated while mapped kills the process with SIGBUS, as for any mapping.
	Mmap bool
}

// Expert is one expert's file, read whole. Data is shared with the store and
// other callers: read it, never write it. It stays valid until Release, which
// sets it to nil.
type Expert struct {
	Layer, ID int
	Data      []byte // set.FileSize bytes, Alignment-aligned

	entry *entry
}

// Store reads experts of one ExpertSet. Its methods are safe for concurrent
// use.
type Store struct {
	dir     string
	set     *layout.ExpertSet
	size    int
	chunk   int       // bytes per read job (Options.ChunkBytes)
	verify  bool      // Options.VerifyChecksums
	checker *verifier // nil unless verify: each expert hashed on its first read
	files   *fileTable
	pool    *bufferPool
	queue   *jobQueue
	workers sync.WaitGroup
	stats   counters

	mmap     bool        // Options.Mmap: entries hold mappings, never evicted
	direct   atomic.Bool // false after a fallback to buffered reads
	closed   atomic.Bool
	warnMu   sync.Mutex
	warnings []string

	epoch time.Time // Open's time: entries stamp their end as time since it

	mu    sync.Mutex
	live  map[key]*entry // cached, being read, or handed out
	cache policy         // nil without a RAM cache
	evict func(*entry)   // evictLocked, bound once (a method value allocates)
	// free holds entries no one refers to any more, for reuse: a read per
	// expert per token then allocates no entry (and the entry keeps its
	// waiters' capacity).
	free []*entry
}

// maxFreeEntries bounds Store.free: more entries than this are only ever
// live together in a burst (a prefill), and the garbage collector may have
// the surplus.
const maxFreeEntries = 1024

type key struct{ layer, id int }

type entryState uint8

const (
	loading entryState = iota
	ready
	failed
)

// entry is one read of one expert file. It lives in Store.live while it can be
// shared: while cached, or while it has references and has not been evicted.
type entry struct {
	key     key
	buf     []byte
	state   entryState
	err     error
	refs    int  // Expert handles plus one while the read is in flight
	cached  bool // in the RAM cache
	inFree  bool // on Store.free
	waiters []chan<- *entry
	doneAt  time.Duration // when the read ended, since Store.epoch

	// The chunked read in flight: the buffer being filled, the chunks not yet
	// done, whether one failed (the rest then skip their read) and the first
	// error (under Store.mu).
	rbuf    []byte
	pending atomic.Int32
	failed  atomic.Bool
	rerr    error

	// policy bookkeeping
	prev, next              *entry
	segment                 uint8
	heapIndex               int
	uses, lastUse, priority uint64
}

// job is one read: bytes [off, off+n) of e's file (n = 0: the whole file, as
// a mapping).
type job struct {
	ctx    context.Context
	e      *entry
	off, n int
}

var errClosed = errors.New("expert store is closed")

// Open returns a store for the experts of set under the prepared directory dir
// (files at set.Path(dir, layer, id)). It starts the read workers; files are
// opened on first use and kept open.
func Open(dir string, set *layout.ExpertSet, opts Options) (*Store, error) {
	if set == nil {
		return nil, errors.New("experts: nil expert set")
	}
	if set.FileSize <= 0 || int64(int(set.FileSize)) != set.FileSize {
		return nil, fmt.Errorf("%s: expert file size %d is not a positive int", set.Dir, set.FileSize)
	}
	if opts.DirectIO && set.FileSize%Alignment != 0 {
		return nil, fmt.Errorf("%s: expert file size %d is not a multiple of %d, as direct I/O needs (re-run fm-repack)", set.Dir, set.FileSize, Alignment)
	}
	var checker *verifier
	if opts.VerifyChecksums {
		var err error
		if checker, err = newVerifier(dir, set); err != nil {
			return nil, err
		}
	}
	if opts.IOThreads <= 0 {
		opts.IOThreads = DefaultIOThreads
	}
	if opts.ChunkBytes <= 0 {
		opts.ChunkBytes = DefaultChunkBytes
	}
	opts.ChunkBytes = (opts.ChunkBytes + Alignment - 1) / Alignment * Alignment
	if opts.MaxOpenFiles <= 0 {
		opts.MaxOpenFiles = max(64, openFileLimit()/2)
	}
	if opts.FS == nil {
		opts.FS = OS()
	}
	if opts.CacheBytes < 0 {
		return nil, fmt.Errorf("experts: negative cache budget %d", opts.CacheBytes)
	}
	if opts.Mmap {
		if err := checkMmapOptions(opts); err != nil {
			return nil, fmt.Errorf("%s: %w", set.Dir, err)
		}
	}
	s := &Store{
		dir:     dir,
		set:     set,
		size:    int(set.FileSize),
		chunk:   opts.ChunkBytes,
		verify:  opts.VerifyChecksums,
		checker: checker,
		// Idle buffers cover one full round of reads: more would only pin memory
		// after a burst.
		pool:  &bufferPool{size: int(set.FileSize), maxIdle: max(8, 2*opts.IOThreads), alloc: opts.Buffers},
		queue: newJobQueue(),
		live:  map[key]*entry{},
		epoch: time.Now(),
	}
	s.files = newFileTable(opts.FS, opts.MaxOpenFiles, s.path)
	s.evict = s.evictLocked
	s.mmap = opts.Mmap
	if s.mmap {
		s.cache = &keepAll{} // a mapping stays until Close
	}
	s.direct.Store(opts.DirectIO)
	if opts.DirectIO {
		s.probeDirect()
	}
	if opts.CacheBytes > 0 || opts.CachePolicy != "" {
		capacity := int(opts.CacheBytes / set.FileSize)
		p, err := newPolicy(opts.CachePolicy, capacity)
		if err != nil {
			return nil, err
		}
		if capacity > 0 {
			s.cache = p
		}
	}
	for range opts.IOThreads {
		s.workers.Add(1)
		go s.worker()
	}
	return s, nil
}

// Fetch reads the listed experts of one layer in parallel; result[i] is
// ids[i]. Repeated ids share one read. On any error (a failed or short read,
// a checksum mismatch, ctx cancelled) the other reads of the call are
// cancelled, nothing is returned and the error names the file.
func (s *Store) Fetch(ctx context.Context, layer int, ids []int) ([]*Expert, error) {
	if err := s.checkIDs(layer, ids); err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, s.cancelled(ctx, layer, ids)
	}
	start := time.Now()
	defer func() { s.stats.waitTime.Add(int64(time.Since(start))) }()
	s.stats.fetches.Add(1)
	s.stats.experts.Add(int64(len(ids)))
	if out := s.fetchCached(layer, ids); out != nil {
		return out, nil
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // aborts this call's queued reads when it returns early

	out := make([]*Expert, len(ids))
	// Each entry notifies a waiting call once, and a call waits on at most
	// len(ids) entries at a time, so sends to done never block.
	done := make(chan *entry, len(ids))
	waiting := make(map[*entry]bool, len(ids))

	if s.closed.Load() {
		return nil, errClosed
	}
	var fresh []*entry
	s.mu.Lock()
	for i, id := range ids {
		e, isNew := s.acquireLocked(key{layer, id})
		out[i] = &Expert{Layer: layer, ID: id, entry: e}
		if isNew {
			fresh = append(fresh, e)
		}
		s.awaitLocked(e, done, waiting)
	}
	s.mu.Unlock()
	s.submit(ctx, fresh)

	for len(waiting) > 0 {
		select {
		case e := <-done:
			delete(waiting, e)
			if e.err == nil {
				continue
			}
			if ctx.Err() != nil {
				s.Release(out)
				return nil, s.cancelled(ctx, layer, ids)
			}
			if !isContextErr(e.err) {
				s.Release(out)
				return nil, e.err
			}
			// The read belonged to another caller who gave up; read it for us.
			if err := s.retry(ctx, out, e, done, waiting); err != nil {
				s.Release(out)
				return nil, err
			}
		case <-ctx.Done():
			s.Release(out)
			return nil, s.cancelled(ctx, layer, ids)
		}
	}
	for _, ex := range out {
		ex.Data = ex.entry.buf
	}
	return out, nil
}

// since is the time since Open (monotonic).
func (s *Store) since() time.Duration { return time.Since(s.epoch) }

// path is the file of expert k.
func (s *Store) path(k key) string { return s.set.Path(s.dir, k.layer, k.id) }

func (s *Store) cancelled(ctx context.Context, layer int, ids []int) error {
	return fmt.Errorf("%s: fetch layer %d experts %v: %w", s.set.Dir, layer, ids, ctx.Err())
}

// retry replaces, in out, every use of the failed entry old by a new
// acquisition of the same expert.
func (s *Store) retry(ctx context.Context, out []*Expert, old *entry, done chan<- *entry, waiting map[*entry]bool) error {
	if s.closed.Load() {
		return errClosed
	}
	var fresh []*entry
	s.mu.Lock()
	for _, ex := range out {
		if ex.entry != old {
			continue
		}
		e, isNew := s.acquireLocked(old.key)
		if isNew {
			fresh = append(fresh, e)
		}
		s.awaitLocked(e, done, waiting)
		old.refs--
		s.recycleLocked(old)
		ex.entry = e
	}
	s.mu.Unlock()
	s.submit(ctx, fresh)
	return nil
}

// acquireLocked takes a reference to the entry of k, creating it (and
// reporting isNew, with a second reference for the read) when there is none to
// share.
func (s *Store) acquireLocked(k key) (e *entry, isNew bool) {
	if e = s.live[k]; e != nil {
		e.refs++
		if e.cached {
			s.stats.hits.Add(1)
			s.cache.hit(e)
		} else {
			s.stats.shared.Add(1)
		}
		return e, false
	}
	if n := len(s.free); n > 0 {
		e = s.free[n-1]
		s.free[n-1] = nil
		s.free = s.free[:n-1]
		waiters := e.waiters[:0]
		*e = entry{waiters: waiters}
	} else {
		e = &entry{}
	}
	e.key, e.refs, e.heapIndex = k, 2, -1
	s.live[k] = e
	s.stats.misses.Add(1)
	return e, true
}

func (s *Store) awaitLocked(e *entry, done chan<- *entry, waiting map[*entry]bool) {
	if e.state == loading && !waiting[e] {
		waiting[e] = true
		e.waiters = append(e.waiters, done)
	}
}

// submit queues the reads of entries, each as chunks in file order, the
// entries in the order given; after Close they fail at once.
func (s *Store) submit(ctx context.Context, entries []*entry) {
	for _, e := range entries {
		s.submitOne(ctx, e)
	}
}

// submitOne queues the read of one entry (its chunks, in file order, or with
// Mmap its mapping); after Close it fails at once. It allocates nothing once
// the queue and the buffer pool have grown.
func (s *Store) submitOne(ctx context.Context, e *entry) {
	chunk := 0 // Mmap: one job maps the whole file
	if !s.mmap {
		chunk = s.chunk
		e.rbuf = s.pool.get()
		e.pending.Store(int32((s.size + s.chunk - 1) / s.chunk))
	}
	if !s.queue.pushRead(ctx, e, s.size, chunk) {
		if e.rbuf != nil {
			s.pool.put(e.rbuf)
			e.rbuf = nil
		}
		s.finish(e, nil, errClosed)
	}
}

// Release returns experts obtained from Fetch. Their Data must not be used
// afterwards (it is set to nil); releasing an Expert twice is harmless.
func (s *Store) Release(ex []*Expert) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, x := range ex {
		if x == nil || x.entry == nil {
			continue
		}
		e := x.entry
		x.entry, x.Data = nil, nil
		e.refs--
		s.recycleLocked(e)
	}
}

// recycleLocked gives e's buffer back to the pool once nothing uses it.
func (s *Store) recycleLocked(e *entry) {
	if e.refs > 0 || e.cached {
		return
	}
	if s.live[e.key] == e {
		delete(s.live, e.key)
	}
	if e.buf != nil {
		s.pool.put(e.buf)
		e.buf = nil
	}
	// Nothing refers to e any more: no handle, no read, no cache, no waiter
	// (a waiter holds a reference), so it can serve another expert.
	if !e.inFree && len(s.free) < maxFreeEntries {
		e.inFree = true
		s.free = append(s.free, e)
	}
}

func (s *Store) worker() {
	defer s.workers.Done()
	for {
		j, ok := s.queue.pop()
		if !ok {
			return
		}
		if s.mmap {
			if err := j.ctx.Err(); err != nil {
				s.finish(j.e, nil, err)
				continue
			}
			buf, err := s.mapExpert(j.ctx, j.e.key)
			s.finish(j.e, buf, err)
			continue
		}
		err := j.ctx.Err()
		if err == nil && !j.e.failed.Load() {
			err = s.read(j.ctx, j.e.key, j.e.rbuf[j.off:j.off+j.n], j.off)
		}
		s.chunkDone(j.e, err)
	}
}

// chunkDone records the end of one chunk's read; the last chunk of an entry
// (every read into its buffer over) verifies the file and finishes the entry.
func (s *Store) chunkDone(e *entry, err error) {
	if err != nil {
		e.failed.Store(true)
		s.mu.Lock()
		if e.rerr == nil {
			e.rerr = err
		}
		s.mu.Unlock()
	}
	if e.pending.Add(-1) > 0 {
		return
	}
	buf := e.rbuf
	e.rbuf = nil
	s.mu.Lock()
	err = e.rerr
	s.mu.Unlock()
	if err == nil {
		err = s.checker.check(e.key.layer, e.key.id, buf)
	}
	if err != nil {
		s.pool.put(buf)
		s.finish(e, nil, err)
		return
	}
	s.finish(e, buf, nil)
}

// finish records the outcome of e's read, caches it, wakes its waiters and
// drops the read's reference.
func (s *Store) finish(e *entry, buf []byte, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		e.state, e.err = failed, err
		if s.live[e.key] == e {
			delete(s.live, e.key)
		}
	} else {
		e.state, e.buf = ready, buf
		s.admitLocked(e)
	}
	e.doneAt = s.since()
	for _, w := range e.waiters {
		w <- e
	}
	clear(e.waiters)
	e.waiters = e.waiters[:0]
	e.refs--
	s.recycleLocked(e)
}

// admitLocked puts a freshly read entry into the cache, evicting as many as
// needed first so the budget is never exceeded, even briefly. An evicted entry
// still in use leaves the shared map (later fetches read afresh) but keeps its
// buffer until its last Release.
func (s *Store) admitLocked(e *entry) {
	if s.cache == nil {
		return
	}
	s.cache.admit(e, s.evict)
	e.cached = true
}

// read fills buf with bytes [off, off+len(buf)) of the expert file of k.
// The file is found by k in the table of open files; its path is built only to
// open it, so that a read allocates nothing.
func (s *Store) read(ctx context.Context, k key, buf []byte, off int) error {
	for attempt := 0; ; attempt++ {
		direct := s.direct.Load()
		of, err := s.files.acquire(k, direct)
		if err != nil {
			oe := err.(*openError)
			if direct && DirectUnsupported(oe.err) {
				s.fallBack(oe.path, oe.err)
				continue
			}
			return fmt.Errorf("%s: open: %w", oe.path, stripPath(oe.err, oe.path))
		}
		path := of.path
		start := time.Now()
		n, reads, err := readFull(ctx, of.f, buf, int64(off))
		s.stats.ioTime.Add(int64(time.Since(start)))
		s.stats.reads.Add(reads)
		s.stats.bytes.Add(int64(n))
		if err != nil && n == 0 && of.direct && attempt == 0 && errors.Is(err, syscall.EINVAL) {
			// Some filesystems accept O_DIRECT at open and refuse the read. (A
			// refusal after some bytes is the misaligned tail of a short file.)
			s.files.drop(of)
			s.files.release(of)
			s.fallBack(path, err)
			continue
		}
		s.files.release(of)
		switch {
		case err == nil:
		case isContextErr(err):
			return err
		case errors.Is(err, io.ErrUnexpectedEOF),
			of.direct && n%Alignment != 0 && errors.Is(err, syscall.EINVAL): // O_DIRECT refuses to continue past a short file's unaligned end
			return fmt.Errorf("%s: short read: got %d of %d bytes", path, off+n, s.size)
		default:
			return fmt.Errorf("%s: read at offset %d: %w", path, off+n, stripPath(err, path))
		}
		return nil
	}
}

// maxStalls bounds consecutive ReadAt calls that return nothing and no error
// before the file is declared short.
const maxStalls = 8

// ReadFullAt reads len(buf) bytes of f from offset off, continuing after
// short reads; n says how many came. A file that ends early yields
// io.ErrUnexpectedEOF (and a direct read past its end, EINVAL or the like:
// callers that read an aligned span beyond the bytes they need check n).
func ReadFullAt(f File, buf []byte, off int64) (n int, err error) {
	n, _, err = readFull(context.Background(), f, buf, off)
	return n, err
}

// readFull reads len(buf) bytes from offset base, continuing after short
// reads. A file that ends early yields io.ErrUnexpectedEOF.
func readFull(ctx context.Context, f File, buf []byte, base int64) (n int, reads int64, err error) {
	stalls := 0
	for n < len(buf) {
		if err := ctx.Err(); err != nil {
			return n, reads, err
		}
		m, err := f.ReadAt(buf[n:], base+int64(n))
		reads++
		if m < 0 || m > len(buf)-n {
			return n, reads, fmt.Errorf("ReadAt returned %d for a %d-byte read", m, len(buf)-n)
		}
		n += m
		switch {
		case n == len(buf):
			return n, reads, nil // io.EOF alongside the last byte is fine
		case err == io.EOF:
			return n, reads, io.ErrUnexpectedEOF
		case err != nil:
			return n, reads, err
		case m == 0:
			if stalls++; stalls >= maxStalls {
				return n, reads, io.ErrUnexpectedEOF
			}
		default:
			stalls = 0
		}
	}
	return n, reads, nil
}

func (s *Store) fallBack(path string, err error) {
	if s.direct.CompareAndSwap(true, false) {
		s.warnMu.Lock()
		s.warnings = append(s.warnings, fmt.Sprintf("%s: direct I/O refused (%v); reading expert files through the page cache instead", path, err))
		s.warnMu.Unlock()
	}
}

// Warnings returns what the store had to work around, such as a filesystem
// refusing O_DIRECT; each is reported once.
func (s *Store) Warnings() []string {
	s.warnMu.Lock()
	defer s.warnMu.Unlock()
	return append([]string(nil), s.warnings...)
}

// Mapped reports whether the store hands out mappings of the files
// (Options.Mmap) rather than reading them.
func (s *Store) Mapped() bool { return s.mmap }

// DirectIO reports whether reads currently bypass the page cache: false when
// not asked for or after a fallback.
func (s *Store) DirectIO() bool { return s.direct.Load() }

// Stats returns the counters and gauges.
func (s *Store) Stats() Stats {
	st := s.stats.snapshot()
	s.mu.Lock()
	if s.cache != nil {
		st.CachedExperts = int64(s.cache.len())
	}
	s.mu.Unlock()
	st.CachedBytes = st.CachedExperts * int64(s.size)
	if s.checker != nil {
		st.VerifiedBytes, st.VerifyTime = s.checker.hashed.Load(), time.Duration(s.checker.hashNanos.Load())
	}
	live, peak := s.pool.counts()
	st.BufferBytes, st.PeakBufferBytes = live*int64(s.size), peak*int64(s.size)
	return st
}

// ResetStats zeroes the counters and restarts the peak.
func (s *Store) ResetStats() {
	s.stats.reset()
	s.pool.resetPeak()
}

// OpenFiles returns how many expert files are open now.
func (s *Store) OpenFiles() int { return s.files.count() }

// Close stops the workers after the reads already queued and closes the
// files. Experts not yet released stay readable.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	s.queue.close()
	s.workers.Wait()
	if s.mmap {
		s.unmapIdle()
	}
	return s.files.closeAll()
}

func (s *Store) checkIDs(layer int, ids []int) error {
	cs := s.set.Checksums
	if layer < 0 || (len(cs) > 0 && layer >= len(cs)) {
		return fmt.Errorf("%s: layer %d out of range [0, %d)", s.set.Dir, layer, len(cs))
	}
	limit := -1
	if len(cs) > 0 {
		if cs[layer] == nil {
			return fmt.Errorf("%s: layer %d has no routed experts", s.set.Dir, layer)
		}
		limit = len(cs[layer])
	}
	for _, id := range ids {
		if id < 0 || (limit >= 0 && id >= limit) {
			return fmt.Errorf("%s: layer %d: expert %d out of range [0, %d)", s.set.Dir, layer, id, limit)
		}
	}
	return nil
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// DirectUnsupported reports whether err is an FS's refusal of direct I/O
// (ErrDirectIOUnsupported, or EINVAL from the open), after which a reader
// falls back to the page cache.
func DirectUnsupported(err error) bool {
	return errors.Is(err, syscall.EINVAL) || errors.Is(err, ErrDirectIOUnsupported)
}

// stripPath removes an *fs.PathError's own copy of path so that messages name
// the file once.
func stripPath(err error, path string) error {
	var pe *fs.PathError
	if errors.As(err, &pe) && pe.Path == path {
		return pe.Err
	}
	return err
}

// evictLocked is the cache policy's callback for an entry it pushes out.
func (s *Store) evictLocked(v *entry) {
	v.cached = false
	s.stats.evictions.Add(1)
	if s.live[v.key] == v {
		delete(s.live, v.key)
	}
	s.recycleLocked(v)
}

// probeDirect tries O_DIRECT on one expert file at Open, so that a filesystem
// refusing it is reported by Warnings right away rather than at the first
// token. Other failures are left for the reads to report, with their file.
func (s *Store) probeDirect() {
	layer := 0
	for l, cs := range s.set.Checksums {
		if cs != nil {
			layer = l
			break
		}
	}
	path := s.set.Path(s.dir, layer, 0)
	f, err := s.files.fs.Open(path, true)
	if err != nil {
		if DirectUnsupported(err) {
			s.fallBack(path, err)
		}
		return
	}
	defer f.Close()
	buf := AlignedBuffer(Alignment)
	if _, err := f.ReadAt(buf, 0); err != nil && errors.Is(err, syscall.EINVAL) {
		s.fallBack(path, err)
	}
}
