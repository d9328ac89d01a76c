package checkpoint

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"unsafe"

	"github.com/fm-moe/fm/pkg/experts"
	"github.com/fm-moe/fm/pkg/layout"
)

// strictDirectFS enforces O_DIRECT's rules on every direct read, whatever
// the test machine's file system does (tmpfs refuses O_DIRECT, ext4 checks
// only the device's block): a buffer address, offset or length that is not a
// multiple of 4096 fails with EINVAL, and, as with O_DIRECT, a read that runs
// past the end of the file returns the bytes that are there. refuse makes
// direct opens fail as tmpfs's do; fail, when set, makes every direct read
// return half of its bytes and that error.
type strictDirectFS struct {
	refuse bool
	fail   error
	reads  atomic.Int64
}

func (fs *strictDirectFS) Open(path string, direct bool) (experts.File, error) {
	if !direct {
		return os.Open(path)
	}
	if fs.refuse {
		return nil, &os.PathError{Op: "open", Path: path, Err: syscall.EINVAL}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	return &strictFile{File: f, fs: fs}, nil
}

type strictFile struct {
	*os.File
	fs *strictDirectFS
}

func (f *strictFile) ReadAt(p []byte, off int64) (int, error) {
	f.fs.reads.Add(1)
	if off%4096 != 0 || len(p)%4096 != 0 || uintptr(unsafe.Pointer(unsafe.SliceData(p)))%4096 != 0 {
		return 0, syscall.EINVAL
	}
	if f.fs.fail != nil {
		n, _ := f.File.ReadAt(p[:len(p)/2], off)
		return n, f.fs.fail
	}
	return f.File.ReadAt(p, off)
}

// TestDirectReadAt: readSpan brings the bytes a plain read does, under
// O_DIRECT's alignment rules, for spans at every alignment, longer than one
// piece, and ending at or near the end of a file whose size is not a
// multiple of the block.
func TestDirectReadAt(t *testing.T) {
	const size = 2*blockBytes + 12345
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	path := filepath.Join(t.TempDir(), "shard.safetensors")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	fs := &strictDirectFS{}
	d := newDirectReads(fs)
	defer d.Close()
	spans := [][2]int64{
		{0, 1}, {1, 4095}, {4095, 2}, {4096, 4096}, {77, blockBytes}, {4000, blockBytes + 8000},
		{size - 1, 1}, {size - 5000, 5000}, {size - blockBytes - 3, blockBytes + 3}, {0, size},
	}
	for range 40 {
		off := r.Int64N(size)
		spans = append(spans, [2]int64{off, 1 + r.Int64N(size-off)})
	}
	f, err := d.open(path)
	if err != nil || f == nil {
		t.Fatalf("open: %v, %v", f, err)
	}
	read := func(off, n int64) ([]byte, error) {
		start := off &^ (directAlign - 1)
		slot := experts.AlignedBuffer(int(directSpan(off + n - start)))
		return slot[off-start : off-start+n], readSpan(f, slot, start, off+n)
	}
	for _, s := range spans {
		dst, err := read(s[0], s[1])
		if err != nil {
			t.Fatalf("span %v: %v", s, err)
		}
		if !bytes.Equal(dst, data[s[0]:s[0]+s[1]]) {
			t.Fatalf("span %v: wrong bytes", s)
		}
	}
	if fs.reads.Load() == 0 {
		t.Fatal("no direct read was made")
	}
	// Past the end of the file: an error, not zeros.
	if _, err := read(size-50, 100); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("read past the end: %v", err)
	}
}

