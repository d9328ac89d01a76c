package experts

import (
	"errors"
	"sync"
)

// fileTable keeps expert files open between reads (one open per expert file
// per process lifetime instead of one per read) but never more than max at a
// time: a large model has tens of thousands of expert files and the
// descriptor limit is often 20k or less. Idle files are closed least recently
// used first; files being read are never closed.
//
// Files are found by their (layer, expert) and the path is built only to open
// one, and the idle list is threaded through the files themselves, so that a
// read of a file already open allocates nothing (a decode step reads every
// expert it routes to).
type fileTable struct {
	fs     FS
	max    int
	pathOf func(key) string

	mu   sync.Mutex
	open map[key]*openFile
	idle idleList // files with refs == 0, most recently used at the front
}

type openFile struct {
	key    key
	path   string
	f      File
	direct bool
	refs   int
	dead   bool // dropped from the table; close when the last reader is done

	// The idle list's links (inIdle: on it).
	prev, next *openFile
	inIdle     bool
}

// idleList is a doubly linked list of open files threaded through them.
type idleList struct {
	front, back *openFile
	n           int
}

func (l *idleList) pushFront(of *openFile) {
	of.prev, of.next, of.inIdle = nil, l.front, true
	if l.front != nil {
		l.front.prev = of
	} else {
		l.back = of
	}
	l.front = of
	l.n++
}

func (l *idleList) remove(of *openFile) {
	if !of.inIdle {
		return
	}
	if of.prev != nil {
		of.prev.next = of.next
	} else {
		l.front = of.next
	}
	if of.next != nil {
		of.next.prev = of.prev
	} else {
		l.back = of.prev
	}
	of.prev, of.next, of.inIdle = nil, nil, false
	l.n--
}

func newFileTable(fs FS, max int, pathOf func(key) string) *fileTable {
	return &fileTable{fs: fs, max: max, pathOf: pathOf, open: map[key]*openFile{}}
}

// acquire returns the file of k opened (direct or not, as asked when it is
// first opened) and holds it open until release.
func (t *fileTable) acquire(k key, direct bool) (*openFile, error) {
	t.mu.Lock()
	if of := t.open[k]; of != nil {
		t.holdLocked(of)
		t.mu.Unlock()
		return of, nil
	}
	t.mu.Unlock()

	// Open outside the lock: a cold open may wait for the disk (inode lookup),
	// and other workers should not queue behind it.
	path := t.pathOf(k)
	f, err := t.fs.Open(path, direct)
	if err != nil {
		return nil, &openError{path, err}
	}
	t.mu.Lock()
	if of := t.open[k]; of != nil { // another worker won the race
		t.holdLocked(of)
		t.mu.Unlock()
		f.Close()
		return of, nil
	}
	of := &openFile{key: k, path: path, f: f, direct: direct, refs: 1}
	t.open[k] = of
	victims := t.trimLocked()
	t.mu.Unlock()
	closeAll(victims)
	return of, nil
}

// openError is a failed open of path, so that the caller can name the file
// without building its path again.
type openError struct {
	path string
	err  error
}

func (e *openError) Error() string { return e.path + ": open: " + e.err.Error() }
func (e *openError) Unwrap() error { return e.err }

func (t *fileTable) holdLocked(of *openFile) {
	if of.refs == 0 {
		t.idle.remove(of)
	}
	of.refs++
}

// release ends one use of of.
func (t *fileTable) release(of *openFile) {
	t.mu.Lock()
	of.refs--
	var victims []*openFile
	switch {
	case of.refs > 0:
	case of.dead:
		victims = append(victims, of)
	default:
		t.idle.pushFront(of)
		victims = t.trimLocked()
	}
	t.mu.Unlock()
	closeAll(victims)
}

// drop removes of from the table so that the next acquire opens the file
// afresh (after a fallback from direct to buffered I/O); it is closed when its
// last reader releases it.
func (t *fileTable) drop(of *openFile) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.open[of.key] == of {
		delete(t.open, of.key)
	}
	t.idle.remove(of)
	of.dead = true
}

// trimLocked unlinks idle files beyond the limit and returns them to be closed
// outside the lock.
func (t *fileTable) trimLocked() []*openFile {
	var victims []*openFile
	for len(t.open) > t.max && t.idle.n > 0 {
		of := t.idle.back
		t.idle.remove(of)
		of.dead = true
		delete(t.open, of.key)
		victims = append(victims, of)
	}
	return victims
}

func (t *fileTable) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.open)
}

// closeAll closes every file in the table; the caller guarantees no reads are
// in flight.
func (t *fileTable) closeAll() error {
	t.mu.Lock()
	files := make([]*openFile, 0, len(t.open))
	for _, of := range t.open {
		files = append(files, of)
	}
	t.open = map[key]*openFile{}
	t.idle = idleList{}
	t.mu.Unlock()
	var errs []error
	for _, of := range files {
		if err := of.f.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func closeAll(files []*openFile) {
	for _, of := range files {
		of.f.Close() // read-only file: a close error loses nothing
	}
}
