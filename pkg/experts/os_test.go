package experts

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fm-moe/fm/pkg/layout"
)

// writeSet writes fx's expert files under dir as fm-repack lays them out.
func writeSet(t testing.TB, dir string, fx *fixture) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, fx.set.Dir), 0o755); err != nil {
		t.Fatal(err)
	}
	for k, b := range fx.contents {
		if err := os.WriteFile(fx.set.Path(dir, k.layer, k.id), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOSFiles reads real files in the test's temporary directory, through the
// page cache and with O_DIRECT (falling back, with a warning, where the
// filesystem refuses it).
func TestOSFiles(t *testing.T) {
	const layers, experts = 3, 6
	fx := newFixture(layers, experts, 3*Alignment)
	dir := t.TempDir()
	writeSet(t, dir, fx)
	short := fx.set.Path(dir, 2, 5)
	if err := os.Truncate(short, 3*Alignment-1000); err != nil {
		t.Fatal(err)
	}
	for _, opts := range []Options{
		{},
		{DirectIO: true},
		{DirectIO: true, CacheBytes: 4 * 3 * Alignment, VerifyChecksums: true, IOThreads: 3},
		{Mmap: true, VerifyChecksums: true, IOThreads: 3},
	} {
		t.Run(fmt.Sprintf("direct=%v/cache=%d/mmap=%v", opts.DirectIO, opts.CacheBytes, opts.Mmap), func(t *testing.T) {
			s, err := Open(dir, fx.set, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for pass := range 2 {
				for layer := range layers {
					ids := []int{0, 1, 2, 3, 4}
					if layer == 2 && pass == 1 {
						ids = []int{4, 5, 3} // expert 5 is short
					}
					ex, err := s.Fetch(context.Background(), layer, ids)
					if layer == 2 && pass == 1 {
						want := fmt.Sprintf("%s: short read: got %d of %d bytes", short, 3*Alignment-1000, 3*Alignment)
						if err == nil || err.Error() != want {
							t.Fatalf("got error %v, want %q", err, want)
						}
						continue
					}
					if err != nil {
						t.Fatal(err)
					}
					fx.check(t, ex)
					s.Release(ex)
				}
			}
			if opts.DirectIO {
				t.Logf("direct I/O in effect: %v; warnings: %q", s.DirectIO(), s.Warnings())
				if !s.DirectIO() && len(s.Warnings()) == 0 {
					t.Error("direct I/O dropped without a warning")
				}
			} else if len(s.Warnings()) != 0 {
				t.Errorf("warnings without direct I/O: %q", s.Warnings())
			}
			// A short file must not be mistaken for a filesystem without O_DIRECT.
			for _, w := range s.Warnings() {
				if strings.Contains(w, short) {
					t.Errorf("fallback blamed on the short file: %s", w)
				}
			}
			if st := s.Stats(); st.Bytes < int64(2*layers*5-3)*3*Alignment-1000 && opts.CacheBytes == 0 && !opts.Mmap {
				t.Errorf("read %d bytes, fewer than asked", st.Bytes)
			}
		})
	}
}

func TestOSMissingDirectory(t *testing.T) {
	fx := newFixture(1, 2, Alignment)
	dir := t.TempDir()
	s, err := Open(dir, fx.set, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.Fetch(context.Background(), 0, []int{1})
	path := fx.set.Path(dir, 0, 1)
	if err == nil || !strings.HasPrefix(err.Error(), path+": open: ") || strings.Count(err.Error(), path) != 1 {
		t.Errorf("got %v, want an open error naming %s once", err, path)
	}
}

// Open accepts the expert sets fm-repack describes.
func TestOpenManifestSet(t *testing.T) {
	set := &layout.ExpertSet{Dir: layout.ExpertsDir, NameFormat: "layer_%02d_expert_%04d.bin", FileSize: 7077888, Checksums: [][]string{nil, make([]string, 512)}}
	s, err := Open(t.TempDir(), set, Options{DirectIO: true, CacheBytes: 10 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestMmap: a mapped expert is read (mapped and prefaulted) once; later
// fetches hand out the same mapping without I/O; the options it cannot honour
// are refused with a reason.
func TestMmap(t *testing.T) {
	if !mmapSupported {
		t.Skip("no mmap on this platform")
	}
	fx := newFixture(2, 4, 2*Alignment)
	dir := t.TempDir()
	writeSet(t, dir, fx)
	s, err := Open(dir, fx.set, Options{Mmap: true, IOThreads: 2})
	if err != nil {
		t.Fatal(err)
	}
	var first []byte
	for pass := range 3 {
		ex, err := s.Fetch(context.Background(), 1, []int{3, 0, 3})
		if err != nil {
			t.Fatal(err)
		}
		fx.check(t, ex)
		if pass == 0 {
			first = ex[0].Data
		} else if &ex[0].Data[0] != &first[0] {
			t.Errorf("pass %d: expert 3 mapped again", pass)
		}
		s.Release(ex)
	}
	if st := s.Stats(); st.Reads != 2 || st.Bytes != 2*2*Alignment || st.Hits != 6 {
		t.Errorf("stats %+v: want 2 reads of 2 experts, then 6 hits", st)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{Mmap: true, DirectIO: true}, "exclude each other"},
		{Options{Mmap: true, CacheBytes: 1 << 20}, "leave CacheBytes at 0"},
		{Options{Mmap: true, FS: fx.fs()}, "custom FS"},
	} {
		if _, err := Open(dir, fx.set, tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%+v): got %v, want an error containing %q", tc.opts, err, tc.want)
		}
	}
}
