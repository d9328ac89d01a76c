package experts

import (
	"io"
	iofs "io/fs"
	"math/rand/v2"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fm-moe/fm/pkg/layout"
)

const fakeDir = "/model"

// fixture is an expert set whose files live in memory.
type fixture struct {
	set      *layout.ExpertSet
	contents map[key][]byte
}

// newFixture makes layers×experts expert files of size bytes each, with
// pseudo-random contents and correct checksums.
func newFixture(layers, experts, size int) *fixture {
	fx := &fixture{
		set: &layout.ExpertSet{
			Dir:        layout.ExpertsDir,
			Bits:       4,
			NameFormat: "layer_%02d_expert_%04d.bin",
			FileSize:   int64(size),
			Checksums:  make([][]string, layers),
		},
		contents: map[key][]byte{},
	}
	for l := range layers {
		fx.set.Checksums[l] = make([]string, experts)
		for e := range experts {
			b := make([]byte, size)
			r := rand.New(rand.NewPCG(uint64(l), uint64(e)))
			for i := range b {
				b[i] = byte(r.Uint32())
			}
			fx.contents[key{l, e}] = b
			fx.set.Checksums[l][e] = layout.Checksum(b)
		}
	}
	return fx
}

func (fx *fixture) path(layer, id int) string { return fx.set.Path(fakeDir, layer, id) }

// fs returns a fake FS serving the fixture's files.
func (fx *fixture) fs() *fakeFS {
	f := &fakeFS{files: map[string][]byte{}, readErr: map[string]error{}, readsByPath: map[string]int{}}
	for k, b := range fx.contents {
		f.files[fx.path(k.layer, k.id)] = b
	}
	return f
}

// check fails the test unless every expert holds its file's bytes.
func (fx *fixture) check(t testing.TB, ex []*Expert) {
	t.Helper()
	for _, x := range ex {
		want := fx.contents[key{x.Layer, x.ID}]
		if len(x.Data) != len(want) {
			t.Fatalf("layer %d expert %d: %d bytes, want %d", x.Layer, x.ID, len(x.Data), len(want))
		}
		if layout.Checksum(x.Data) != layout.Checksum(want) {
			t.Fatalf("layer %d expert %d: contents differ from the file", x.Layer, x.ID)
		}
		if !isAligned(x.Data) {
			t.Fatalf("layer %d expert %d: buffer not %d-aligned", x.Layer, x.ID, Alignment)
		}
	}
}

// fakeFS is an in-memory FS that injects faults and counts concurrency.
type fakeFS struct {
	files map[string][]byte

	latency time.Duration // added to every ReadAt
	short   bool          // every ReadAt returns at most half of what was asked
	// gate, when set, holds every ReadAt until it can receive (or gate is closed).
	gate chan struct{}
	// openErr, when set, decides Open's error.
	openErr func(path string, direct bool) error

	mu          sync.Mutex
	readErr     map[string]error // ReadAt error per path
	inFlight    int
	maxInFlight int
	opens       int
	directOpens int
	closes      int
	readCalls   int
	readsByPath map[string]int
	readLog     []readAt // every ReadAt, in call order
}

type readAt struct {
	path string
	off  int64
}

func (f *fakeFS) Open(path string, direct bool) (File, error) {
	if f.openErr != nil {
		if err := f.openErr(path, direct); err != nil {
			return nil, err
		}
	}
	b, ok := f.files[path]
	if !ok {
		return nil, &iofs.PathError{Op: "open", Path: path, Err: syscall.ENOENT}
	}
	f.mu.Lock()
	f.opens++
	if direct {
		f.directOpens++
	}
	f.mu.Unlock()
	return &fakeFile{fs: f, path: path, data: b}, nil
}

func (f *fakeFS) setReadErr(path string, err error) {
	f.mu.Lock()
	f.readErr[path] = err
	f.mu.Unlock()
}

func (f *fakeFS) counts() (maxInFlight, opens, closes, readCalls int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.maxInFlight, f.opens, f.closes, f.readCalls
}

func (f *fakeFS) reads(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.readsByPath[path]
}

type fakeFile struct {
	fs   *fakeFS
	path string
	data []byte
}

func (ff *fakeFile) ReadAt(p []byte, off int64) (int, error) {
	f := ff.fs
	f.mu.Lock()
	f.inFlight++
	f.maxInFlight = max(f.maxInFlight, f.inFlight)
	f.readCalls++
	f.readsByPath[ff.path]++
	f.readLog = append(f.readLog, readAt{ff.path, off})
	err := f.readErr[ff.path]
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inFlight--
		f.mu.Unlock()
	}()
	if f.gate != nil {
		<-f.gate
	}
	if f.latency > 0 {
		time.Sleep(f.latency)
	}
	if err != nil {
		return 0, err
	}
	if off >= int64(len(ff.data)) {
		return 0, io.EOF
	}
	n := len(p)
	if f.short && n > 1 {
		n /= 2
	}
	n = copy(p[:n], ff.data[off:])
	if n < len(p) && off+int64(n) == int64(len(ff.data)) {
		return n, io.EOF
	}
	return n, nil
}

func (ff *fakeFile) Close() error {
	ff.fs.mu.Lock()
	ff.fs.closes++
	ff.fs.mu.Unlock()
	return nil
}
