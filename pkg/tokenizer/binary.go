package tokenizer

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Formats of tokenizer.bin and vocab.bin; doc.go describes them.
const (
	binaryMagic   = "FMTK"
	binaryVersion = 1
	vocabMagic    = "FMVB"
	vocabVersion  = 1
)

// Flags of tokenizer.bin.
const (
	flagNFC          = 1 << 0
	flagIgnoreMerges = 1 << 1
)

// Flags of an added token in tokenizer.bin.
const (
	addedSpecial = 1 << iota
	addedNormalized
	addedLStrip
	addedRStrip
	addedSingleWord
)

func (a AddedToken) flags() uint32 {
	var f uint32
	set := func(bit uint32, on bool) {
		if on {
			f |= bit
		}
	}
	set(addedSpecial, a.Special)
	set(addedNormalized, a.Normalized)
	set(addedLStrip, a.LStrip)
	set(addedRStrip, a.RStrip)
	set(addedSingleWord, a.SingleWord)
	return f
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// checksumWriter writes through to w while computing CRC-32C.
type checksumWriter struct {
	w   *bufio.Writer
	crc uint32
	err error
}

func (c *checksumWriter) write(p []byte) {
	if c.err != nil {
		return
	}
	c.crc = crc32.Update(c.crc, castagnoli, p)
	_, c.err = c.w.Write(p)
}

func (c *checksumWriter) u32(v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	c.write(b[:])
}

func (c *checksumWriter) pad4(n int) {
	if r := n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

// finish writes the CRC-32C trailer and flushes.
func (c *checksumWriter) finish() error {
	if c.err != nil {
		return c.err
	}
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], c.crc)
	if _, err := c.w.Write(b[:]); err != nil {
		return err
	}
	return c.w.Flush()
}

// WriteBinary writes the compact tokenizer.bin (format in doc.go). It holds
// everything Encode, Decode and FormatChat need, so LoadBinary gives the
// same ids as LoadJSON of the source tokenizer.json without parsing JSON.
func (t *Tokenizer) WriteBinary(w io.Writer) error {
	cw := &checksumWriter{w: bufio.NewWriterSize(w, 1<<16)}
	var flags uint32
	if t.normalizeNFC {
		flags |= flagNFC
	}
	if t.ignoreMerges {
		flags |= flagIgnoreMerges
	}
	n := len(t.kinds)
	cw.write([]byte(binaryMagic))
	for _, v := range []uint32{binaryVersion, flags, uint32(n), uint32(len(t.mergeList)), uint32(len(t.added)), uint32(len(t.strs))} {
		cw.u32(v)
	}
	cw.u32(0) // reserved
	for _, off := range t.strOff {
		cw.u32(off)
	}
	cw.write(t.kinds)
	cw.pad4(n)
	cw.write([]byte(t.strs))
	cw.pad4(len(t.strs))
	for _, m := range t.mergeList {
		cw.u32(uint32(m.left))
		cw.u32(uint32(m.right))
		cw.u32(uint32(m.result))
	}
	for _, a := range t.added {
		cw.u32(uint32(a.ID))
		cw.u32(a.flags())
	}
	for _, s := range []string{t.split.pattern, t.chat.eosToken, t.chat.template, t.chat.source} {
		cw.u32(uint32(len(s)))
		cw.write([]byte(s))
	}
	return cw.finish()
}

// binReader decodes little-endian fields from an in-memory file.
type binReader struct {
	data []byte
	pos  int
	err  error
}

func (r *binReader) take(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.data)-r.pos {
		r.err = fmt.Errorf("truncated at offset %d reading %s (%d bytes)", r.pos, what, n)
		return nil
	}
	b := r.data[r.pos : r.pos+n]
	r.pos += n
	return b
}

func (r *binReader) u32(what string) uint32 {
	b := r.take(4, what)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(b)
}

func (r *binReader) pad4(n int) {
	if rem := n % 4; rem != 0 {
		r.take(4-rem, "padding")
	}
}

func (r *binReader) str(what string) string {
	return string(r.take(int(r.u32(what+" length")), what))
}

// verifyChecksum checks the CRC-32C trailer and returns the body.
func verifyChecksum(data []byte, magic string, version uint32) ([]byte, error) {
	if len(data) < 12 || string(data[:4]) != magic {
		return nil, fmt.Errorf("not a %s file (bad magic)", magic)
	}
	if v := binary.LittleEndian.Uint32(data[4:8]); v != version {
		return nil, fmt.Errorf("%s version %d, this build reads version %d", magic, v, version)
	}
	body := data[:len(data)-4]
	want := binary.LittleEndian.Uint32(data[len(data)-4:])
	if got := crc32.Checksum(body, castagnoli); got != want {
		return nil, fmt.Errorf("checksum mismatch: stored %08x, computed %08x (truncated or corrupt file)", want, got)
	}
	return body, nil
}

// LoadBinary reads a tokenizer.bin written by WriteBinary.
func LoadBinary(r io.Reader) (*Tokenizer, error) {
	data, err := readAll(r)
	if err != nil {
		return nil, err
	}
	return parseBinary(data)
}

