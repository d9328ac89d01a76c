package quant

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"
)

// littleEndian reports whether this machine stores a uint32 as its
// little-endian bytes (then EncodeCodes is a copy).
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// Packed is an affine group-quantized matrix [Rows, Cols].
type Packed struct {
	Bits, GroupSize int
	Rows, Cols      int
	// Codes holds Rows × WordsPerRow(Cols, Bits) words, row-major.
	Codes []uint32
	// Scales and Biases hold Rows × Cols/GroupSize values, row-major, as
	// computed in float32. Writers round them to the storage dtype (bf16 in MLX
	// files); the codes were chosen with these unrounded values, as MLX does.
	Scales, Biases []float32

	// The block quantizer's unpacked codes and widened bf16 chunk, kept for reuse.
	codes []uint8
	vals  []float32
}

// Check reports whether a row of cols elements can be quantized with bits and
// groupSize: bits 2, 3, 4 or 8, groupSize > 0 dividing cols, and whole words per row.
func Check(cols, bits, groupSize int) error {
	switch bits {
	case 2, 3, 4, 8:
	default:
		return fmt.Errorf("quantization bits %d not supported (want 2, 3, 4 or 8)", bits)
	}
	if groupSize <= 0 || cols <= 0 || cols%groupSize != 0 {
		return fmt.Errorf("%d columns are not a positive multiple of group size %d", cols, groupSize)
	}
	if cols*bits%32 != 0 {
		return fmt.Errorf("%d columns of %d bits do not fill whole uint32 words", cols, bits)
	}
	return nil
}

// WordsPerRow returns the number of uint32 words one packed row of cols codes takes.
func WordsPerRow(cols, bits int) int { return cols * bits / 32 }

// Quantize quantizes src, a row-major [rows, cols] matrix, with MLX's affine
// algorithm (mlx/backend/cpu/quantized.cpp, reference-math.md §4.4), per group
// in float32:
//
//	n = 2^bits − 1; scale = max((max − min)/n, 1e−7)
//	edge = the extreme of larger magnitude (min with +scale, else max with −scale)
//	q0 = rint(edge/scale); if q0 ≠ 0 { scale = edge/q0; bias = edge } else { bias = 0 }
//	q = clamp(rint((w − bias)/scale), 0, n)
//
// rint rounds half to even (the CPU backend; Metal and CUDA round half away from
// zero, so GPU-made files can differ in rare ties). Scales may be negative.
func Quantize(src []float32, rows, cols, bits, groupSize int) (*Packed, error) {
	if err := Check(cols, bits, groupSize); err != nil {
		return nil, err
	}
	if len(src) != rows*cols {
		return nil, fmt.Errorf("quantize [%d, %d]: have %d values", rows, cols, len(src))
	}
	p := &Packed{}
	if err := quantizeRowsInto(p, src, rows, cols, bits, groupSize, nil); err != nil {
		return nil, err
	}
	return p, nil
}

// QuantizeInto is Quantize into p, reusing p's slices when they are large
// enough: a converter quantizing thousands of same-shaped matrices allocates
// (and the garbage collector scans) nothing per matrix.
func QuantizeInto(p *Packed, src []float32, rows, cols, bits, groupSize int) error {
	if err := Check(cols, bits, groupSize); err != nil {
		return err
	}
	if len(src) != rows*cols {
		return fmt.Errorf("quantize [%d, %d]: have %d values", rows, cols, len(src))
	}
	return quantizeRowsInto(p, src, rows, cols, bits, groupSize, nil)
}

// QuantizeBF16Into is QuantizeInto from raw, the little-endian bfloat16
// values of a [rows, cols] matrix (a checkpoint's bytes), widened to float32 a
// few thousand at a time: the same result as DecodeFloats then QuantizeInto,
// without writing and reading back a float32 copy of the matrix.
func QuantizeBF16Into(p *Packed, raw []byte, rows, cols, bits, groupSize int) error {
	if err := Check(cols, bits, groupSize); err != nil {
		return err
	}
	if len(raw) != 2*rows*cols {
		return fmt.Errorf("quantize [%d, %d] from bf16: have %d bytes", rows, cols, len(raw))
	}
	groups := cols / groupSize
	*p = Packed{
		Bits: bits, GroupSize: groupSize, Rows: rows, Cols: cols,
		Codes:  resize(p.Codes, rows*WordsPerRow(cols, bits)),
		Scales: resize(p.Scales, rows*groups),
		Biases: resize(p.Biases, rows*groups),
		codes:  p.codes,
		vals:   p.vals,
	}
	return quantizeBlock(p, nil, raw, rows, cols, bits, groupSize)
}

