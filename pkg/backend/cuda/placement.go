//go:build cuda && linux

package cuda

import "github.com/fm-moe/fm/pkg/backend"

// placement says where an expert file's parts go in device memory. fm's own
// files put every part at a 4096-byte offset, so the file is copied whole and
// the parts keep their offsets. The contract allows parts at any byte offset;
// then each part is copied to its own 256-byte aligned place, because the
// kernels load weights 16 bytes and scales 2 or 4 bytes at a time.
type placement struct {
	whole bool
	size  int                  // device bytes
	parts []backend.Part       // source parts, in order
	at    map[backend.Part]int // device offset of each source part
}

func placeExpert(l *backend.ExpertLayout) *placement {
	p := &placement{at: map[backend.Part]int{}}
	var parts []backend.Part
	for _, m := range []*backend.ExpertMatrix{&l.Gate, &l.Up, &l.Down} {
		parts = append(parts, m.Data)
		if m.Desc.Format == backend.Affine {
			parts = append(parts, m.Scales, m.Biases)
		}
	}
	p.whole = true
	for _, pt := range parts {
		if pt.Offset%16 != 0 {
			p.whole = false
		}
	}
	if p.whole {
		p.size = l.FileSize
		for _, pt := range parts {
			p.at[pt] = pt.Offset
		}
		return p
	}
	for _, pt := range parts {
		if _, dup := p.at[pt]; dup {
			continue
		}
		p.at[pt] = p.size
		p.parts = append(p.parts, pt)
		p.size += align256(pt.Size)
	}
	return p
}

// upload queues the copies of buf's parts into dst.
func (p *placement) upload(d *Device, dst Buffer, buf []byte, fileSize int) {
	if p.whole {
		d.UploadAsync(dst, 0, buf[:fileSize])
		return
	}
	for _, pt := range p.parts {
		d.UploadAsync(dst, p.at[pt], buf[pt.Offset:pt.Offset+pt.Size])
	}
}

// pieces returns buf's parts as UploadOnCopyStream takes them (reusing
// into's storage).
func (p *placement) pieces(buf []byte, fileSize int, into []HostPiece) []HostPiece {
	into = into[:0]
	if p.whole {
		return append(into, HostPiece{Off: 0, Src: buf[:fileSize]})
	}
	for _, pt := range p.parts {
		into = append(into, HostPiece{Off: p.at[pt], Src: buf[pt.Offset : pt.Offset+pt.Size]})
	}
	return into
}

// matrices returns gate, up and down over device memory at base.
func (p *placement) matrices(l *backend.ExpertLayout, base uintptr) (gate, up, down Matrix) {
	at := func(m *backend.ExpertMatrix) Matrix {
		return deviceMatrix(m.Desc, base+uintptr(p.at[m.Data]), base+uintptr(p.at[m.Scales]), base+uintptr(p.at[m.Biases]))
	}
	return at(&l.Gate), at(&l.Up), at(&l.Down)
}