func parseBinary(data []byte) (*Tokenizer, error) {
	body, err := verifyChecksum(data, binaryMagic, binaryVersion)
	if err != nil {
		return nil, err
	}
	br := &binReader{data: body, pos: 8}
	flags := br.u32("flags")
	n := int(br.u32("id count"))
	nMerges := int(br.u32("merge count"))
	nAdded := int(br.u32("added token count"))
	strSize := int(br.u32("string size"))
	br.u32("reserved")
	if br.err == nil && (n > len(body)/4 || nMerges > len(body)/12 || nAdded > len(body)/8 || strSize > len(body)) {
		return nil, fmt.Errorf("header counts (%d ids, %d merges, %d added, %d string bytes) exceed the file size %d", n, nMerges, nAdded, strSize, len(data))
	}
	offs := br.take(4*(n+1), "string offsets")
	kinds := br.take(n, "token kinds")
	br.pad4(n)
	strs := string(br.take(strSize, "token strings"))
	br.pad4(strSize)
	mergeData := br.take(12*nMerges, "merges")
	addedData := br.take(8*nAdded, "added tokens")
	pattern := br.str("split regex")
	eos := br.str("eos token")
	template := br.str("chat template")
	source := br.str("chat template source")
	if br.err != nil {
		return nil, br.err
	}
	if br.pos != len(body) {
		return nil, fmt.Errorf("%d unexpected bytes before the checksum", len(body)-br.pos)
	}

	p := parts{
		tokens:       make([]string, n),
		kinds:        append([]uint8(nil), kinds...),
		merges:       make([]merge, nMerges),
		added:        make([]AddedToken, nAdded),
		nfc:          flags&flagNFC != 0,
		ignoreMerges: flags&flagIgnoreMerges != 0,
		pattern:      pattern,
		chat:         chatConfig{template: template, source: source, eosToken: eos},
	}
	prev := uint32(0)
	for i := range n {
		end := binary.LittleEndian.Uint32(offs[4*(i+1):])
		if i == 0 {
			prev = binary.LittleEndian.Uint32(offs)
		}
		if prev > end || int(end) > len(strs) {
			return nil, fmt.Errorf("token %d: string offsets %d..%d out of order or past %d", i, prev, end, len(strs))
		}
		if kinds[i] > kindAdded {
			return nil, fmt.Errorf("token %d: unknown kind %d", i, kinds[i])
		}
		p.tokens[i] = strs[prev:end]
		prev = end
	}
	for i := range p.merges {
		m := mergeData[12*i:]
		p.merges[i] = merge{
			left:   int32(binary.LittleEndian.Uint32(m)),
			right:  int32(binary.LittleEndian.Uint32(m[4:])),
			result: int32(binary.LittleEndian.Uint32(m[8:])),
		}
	}
	for i := range p.added {
		a := addedData[8*i:]
		id := int(binary.LittleEndian.Uint32(a))
		f := binary.LittleEndian.Uint32(a[4:])
		if id >= n {
			return nil, fmt.Errorf("added token %d: id %d out of range", i, id)
		}
		p.added[i] = AddedToken{
			ID: id, Content: p.tokens[id],
			Special: f&addedSpecial != 0, Normalized: f&addedNormalized != 0,
			LStrip: f&addedLStrip != 0, RStrip: f&addedRStrip != 0, SingleWord: f&addedSingleWord != 0,
		}
	}
	return build(p)
}

// WriteVocab writes vocab.bin, the decode table: for every id the exact bytes
// Decode emits for it (format in doc.go).
func (t *Tokenizer) WriteVocab(w io.Writer) error {
	cw := &checksumWriter{w: bufio.NewWriterSize(w, 1<<16)}
	cw.write([]byte(vocabMagic))
	cw.u32(vocabVersion)
	cw.u32(uint32(len(t.kinds)))
	cw.u32(uint32(len(t.raw)))
	for _, off := range t.rawOff {
		cw.u32(off)
	}
	cw.write(t.raw)
	return cw.finish()
}

// ReadVocab reads vocab.bin and returns the bytes of every id (empty for
// unused ids).
func ReadVocab(r io.Reader) ([][]byte, error) {
	data, err := readAll(r)
	if err != nil {
		return nil, err
	}
	body, err := verifyChecksum(data, vocabMagic, vocabVersion)
	if err != nil {
		return nil, err
	}
	br := &binReader{data: body, pos: 8}
	n := int(br.u32("id count"))
	size := int(br.u32("byte size"))
	if br.err == nil && n > len(body)/4 {
		return nil, fmt.Errorf("id count %d exceeds the file size %d", n, len(data))
	}
	offs := br.take(4*(n+1), "offsets")
	blob := br.take(size, "token bytes")
	if br.err != nil {
		return nil, br.err
	}
	if br.pos != len(body) {
		return nil, errors.New("unexpected bytes before the checksum")
	}
	out := make([][]byte, n)
	for i := range n {
		start, end := binary.LittleEndian.Uint32(offs[4*i:]), binary.LittleEndian.Uint32(offs[4*i+4:])
		if start > end || int(end) > len(blob) {
			return nil, fmt.Errorf("token %d: offsets %d..%d out of order or past %d", i, start, end, len(blob))
		}
		out[i] = blob[start:end:end]
	}
	return out, nil
}
