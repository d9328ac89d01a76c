package layout

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Dir is an opened prepared directory: the manifest and model_weights.bin mapped
// read-only. Expert files are not opened here (see pkg/experts).
type Dir struct {
	Path     string
	Manifest *Manifest
	dense    []byte // mmap of model_weights.bin
}

// Open reads the manifest of dir, checks that model_weights.bin has the size the
// manifest records, and maps it read-only. It does not hash the file: that is
// Verify's job (fm-infer verify), since hashing a multi-GB blob at every start
// would cost seconds.
func Open(dir string) (*Dir, error) {
	m, err := ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, m.Dense.File)
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() != m.Dense.Size {
		return nil, fmt.Errorf("%s: size %d, manifest says %d (re-run fm-extract)", path, st.Size(), m.Dense.Size)
	}
	d := &Dir{Path: dir, Manifest: m}
	if st.Size() > 0 {
		d.dense, err = unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			return nil, fmt.Errorf("%s: mmap: %w", path, err)
		}
	}
	return d, nil
}

// Bytes returns the bytes of a part of model_weights.bin (zero-copy).
func (d *Dir) Bytes(p Part) []byte { return d.dense[p.Offset : p.Offset+p.Size : p.Offset+p.Size] }

// Dense returns the whole mapped model_weights.bin.
func (d *Dir) Dense() []byte { return d.dense }

// Close unmaps model_weights.bin.
func (d *Dir) Close() error {
	if d.dense == nil {
		return nil
	}
	err := unix.Munmap(d.dense)
	d.dense = nil
	return err
}