// quantizeRows quantizes every group of a checked [rows, cols] matrix with
// group (which writes the group's codes and returns its scale and bias) and
// packs the codes.
func quantizeRows(src []float32, rows, cols, bits, groupSize int, group func(codes []uint8, w []float32) (scale, bias float32)) *Packed {
	p := &Packed{}
	quantizeRowsInto(p, src, rows, cols, bits, groupSize, group) // a non-nil group never fails
	return p
}

// quantizeRowsInto is quantizeRows into p's slices (grown when short). A nil
// group is QuantizeGroup's algorithm, run by the block quantizer (group.go),
// which fails on a non-finite weight.
func quantizeRowsInto(p *Packed, src []float32, rows, cols, bits, groupSize int, group func(codes []uint8, w []float32) (scale, bias float32)) error {
	groups := cols / groupSize
	wpr := WordsPerRow(cols, bits)
	*p = Packed{
		Bits: bits, GroupSize: groupSize, Rows: rows, Cols: cols,
		Codes:  resize(p.Codes, rows*wpr),
		Scales: resize(p.Scales, rows*groups),
		Biases: resize(p.Biases, rows*groups),
		codes:  p.codes,
		vals:   p.vals,
	}
	if group == nil {
		return quantizeBlock(p, src, nil, rows, cols, bits, groupSize)
	}
	p.codes = resize(p.codes, cols)
	codes := p.codes
	for r := 0; r < rows; r++ {
		row := src[r*cols : (r+1)*cols]
		for g := 0; g < groups; g++ {
			s, b := group(codes[g*groupSize:(g+1)*groupSize], row[g*groupSize:(g+1)*groupSize])
			p.Scales[r*groups+g] = s
			p.Biases[r*groups+g] = b
		}
		PackCodes(p.Codes[r*wpr:(r+1)*wpr], codes, bits)
	}
	return nil
}

// resize returns s with length n, reusing its array when large enough.
func resize[T any](s []T, n int) []T {
	if cap(s) >= n {
		return s[:n]
	}
	return make([]T, n)
}

// QuantizeGroup quantizes one group w into codes (len(w) of them) and returns its
// float32 scale and bias, with the algorithm documented at Quantize. It is the
// generic twin's arithmetic (groupParams, codesGo), which
// TestQuantizeGroupMatchesReference holds to the plain formulation; it does not
// check that w is finite.
func QuantizeGroup(codes []uint8, w []float32, bits int) (scale, bias float32) {
	n := float32(int(1)<<bits - 1)
	wmax, wmin := w[0], w[0]
	for _, v := range w[1:] {
		if v > wmax {
			wmax = v
		}
		if v < wmin {
			wmin = v
		}
	}
	scale, bias = groupParams(wmin, wmax, n)
	codesGo(w, codes[:len(w)], []float32{scale}, []float32{bias}, len(w), n)
	return scale, bias
}

func abs32(x float32) float32 { return math.Float32frombits(math.Float32bits(x) &^ (1 << 31)) }

func rint(x float32) float32 { return float32(math.RoundToEven(float64(x))) }

// PackCodes packs codes (each < 2^bits) into dst as a least-significant-bits-first
// bit stream over little-endian uint32 words. dst must hold
// ceil(len(codes)·bits/32) words; it is overwritten.
func PackCodes(dst []uint32, codes []uint8, bits int) {
	// Whole codes per word (2, 4, 8 bits): no code straddles two words, and
	// the codes of a word are gathered from 64-bit little-endian loads by
	// shifts and masks (each code is below 2^bits, so the ors never collide).
	le := binary.LittleEndian
	switch {
	case bits == 8 && len(codes)%4 == 0:
		dst = dst[:len(codes)/4]
		for i := range dst {
			dst[i] = le.Uint32(codes[4*i:])
		}
		return
	case bits == 4 && len(codes)%8 == 0:
		dst = dst[:len(codes)/8]
		for i := range dst {
			x := le.Uint64(codes[8*i:])
			x = (x | x>>4) & 0x00ff00ff00ff00ff
			x = (x | x>>8) & 0x0000ffff0000ffff
			dst[i] = uint32(x | x>>16)
		}
		return
	case bits == 2 && len(codes)%16 == 0:
		dst = dst[:len(codes)/16]
		for i := range dst {
			lo, hi := le.Uint64(codes[16*i:]), le.Uint64(codes[16*i+8:])
			dst[i] = pack2(lo) | pack2(hi)<<16
		}
		return
	}
	if 32%bits == 0 && len(codes)*bits%32 == 0 {
		per := 32 / bits
		dst = dst[:len(codes)/per]
		for i := range dst {
			c := codes[i*per : (i+1)*per]
			var w uint32
			for j := len(c) - 1; j >= 0; j-- {
				w = w<<bits | uint32(c[j])
			}
			dst[i] = w
		}
		return
	}
	clear(dst)
	pos := 0
	for _, c := range codes {
		w, off := pos/32, pos%32
		dst[w] |= uint32(c) << off
		if off+bits > 32 {
			dst[w+1] |= uint32(c) >> (32 - off)
		}
		pos += bits
	}
}

