package quant

import (
	"fmt"
	"github.com/fm-moe/fm/pkg/internal/half"
	"math"
)

// This file is the error-minimizing quantizer used to requantize experts to 2
// or 3 bits (fm-requant2bit). Quantize (affine.go) reproduces MLX's choice of
// scale and bias, which spans the group's full range: at 4 and 8 bits that
// costs little, but at 2 bits (four levels) a single outlier stretches the step
// for the other 63 weights, and flash-moe's plain min/max requantization lost
// visible quality that way. QuantizeMSE instead picks, per group, the scale and
// bias that minimize the squared error of the dequantized weights against the
// source values, as they will be stored (rounded to the scale dtype), with the
// codes chosen after that rounding.

// Objective selects what the per-group search of QuantizeMSE optimizes.
type Objective int

const (
	// MinSquaredError chooses the stored (s, b) and codes that minimize the
	// group's squared error Σ (s·q_i + b − w_i)².
	MinSquaredError Objective = iota
	// GainCorrected starts from MinSquaredError's result and removes its
	// shrinkage. A least-squares fit is a projection, so the fitted group ŵ
	// has ⟨ŵ, w⟩ = |ŵ|² < |w|²: every quantized row responds to an input
	// with a gain g = ⟨ŵ, w⟩/|w|² < 1 (0.90 for tiny-code's experts at 2
	// bits, 0.97 at 3), and an expert's gate, up and down projections compound
	// it, while rounding noise largely averages out. GainCorrected scales s and
	// b by |w|²/⟨ŵ, w⟩, rounds them and picks the nearest codes again (which
	// undoes part of the scaling: the gain becomes 0.96 / 0.99), for about 8%
	// more squared error at 2 bits. It keeps that result only when its squared
	// error is not above the better min/max start's, so it too is never worse
	// than min/max.
	// On tiny-code's held-out text at 2 bits (64 chunks) it lowers the mean KL
	// to the 16-bit model from 0.076 to 0.061 and the perplexity from 6.77 to
	// 6.68 (16-bit: 6.31; MLX's min/max rule: 0.090 and 6.73); docs/QUALITY.md.
	GainCorrected
)

// String names the objective.
func (o Objective) String() string {
	if o == GainCorrected {
		return "gain-corrected least squares"
	}
	return "least squares"
}

// QuantizeMSE quantizes src, a row-major [rows, cols] matrix, into affine groups
// of groupSize with bits-wide codes, choosing for every group a scale s and
// bias b representable in scaleDType ("BF16", "F16" or "F32") by obj:
// MinSquaredError minimizes Σ (s·q_i + b − w_i)² over the group, with the codes
// q_i the best ones for the stored s and b. The result's Scales and Biases hold
// those representable values, so writing them in scaleDType is exact and the
// codes match the stored numbers (unlike Quantize, whose codes were chosen
// before rounding).
//
// The search (per group, see GroupOptimizer) starts from MLX's min/max choice,
// the plain min/max choice and ranges trimmed towards the bulk of the values,
// and runs alternating least squares from each: for fixed codes the best
// (s, b) is the closed-form linear regression of w on q; for fixed (s, b) the
// best code of each weight is the nearest level. Each step can only lower the
// error, and the starts themselves are candidates, so the result is never
// worse than either min/max choice evaluated the same way.
func QuantizeMSE(src []float32, rows, cols, bits, groupSize int, scaleDType string, obj Objective) (*Packed, error) {
	if err := Check(cols, bits, groupSize); err != nil {
		return nil, err
	}
	if len(src) != rows*cols {
		return nil, fmt.Errorf("quantize [%d, %d]: have %d values", rows, cols, len(src))
	}
	opt, err := NewGroupOptimizer(bits, groupSize, scaleDType, obj)
	if err != nil {
		return nil, err
	}
	return quantizeRows(src, rows, cols, bits, groupSize, opt.Quantize), nil
}

// GroupOptimizer chooses error-minimizing scales and biases for groups of one
// size and bit width. It holds scratch space, so one optimizer must not be
// used by several goroutines at once; make one per worker.
type GroupOptimizer struct {
	bits   int
	levels float32 // 2^bits − 1, the largest code
	dtype  string
	obj    Objective
	round  func(float32) float32
	// trial holds the codes of the candidate being scored, work those of the
	// least-squares iteration, best those of the best candidate so far.
	trial, work, best []uint8
}

// maxIterations bounds the alternating least-squares rounds of one start. The
// codes usually stop changing after 2–4 rounds; the bound only guards against
// cycling on float ties.
const maxIterations = 8

// startTrims are the fractions of the group's range cut off at the low and
// high end for the extra starting points. At 2 bits the error-optimal step for
// bell-shaped data is well inside the min/max span, and a lone outlier pulls
// one end only; the alternating refinement then moves each start to its local
// optimum. Measured on tiny-code's trained experts (squared error relative to
// plain min/max, cost per group of 64 on this machine): the two min/max starts
// alone reach 2-bit 0.514 / 3-bit 0.757 / 4-bit 0.841 in ~5 µs; these four
// extra starts 0.501 / 0.735 / 0.835 in ~11 µs; sixteen extra starts 0.500 /
// 0.722 / 0.818 in ~30 µs.
var startTrims = [...][2]float32{{0.15, 0.15}, {0.3, 0.3}, {0.25, 0}, {0, 0.25}}

