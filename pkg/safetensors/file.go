package safetensors

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
)

// MaxHeaderSize bounds the JSON header, like the reference implementation (100 MB).
const MaxHeaderSize = 100 << 20

// Tensor describes one tensor of a file. Offset is absolute in the file.
type Tensor struct {
	Name   string
	DType  DType
	Shape  []int64
	Offset int64 // absolute file offset of the first byte
	Size   int64 // bytes
	// Err is set when this tensor's entry is unusable (unknown dtype, size not
	// matching shape × dtype); other tensors of the file stay readable.
	Err error

	r io.ReaderAt
}

// NumElements returns the product of the shape (1 for a scalar).
func (t *Tensor) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Open returns a reader of exactly the tensor's bytes.
func (t *Tensor) Open() *io.SectionReader { return io.NewSectionReader(t.r, t.Offset, t.Size) }

// ReadAll reads the tensor's bytes (for small tensors; large ones should use Open).
func (t *Tensor) ReadAll() ([]byte, error) {
	if t.Err != nil {
		return nil, t.Err
	}
	buf := make([]byte, t.Size)
	if _, err := t.r.ReadAt(buf, t.Offset); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("tensor %q: read %d bytes at offset %d: %w", t.Name, t.Size, t.Offset, err)
	}
	return buf, nil
}

// File is one parsed safetensors file.
type File struct {
	Path     string
	Size     int64
	Metadata map[string]string
	// Tensors in data-offset order.
	Tensors []*Tensor
	byName  map[string]*Tensor
	closer  io.Closer
}

// Tensor returns the named tensor or nil.
func (f *File) Tensor(name string) *Tensor { return f.byName[name] }

// Close closes the underlying file when the File was made by Open.
func (f *File) Close() error {
	if f.closer != nil {
		return f.closer.Close()
	}
	return nil
}

// Open opens and parses the header of the safetensors file at path.
func Open(path string) (*File, error) {
	fd, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := fd.Stat()
	if err != nil {
		fd.Close()
		return nil, err
	}
	f, err := Parse(fd, st.Size())
	if err != nil {
		fd.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f.Path = path
	f.closer = fd
	return f, nil
}

type headerEntry struct {
	DType       DType    `json:"dtype"`
	Shape       []int64  `json:"shape"`
	DataOffsets [2]int64 `json:"data_offsets"`
}

// Parse reads the header of a safetensors image of the given size from r.
// Errors name the offending tensor; a tensor whose dtype is unknown gets Tensor.Err
// instead of failing the whole file.
func Parse(r io.ReaderAt, size int64) (*File, error) {
	var lenBuf [8]byte
	if size < 8 {
		return nil, fmt.Errorf("file of %d bytes is too short for a safetensors header", size)
	}
	if _, err := r.ReadAt(lenBuf[:], 0); err != nil {
		return nil, fmt.Errorf("read header length: %w", err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > MaxHeaderSize {
		return nil, fmt.Errorf("header length %d exceeds the %d-byte limit", n, MaxHeaderSize)
	}
	if int64(n) > size-8 {
		return nil, fmt.Errorf("header length %d runs past the end of the %d-byte file", n, size)
	}
	hdr := make([]byte, n)
	if _, err := r.ReadAt(hdr, 8); err != nil {
		return nil, fmt.Errorf("read %d-byte header: %w", n, err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(hdr, &raw); err != nil {
		return nil, fmt.Errorf("malformed header JSON: %w", err)
	}
	dataStart := int64(8 + n)
	dataLen := size - dataStart
	f := &File{Size: size, byName: make(map[string]*Tensor, len(raw))}
	for name, msg := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &f.Metadata); err != nil {
				return nil, fmt.Errorf("malformed __metadata__: %w", err)
			}
			continue
		}
		var e headerEntry
		if err := json.Unmarshal(msg, &e); err != nil {
			return nil, fmt.Errorf("tensor %q: malformed entry: %w", name, err)
		}
		begin, end := e.DataOffsets[0], e.DataOffsets[1]
		if begin < 0 || end < begin || end > dataLen {
			return nil, fmt.Errorf("tensor %q: data offsets [%d, %d) outside the %d-byte data section", name, begin, end, dataLen)
		}
		t := &Tensor{Name: name, DType: e.DType, Shape: e.Shape, Offset: dataStart + begin, Size: end - begin, r: r}
		// The element count is bounded by the data section, so a shape whose
		// product overflows int64 (and could wrap to the right size) is refused.
		elems := int64(1)
		for _, d := range e.Shape {
			if d < 0 {
				return nil, fmt.Errorf("tensor %q: negative dimension in shape %v", name, e.Shape)
			}
			if d != 0 && elems > (dataLen+1)/d {
				elems = dataLen + 1
			} else {
				elems *= d
			}
		}
		if es, err := e.DType.Size(); err != nil {
			t.Err = fmt.Errorf("tensor %q: %w", name, err)
		} else if elems > dataLen {
			return nil, fmt.Errorf("tensor %q: shape %v of %s needs more than the %d-byte data section", name, e.Shape, e.DType, dataLen)
		} else if want := elems * int64(es); want != t.Size {
			return nil, fmt.Errorf("tensor %q: shape %v of %s needs %d bytes, data offsets give %d", name, e.Shape, e.DType, want, t.Size)
		}
		f.Tensors = append(f.Tensors, t)
		f.byName[name] = t
	}
	sort.Slice(f.Tensors, func(i, j int) bool {
		if f.Tensors[i].Offset != f.Tensors[j].Offset {
			return f.Tensors[i].Offset < f.Tensors[j].Offset
		}
		return f.Tensors[i].Name < f.Tensors[j].Name
	})
	return f, nil
}