// TestRepackDirectMatchesBuffered: expert files made with direct source
// reads are byte-identical to buffered ones, for every architecture's bf16
// source quantized and copied and for MLX sources copied; a file system that
// refuses direct reads falls back to buffered ones with the same result.
func TestRepackDirectMatchesBuffered(t *testing.T) {
	cases := []struct {
		src  string
		bits int
	}{
		{"golden/qwen3moe-tiny/hf", 4}, {"golden/qwen3moe-tiny/hf", 16},
		{"golden/qwen35moe-tiny/hf", 2}, {"golden/qwen3next-tiny/hf", 8},
		{"golden/qwen3moe-tiny/mlx4", 0}, {"golden/qwen3next-tiny/mlx4", 0},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/bits%d", c.src, c.bits), func(t *testing.T) {
			src := testdata + c.src
			want := repackChecksums(t, src, Options{Bits: c.bits, SourceReads: ReadBuffered})
			strict := &strictDirectFS{}
			if got := repackChecksums(t, src, Options{Bits: c.bits, SourceReads: ReadDirect, directFS: strict}); !slices.EqualFunc(got, want, slices.Equal) {
				t.Fatalf("direct reads (strict alignment) made other files:\n%v\nwant\n%v", got, want)
			}
			if strict.reads.Load() == 0 {
				t.Fatal("no direct read was made")
			}
			if got := repackChecksums(t, src, Options{Bits: c.bits, SourceReads: ReadDirect}); !slices.EqualFunc(got, want, slices.Equal) {
				t.Fatal("direct reads (this machine's O_DIRECT) made other files")
			}
			refused := &strictDirectFS{refuse: true}
			if got := repackChecksums(t, src, Options{Bits: c.bits, SourceReads: ReadDirect, directFS: refused}); !slices.EqualFunc(got, want, slices.Equal) || refused.reads.Load() != 0 {
				t.Fatalf("refused direct reads: %d direct reads, files equal %v", refused.reads.Load(), slices.EqualFunc(got, want, slices.Equal))
			}
		})
	}
}

// TestRepackDirectReadError: a failing direct read fails the run with one
// line naming the shard, the tensor and the cause, and leaves nothing that
// verifies.
func TestRepackDirectReadError(t *testing.T) {
	out := t.TempDir()
	if _, err := Extract(context.Background(), smallHF, out, Options{Bits: 4}); err != nil {
		t.Fatal(err)
	}
	_, err := Repack(context.Background(), smallHF, out, Options{Bits: 4, SourceReads: ReadDirect, directFS: &strictDirectFS{fail: syscall.EIO}})
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	if !errors.Is(err, syscall.EIO) || strings.Contains(msg, "\n") || !strings.Contains(msg, ".safetensors: tensor \"model.layers.") {
		t.Fatalf("error %q: want one line naming the shard and tensor, wrapping EIO", msg)
	}
	assertNothingVerifies(t, out)
}

// repackChecksums converts src (Extract, then Repack with opts) and returns
// the expert files' checksums by layer.
func repackChecksums(t *testing.T, src string, opts Options) [][]string {
	t.Helper()
	out := t.TempDir()
	dense := opts.Bits
	if dense == 2 { // fm-extract keeps dense weights at 4 bits or more
		dense = 4
	}
	if _, err := Extract(context.Background(), src, out, Options{Bits: dense}); err != nil {
		t.Fatal(err)
	}
	opts.Jobs = 3
	if _, err := Repack(context.Background(), src, out, opts); err != nil {
		t.Fatalf("repack: %v", err)
	}
	m, err := layout.ReadManifest(out)
	if err != nil {
		t.Fatal(err)
	}
	set := m.ExpertSet(layout.ExpertsDir)
	if set == nil {
		t.Fatal("no expert set")
	}
	return set.Checksums
}

// TestRepackAutoReads: by default the source is read directly exactly when
// its experts are larger than the machine's memory, and the log says so.
func TestRepackAutoReads(t *testing.T) {
	defer func(f func() int64) { machineMemory = f }(machineMemory)
	for _, ram := range []int64{1 << 40, 1000} {
		machineMemory = func() int64 { return ram }
		fs := &strictDirectFS{}
		var log strings.Builder
		out := t.TempDir()
		if _, err := Extract(context.Background(), smallHF, out, Options{Bits: 4}); err != nil {
			t.Fatal(err)
		}
		if _, err := Repack(context.Background(), smallHF, out, Options{Log: &log, directFS: fs}); err != nil {
			t.Fatal(err)
		}
		direct := fs.reads.Load() > 0
		said := strings.Contains(log.String(), "around the page cache")
		if want := ram == 1000; direct != want || said != want {
			t.Errorf("%d bytes of memory: direct reads %v, logged %v; want %v", ram, direct, said, want)
		}
	}
}