// NewGroupOptimizer returns an optimizer for groups of groupSize values quantized
// to bits (2, 3, 4 or 8) with scales and biases stored as scaleDType, by obj.
func NewGroupOptimizer(bits, groupSize int, scaleDType string, obj Objective) (*GroupOptimizer, error) {
	if err := Check(groupSize*32, bits, groupSize); err != nil {
		return nil, err
	}
	round, err := storageRounder(scaleDType)
	if err != nil {
		return nil, err
	}
	return &GroupOptimizer{
		bits: bits, levels: float32(int(1)<<bits - 1), dtype: scaleDType, obj: obj, round: round,
		trial: make([]uint8, groupSize), work: make([]uint8, groupSize), best: make([]uint8, groupSize),
	}, nil
}

// storageRounder returns the rounding of a float32 to dtype (nearest, ties to even).
func storageRounder(dtype string) (func(float32) float32, error) {
	switch dtype {
	case "BF16":
		return func(x float32) float32 { return half.BF16ToF32(half.F32ToBF16(x)) }, nil
	case "F16":
		return func(x float32) float32 { return half.F16ToF32(half.F32ToF16(x)) }, nil
	case "F32":
		return func(x float32) float32 { return x }, nil
	}
	return nil, fmt.Errorf("scale dtype %s is not BF16, F16 or F32", dtype)
}

// Quantize writes the codes of group w into codes (len(w) of them) and returns
// the stored scale and bias: values representable in the optimizer's scale
// dtype chosen by its objective (see Objective). It never returns NaN or Inf
// for finite input.
func (o *GroupOptimizer) Quantize(codes []uint8, w []float32) (scale, bias float32) {
	wmin, wmax := w[0], w[0]
	var sumW float64
	for _, v := range w {
		wmin = min(wmin, v)
		wmax = max(wmax, v)
		sumW += float64(v)
	}
	best := math.Inf(1)
	var bs, bb float32
	// try rounds (s, b) to the storage dtype, picks the nearest codes, keeps
	// the pair if it beats the best so far and returns its squared error.
	try := func(s, b float32) float64 {
		s, b = o.round(s), o.round(b)
		e := o.pick(o.trial, w, s, b)
		if e < best {
			best, bs, bb = e, s, b
			copy(o.best, o.trial)
		}
		return e
	}
	baseline := math.Inf(1) // the better min/max start's error
	if wmax == wmin {
		// Constant group: the bias alone (scale 0), or, when the value is off
		// the storage grid, the nearest stored bias plus one code of a small
		// scale for the remainder (exact when that scale is representable).
		baseline = try(0, wmin)
		lo := o.round(wmin)
		if lo != wmin {
			try(wmin-lo, lo)
		}
	} else {
		// Starts: MLX's choice (reference-math §4.4), plain min/max (flash-moe),
		// and trimmed ranges; each refined by alternating least squares.
		s, b := QuantizeGroup(o.work, w, o.bits)
		span := wmax - wmin
		baseline = min(try(s, b), try(span/o.levels, wmin))
		o.refine(w, sumW, s, b, try)
		o.refine(w, sumW, span/o.levels, wmin, try)
		for _, t := range startTrims {
			lo, hi := wmin+t[0]*span, wmax-t[1]*span
			o.refine(w, sumW, (hi-lo)/o.levels, lo, try)
		}
		// The stored values sit on the dtype's grid: try the neighbouring grid
		// points of the best pair, which rounding to nearest cannot reach.
		s0, b0 := bs, bb
		for _, s := range [3]float32{stepDown(s0, o.dtype), s0, stepUp(s0, o.dtype)} {
			for _, b := range [3]float32{stepDown(b0, o.dtype), b0, stepUp(b0, o.dtype)} {
				if s != s0 || b != b0 {
					try(s, b)
				}
			}
		}
	}
	if o.obj == GainCorrected && bs != 0 {
		var ww, hw float64
		for i, v := range w {
			h := float64(bs*float32(o.best[i]) + bb)
			ww += float64(v) * float64(v)
			hw += h * float64(v)
		}
		if hw > 0 {
			c := float32(ww / hw)
			s, b := o.round(bs*c), o.round(bb*c)
			if e := o.pick(o.trial, w, s, b); e <= baseline {
				bs, bb = s, b
				copy(o.best, o.trial)
			}
		}
	}
	copy(codes, o.best)
	return bs, bb
}