// pack2 gathers the eight 2-bit codes held in the bytes of x (little-endian)
// into 16 bits.
func pack2(x uint64) uint32 {
	x = (x | x>>6) & 0x000f000f000f000f
	x = (x | x>>12) & 0x000000ff000000ff
	return uint32(x|x>>24) & 0xffff
}

// UnpackCodes is the inverse of PackCodes: it fills dst with len(dst) codes.
func UnpackCodes(dst []uint8, src []uint32, bits int) {
	mask := uint64(1)<<bits - 1
	pos := 0
	for i := range dst {
		w, off := pos/32, pos%32
		v := uint64(src[w]) >> off
		if off+bits > 32 {
			v |= uint64(src[w+1]) << (32 - off)
		}
		dst[i] = uint8(v & mask)
		pos += bits
	}
}

// Dequantize is the reference dequantization: dst[r·cols + c] =
// scales[r, c/groupSize]·q[r, c] + biases[r, c/groupSize], computed in float32.
// scales and biases are the stored (rounded) values.
func Dequantize(dst []float32, codes []uint32, scales, biases []float32, rows, cols, bits, groupSize int) error {
	if err := Check(cols, bits, groupSize); err != nil {
		return err
	}
	wpr, groups := WordsPerRow(cols, bits), cols/groupSize
	if len(dst) < rows*cols || len(codes) < rows*wpr || len(scales) < rows*groups || len(biases) < rows*groups {
		return fmt.Errorf("dequantize [%d, %d] %d-bit: buffers too short", rows, cols, bits)
	}
	q := make([]uint8, cols)
	for r := 0; r < rows; r++ {
		UnpackCodes(q, codes[r*wpr:(r+1)*wpr], bits)
		out := dst[r*cols : (r+1)*cols]
		for c := range out {
			g := r*groups + c/groupSize
			out[c] = scales[g]*float32(q[c]) + biases[g]
		}
	}
	return nil
}

// Dequantize expands p with its unrounded float32 scales and biases.
func (p *Packed) Dequantize(dst []float32) error {
	return Dequantize(dst, p.Codes, p.Scales, p.Biases, p.Rows, p.Cols, p.Bits, p.GroupSize)
}

// DequantizeBytes is Dequantize over the bytes of a prepared or MLX file: codes
// as little-endian uint32 words, scales and biases as little-endian elements of
// scaleDType (BF16, F16 or F32).
func DequantizeBytes(dst []float32, codes, scales, biases []byte, scaleDType string, rows, cols, bits, groupSize int) error {
	if err := Check(cols, bits, groupSize); err != nil {
		return err
	}
	words := make([]uint32, rows*WordsPerRow(cols, bits))
	if len(codes) < 4*len(words) {
		return fmt.Errorf("dequantize: %d bytes of codes, want %d", len(codes), 4*len(words))
	}
	for i := range words {
		words[i] = binary.LittleEndian.Uint32(codes[4*i:])
	}
	n := rows * cols / groupSize
	s, b := make([]float32, n), make([]float32, n)
	if err := DecodeFloats(s, scales, scaleDType); err != nil {
		return fmt.Errorf("scales: %w", err)
	}
	if err := DecodeFloats(b, biases, scaleDType); err != nil {
		return fmt.Errorf("biases: %w", err)
	}
	return Dequantize(dst, words, s, b, rows, cols, bits, groupSize)
}

// EncodeCodes writes packed words as little-endian bytes (4 per word) into dst.
func EncodeCodes(dst []byte, words []uint32) {
	if littleEndian && len(words) > 0 {
		// The words' memory is already the file's bytes.
		copy(dst[:4*len(words)], unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), 4*len(words)))
		return
	}
	for i, w := range words {
		binary.LittleEndian.PutUint32(dst[4*i:], w)
	}
}
