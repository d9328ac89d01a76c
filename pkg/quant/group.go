package quant

import (
	"fmt"
	"math"

	"github.com/fm-moe/fm/pkg/internal/half"
	"github.com/fm-moe/fm/pkg/internal/simdlevel"
)

// SIMD levels of the block quantizer, in increasing order; simdLevel (set in
// group_amd64.go, or group_generic.go without assembly) is the one in use.
const (
	levelGeneric = simdlevel.Generic // the Go twins below
	levelAVX2    = simdlevel.AVX2
	levelAVX512  = simdlevel.AVX512
)

// chunkFloats bounds the weights one pass of the block quantizer walks: the
// min/max pass and the codes pass read the same floats, so a chunk that stays
// in L1/L2 between them is read from memory once.
const chunkFloats = 8192

// groupParams is the scalar half of the affine quantizer (see Quantize): the
// scale and bias of a group from its minimum and maximum. It is shared by every
// path, so the SIMD quantizer and its twins cannot differ here.
func groupParams(wmin, wmax, n float32) (scale, bias float32) {
	scale = max((wmax-wmin)/n, 1e-7)
	edge := wmax
	if abs32(wmin) > abs32(wmax) {
		edge = wmin
	} else {
		scale = -scale
	}
	q0 := edge / scale
	if abs32(q0) < 1<<22 {
		const magic = 12582912 // 1.5·2^23: rounds |x| < 2^22 half to even, as rint does
		q0 = (q0 + magic) - magic
	} else {
		q0 = rint(q0)
	}
	if q0 != 0 {
		scale = edge / q0
		bias = edge
	}
	return scale, bias
}

// allParamsGo replaces each group's minimum (mn) and maximum (mx) by its scale
// and bias.
func allParamsGo(mn, mx []float32, n float32) {
	mx = mx[:len(mn)]
	for g := range mn {
		mn[g], mx[g] = groupParams(mn[g], mx[g], n)
	}
}

// minMaxGo writes the minimum and maximum of every group of gs weights of w
// into mn and mx and reports whether every weight is finite.
//
// Plain comparisons, not the NaN-aware builtins: a non-finite weight makes the
// whole call fail (the caller reports it), so NaN ordering never matters; and
// the sign of a zero extreme cannot change the group's scale, bias or codes
// (a zero edge gives q0 = 0, bias 0 and a scale whose sign the branch sets), so
// the order in which SIMD lanes meet ±0 does not matter either.
func minMaxGo(w, mn, mx []float32, gs int) bool {
	bad := false
	for g := range mn {
		grp := w[g*gs : (g+1)*gs]
		hi, lo := grp[0], grp[0]
		for _, v := range grp {
			bad = bad || math.Float32bits(v)&0x7f800000 == 0x7f800000
			if v > hi {
				hi = v
			}
			if v < lo {
				lo = v
			}
		}
		mn[g], mx[g] = lo, hi
	}
	return !bad
}

// codesGo writes the code of every weight of w, group g using scales[g] and
// biases[g]: clamp(rint((w − bias)/scale), 0, n).
//
// It rounds by adding and subtracting 1.5·2^23, which rounds a float32 of
// magnitude below 2^22 half to even exactly as rint does; the quotient is
// first clamped to [−1, n+1], which cannot change the clamped code. The SIMD
// kernels round with the instruction (VRNDSCALEPS/VROUNDPS, nearest even) and
// clamp after it: the same codes, since clamping to integer bounds commutes
// with a monotone rounding to integers.
func codesGo(w []float32, codes []uint8, scales, biases []float32, gs int, n float32) {
	const magic = 12582912 // 1.5·2^23
	hi := n + 1
	for g := range scales {
		scale, bias := scales[g], biases[g]
		c := codes[g*gs : (g+1)*gs]
		for i, v := range w[g*gs : (g+1)*gs] {
			x := (v - bias) / scale
			if x < -1 {
				x = -1
			}
			if x > hi {
				x = hi
			}
			x = (x + magic) - magic
			if x < 0 {
				x = 0
			}
			if x > n {
				x = n
			}
			c[i] = uint8(x)
		}
	}
}

// quantizeBlock quantizes a checked [rows, cols] matrix into p (whose slices
// are sized) a chunk of whole groups at a time: the SIMD min/max of every
// group, the scalar scale and bias (groupParams), the SIMD codes, then the
// packing. The weights are src, or, when raw is not nil, the little-endian
// bfloat16 values of raw, widened a chunk at a time into a buffer that stays
// in cache (the converter's source: no full-size float32 copy is written and
// read back). The result is bit-identical to QuantizeGroup on every group
// (TestQuantizeBlockMatchesReference, at every SIMD level). A non-finite
// weight is an error naming its row and column: its group would be garbage.
func quantizeBlock(p *Packed, src []float32, raw []byte, rows, cols, bits, gs int) error {
	n := float32(int(1)<<bits - 1)
	total := rows * cols
	// A chunk is whole groups and ends on a word of the packed stream (rows
	// fill whole words, so the stream of the block is the rows' streams
	// concatenated).
	unit := gs
	for unit*bits%32 != 0 {
		unit += gs
	}
	step := max(unit, chunkFloats/unit*unit)
	p.codes = resize(p.codes, min(step, total))
	if raw != nil {
		p.vals = resize(p.vals, min(step, total))
	}
	for off := 0; off < total; off += step {
		m := min(step, total-off)
		var w []float32
		if raw != nil {
			w = p.vals[:m]
			half.DecodeBF16(w, raw[2*off:2*(off+m)])
		} else {
			w = src[off : off+m]
		}
		g0, ng := off/gs, m/gs
		mn, mx := p.Scales[g0:g0+ng], p.Biases[g0:g0+ng]
		if !minMax(w, mn, mx, gs) {
			for i, v := range w {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					return fmt.Errorf("row %d, column %d: weight %g is not finite", (off+i)/cols, (off+i)%cols, v)
				}
			}
		}
		allParams(mn, mx, n)
		words := p.Codes[off*bits/32 : (off+m)*bits/32]
		if !packedCodes(w, words, mn, mx, gs, bits, n) {
			codes := p.codes[:m]
			groupCodes(w, codes, mn, mx, gs, n)
			PackCodes(words, codes, bits)
		}
	}
	return nil
}
