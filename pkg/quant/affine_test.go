package quant

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestPackUnpack(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, bits := range []int{2, 3, 4, 8} {
		n := 96
		codes := make([]uint8, n)
		for i := range codes {
			codes[i] = uint8(rng.IntN(1 << bits))
		}
		words := make([]uint32, n*bits/32)
		PackCodes(words, codes, bits)
		got := make([]uint8, n)
		UnpackCodes(got, words, bits)
		for i := range codes {
			if got[i] != codes[i] {
				t.Fatalf("%d-bit code %d: %d -> %d", bits, i, codes[i], got[i])
			}
			// The stream definition: bit k of code i is stream bit i·bits+k.
			for k := 0; k < bits; k++ {
				pos := i*bits + k
				if bit := words[pos/32] >> (pos % 32) & 1; bit != uint32(codes[i]>>k&1) {
					t.Fatalf("%d-bit code %d bit %d misplaced", bits, i, k)
				}
			}
		}
	}
	// MLX 4-bit layout: byte j of the little-endian words holds element 2j low, 2j+1 high.
	words := make([]uint32, 1)
	PackCodes(words, []uint8{1, 2, 3, 4, 5, 6, 7, 8}, 4)
	if words[0] != 0x87654321 {
		t.Fatalf("4-bit word %#x", words[0])
	}
	PackCodes(words, []uint8{0x11, 0x22, 0x33, 0x44}, 8)
	if words[0] != 0x44332211 {
		t.Fatalf("8-bit word %#x", words[0])
	}
}

// The affine quantization error of an element is at most half a step, |scale|/2
// (plus float32 rounding), unless its code sits at an end of the range: MLX moves
// the scale so that 0 is exact (scale = edge/q0 with |q0| ≥ n/2), which can push
// the far extreme up to one step past the last code, so clamped elements are
// within 1.5 steps. With scales and biases then rounded to bf16, the bound grows
// by the rounding of s·q + b.
func TestQuantizeErrorBound(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, bits := range []int{2, 3, 4, 8} {
		for _, gs := range []int{32, 64, 128} {
			rows, cols := 7, 256
			src := make([]float32, rows*cols)
			for i := range src {
				src[i] = float32(rng.NormFloat64()) * 0.05
			}
			// Special groups: constant, all zero, all positive, a single outlier.
			for c := 0; c < gs; c++ {
				src[c] = 0.3
				src[cols+c] = 0
				src[2*cols+c] = 1 + float32(c)/float32(gs)
				src[3*cols+c] = 0.001 * float32(c%3)
			}
			src[3*cols+5] = -4
			p, err := Quantize(src, rows, cols, bits, gs)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]float32, len(src))
			if err := p.Dequantize(got); err != nil {
				t.Fatal(err)
			}
			groups := cols / gs
			n := int(1)<<bits - 1
			q := make([]uint8, cols)
			for i, w := range src {
				if i%cols == 0 {
					UnpackCodes(q, p.Codes[i/cols*WordsPerRow(cols, bits):], bits)
				}
				s := math.Abs(float64(p.Scales[i/cols*groups+i%cols/gs]))
				steps := 0.5
				if c := int(q[i%cols]); c == 0 || c == n {
					steps = 1.5
				}
				bound := s*steps*(1+1e-5) + 1e-6*math.Abs(float64(w)) + 1e-7
				if d := math.Abs(float64(got[i] - w)); d > bound {
					t.Fatalf("%d-bit gs %d element %d: |%v - %v| = %g > %g", bits, gs, i, got[i], w, d, bound)
				}
			}
			// The same after storing scales and biases as bf16.
			sb, bb := make([]byte, 2*len(p.Scales)), make([]byte, 2*len(p.Biases))
			EncodeFloats(sb, p.Scales, "BF16")
			EncodeFloats(bb, p.Biases, "BF16")
			cb := make([]byte, 4*len(p.Codes))
			EncodeCodes(cb, p.Codes)
			if err := DequantizeBytes(got, cb, sb, bb, "BF16", rows, cols, bits, gs); err != nil {
				t.Fatal(err)
			}
			for i, w := range src {
				g := i/cols*groups + i%cols/gs
				s, b := math.Abs(float64(p.Scales[g])), math.Abs(float64(p.Biases[g]))
				bound := 1.5*s + (float64(n)*s+b)/256 + 1e-6
				if d := math.Abs(float64(got[i] - w)); d > bound {
					t.Fatalf("%d-bit gs %d bf16 element %d: |%v - %v| = %g > %g", bits, gs, i, got[i], w, d, bound)
				}
			}
		}
	}
}

// Worked cases of the MLX algorithm (reference-math.md §4.4).
func TestQuantizeGroupRules(t *testing.T) {
	codes := make([]uint8, 4)
	// Positive extreme dominates: scale < 0, bias = max, codes count down from max.
	s, b := QuantizeGroup(codes, []float32{0, 1, 2, 3}, 2)
	if s != -1 || b != 3 || codes[0] != 3 || codes[3] != 0 {
		t.Fatalf("[0 1 2 3]: scale %v bias %v codes %v", s, b, codes)
	}
	// Negative extreme dominates: scale > 0, bias = min.
	s, b = QuantizeGroup(codes, []float32{-3, -2, -1, 0}, 2)
	if s != 1 || b != -3 || codes[0] != 0 || codes[3] != 3 {
		t.Fatalf("[-3 .. 0]: scale %v bias %v codes %v", s, b, codes)
	}
	// All zero: scale hits 1e-7, q0 = 0, bias 0.
	s, b = QuantizeGroup(codes, []float32{0, 0, 0, 0}, 4)
	if b != 0 || s != -1e-7 || codes[0] != 0 {
		t.Fatalf("zeros: scale %v bias %v codes %v", s, b, codes)
	}
	// Constant non-zero: bias = c, all codes 0.
	s, b = QuantizeGroup(codes, []float32{0.5, 0.5, 0.5, 0.5}, 4)
	if b != 0.5 || codes[0] != 0 || s > 0 {
		t.Fatalf("constant: scale %v bias %v codes %v", s, b, codes)
	}
}

func TestCheck(t *testing.T) {
	for _, c := range []struct {
		cols, bits, gs int
		ok             bool
	}{{128, 4, 64, true}, {128, 3, 64, true}, {96, 3, 32, true}, {100, 4, 64, false}, {128, 5, 64, false}, {64, 4, 0, false}, {48, 3, 16, false}} {
		if err := Check(c.cols, c.bits, c.gs); (err == nil) != c.ok {
			t.Errorf("Check(%d, %d, %d) = %v", c.cols, c.bits, c.gs, err)
		}
	}
}