// refine runs alternating least squares from (s, b): the nearest level of every
// weight for (s, b), then the (s, b) that fit those codes best, until the error
// stops falling. It offers the start and the last improving iterate to try,
// which rounds them to the storage dtype and keeps the best.
func (o *GroupOptimizer) refine(w []float32, sumW float64, s, b float32, try func(s, b float32) float64) {
	try(s, b)
	prev := float32(math.Inf(1))
	ps, pb := s, b
	n := float64(len(w))
	for range maxIterations {
		e, sq, sqq, sqw := o.assign(w, s, b)
		if !(e < prev) {
			break
		}
		prev, ps, pb = e, s, b
		// The linear regression of w on q; every code equal leaves the slope
		// undetermined (a degenerate start): keep the last iterate.
		d := n*sqq - sq*sq
		if d <= 0 {
			break
		}
		slope := (n*sqw - sq*sumW) / d
		s, b = float32(slope), float32((sumW-slope*sq)/n)
	}
	try(ps, pb)
}

// assign is one alternating step without storing codes: the squared error of
// the nearest levels for (s, b) and the sums Σq, Σq², Σq·w the regression needs.
// Float32 error sums are enough here (the steps only need to tell progress from
// a stall); try scores candidates in float64.
func (o *GroupOptimizer) assign(w []float32, s, b float32) (e float32, sq, sqq, sqw float64) {
	if s == 0 {
		for _, v := range w {
			e += (b - v) * (b - v)
		}
		return e, 0, 0, 0
	}
	inv, n := 1/s, int64(o.levels)
	var q1, q2 int64
	var qw float32
	for _, v := range w {
		qi := nearestLevel((v-b)*inv, n)
		q := float32(qi)
		d := s*q + b - v
		e += d * d
		q1 += qi
		q2 += qi * qi
		qw += q * v
	}
	return e, float64(q1), float64(q2), float64(qw)
}

// nearestLevel returns the integer in [0, n] nearest to x (ties up). It avoids
// float min/max, whose NaN rules cost more than the rest of the loop:
// truncating x + 0.5 rounds to nearest for x > −0.5 and gives ≤ 0 below (the
// conversion of a huge negative x or a NaN gives the minimum int64), so only the
// top needs a float comparison, which also keeps a huge x from overflowing.
func nearestLevel(x float32, n int64) int64 {
	x += 0.5
	q := max(int64(x), 0)
	if !(x < float32(n+1)) {
		q = n
	}
	return q
}

// pick sets codes to the nearest level of every weight for (s, b) and returns the
// squared error of s·q + b (computed in float32, as the kernels dequantize)
// against w, summed in float64.
func (o *GroupOptimizer) pick(codes []uint8, w []float32, s, b float32) float64 {
	var e float64
	if s == 0 {
		for i, v := range w {
			codes[i] = 0
			d := float64(b - v)
			e += d * d
		}
		return e
	}
	inv, n := 1/s, int64(o.levels)
	for i, v := range w {
		q := float32(nearestLevel((v-b)*inv, n))
		codes[i] = uint8(q)
		d := float64(s*q + b - v)
		e += d * d
	}
	return e
}

// stepUp and stepDown return the next representable value of dtype above and
// below x, which must be representable in dtype and finite.
func stepUp(x float32, dtype string) float32   { return stepNext(x, dtype, true) }
func stepDown(x float32, dtype string) float32 { return stepNext(x, dtype, false) }

func stepNext(x float32, dtype string, up bool) float32 {
	var h uint16
	var decode func(uint16) float32
	switch dtype {
	case "BF16":
		h, decode = half.F32ToBF16(x), half.BF16ToF32
	case "F16":
		h, decode = half.F32ToF16(x), half.F16ToF32
	default:
		dir := float32(math.Inf(-1))
		if up {
			dir = float32(math.Inf(1))
		}
		return math.Nextafter32(x, dir)
	}
	const sign = 0x8000
	switch {
	case h&^sign == 0: // ±0: the smallest subnormal on the requested side
		if up {
			h = 1
		} else {
			h = sign | 1
		}
	case (h&sign == 0) == up: // away from zero
		h++
	default: // towards zero
		h--
	}
	v := decode(h)
	if math.IsInf(float64(v), 0) || math.IsNaN(float64(v)) {
		return x
	}
	return v
}

// QuantizeGroupMinMax is the plain min/max quantizer of flash-moe's 2-bit
// repacking, kept as the baseline QuantizeMSE is measured against: bias = min,
// scale = (max − min)/(2^bits − 1), codes rounded half to even from the float32
// values (scale 0 for a constant group). It returns the float32 scale and bias;
// a writer then rounds them for storage.
func QuantizeGroupMinMax(codes []uint8, w []float32, bits int) (scale, bias float32) {
	wmin, wmax := w[0], w[0]
	for _, v := range w[1:] {
		wmin = min(wmin, v)
		wmax = max(wmax, v)
	}
	n := float32(int(1)<<bits - 1)
	scale = (wmax - wmin) / n
	for i, v := range w {
		q := float32(0)
		if scale != 0 {
			q = min(max(rint((v-wmin)/scale), 0), n)
		}
		codes[i] = uint8(q)
	}
	return scale, wmin
}

// GroupSquaredError returns Σ (scale·q_i + bias − w_i)², computed the way the
// kernels dequantize (float32 products) and summed in float64.
func GroupSquaredError(codes []uint8, w []float32, scale, bias float32) float64 {
	var e float64
	for i, v := range w {
		d := float64(scale*float32(codes[i]) + bias - v)
		e += d * d
	}
	return e
}
