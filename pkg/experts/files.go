package experts

import (
	"container/list"
	"errors"
	"sync"
)

// fileTable keeps expert files open between reads (one open per expert file
// per process lifetime instead of one per read) but never more than max at a
// time: a large model has tens of thousands of expert files and the
// descriptor limit is often 20k or less. Idle files are closed least recently
// used first; files being read are never closed.
type fileTable struct {
	fs  FS
	max int

	mu   sync.Mutex
	open map[string]*openFile
	idle list.List // of *openFile with refs == 0, most recently used at the front
}

type openFile struct {
	path   string
	f      File
	direct bool
	refs   int
	dead   bool // dropped from the table; close when the last reader is done
	elem   *list.Element
}

func newFileTable(fs FS, max int) *fileTable {
	return &fileTable{fs: fs, max: max, open: map[string]*openFile{}}
}

// acquire returns path opened (direct or not, as asked when it is first
// opened) and holds it open until release.
func (t *fileTable) acquire(path string, direct bool) (*openFile, error) {
	t.mu.Lock()
	if of := t.open[path]; of != nil {
		t.holdLocked(of)
		t.mu.Unlock()
		return of, nil
	}
	t.mu.Unlock()

	// Open outside the lock: a cold open may wait for the disk (inode lookup),
	// and other workers should not queue behind it.
	f, err := t.fs.Open(path, direct)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	if of := t.open[path]; of != nil { // another worker won the race
		t.holdLocked(of)
		t.mu.Unlock()
		f.Close()
		return of, nil
	}
	of := &openFile{path: path, f: f, direct: direct, refs: 1}
	t.open[path] = of
	victims := t.trimLocked()
	t.mu.Unlock()
	closeAll(victims)
	return of, nil
}

func (t *fileTable) holdLocked(of *openFile) {
	if of.refs == 0 && of.elem != nil {
		t.idle.Remove(of.elem)
		of.elem = nil
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
		of.elem = t.idle.PushFront(of)
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
	if t.open[of.path] == of {
		delete(t.open, of.path)
	}
	if of.elem != nil {
		t.idle.Remove(of.elem)
		of.elem = nil
	}
	of.dead = true
}

// trimLocked unlinks idle files beyond the limit and returns them to be closed
// outside the lock.
func (t *fileTable) trimLocked() []*openFile {
	var victims []*openFile
	for len(t.open) > t.max && t.idle.Len() > 0 {
		of := t.idle.Remove(t.idle.Back()).(*openFile)
		of.elem = nil
		of.dead = true
		delete(t.open, of.path)
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
	t.open = map[string]*openFile{}
	t.idle.Init()
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
