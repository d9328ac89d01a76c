package quant

import (
	"math"
	"math/rand/v2"
	"testing"
)

// quantizeGroupRef is the plain formulation of MLX's affine quantizer (the
// one QuantizeGroup must reproduce bit for bit).
func quantizeGroupRef(codes []uint8, w []float32, bits int) (scale, bias float32) {
	n := float32(int(1)<<bits - 1)
	wmax, wmin := w[0], w[0]
	for _, v := range w[1:] {
		wmax = max(wmax, v)
		wmin = min(wmin, v)
	}
	scale = max((wmax-wmin)/n, 1e-7)
	edge := wmax
	if abs32(wmin) > abs32(wmax) {
		edge = wmin
	} else {
		scale = -scale
	}
	q0 := rint(edge / scale)
	if q0 != 0 {
		scale = edge / q0
		bias = edge
	}
	for i, v := range w {
		q := rint((v - bias) / scale)
		codes[i] = uint8(min(max(q, 0), n))
	}
	return scale, bias
}

// packCodesRef is the bit-stream packer for every width.
func packCodesRef(dst []uint32, codes []uint8, bits int) {
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

// groups of every kind that matters: normal weights, ties (values exactly
// half-way between codes), constant groups (zero and non-zero), tiny ranges
// (the 1e-7 floor), huge magnitudes, one outlier, signed zeros.
func testGroups(rng *rand.Rand) [][]float32 {
	var out [][]float32
	g := func(f func(i int) float32) {
		w := make([]float32, 64)
		for i := range w {
			w[i] = f(i)
		}
		out = append(out, w)
	}
	for k := 0; k < 2000; k++ {
		s := float32(math.Pow(10, float64(rng.IntN(12)-8)))
		g(func(int) float32 { return float32(rng.NormFloat64()) * s })
	}
	for k := 0; k < 200; k++ {
		lo, step := float32(rng.IntN(7)-3), float32(1)/float32(1+rng.IntN(15))
		g(func(int) float32 { return lo + step*float32(rng.IntN(32))/2 })
	}
	g(func(int) float32 { return 0 })
	g(func(int) float32 { return 0.25 })
	// Constant groups whose edge/scale (value/1e-7) is 2^22 or more, past the
	// magic-number rounding of groupParams.
	for _, v := range []float32{0.5, 1, -3, 0.41943045, -0.8388607} {
		g(func(int) float32 { return v })
	}
	g(func(int) float32 { return -3e-9 })
	g(func(i int) float32 { return 1e-8 * float32(i%3) })
	g(func(i int) float32 { return 3e30 * float32(i%5-2) })
	g(func(i int) float32 {
		if i == 17 {
			return 50
		}
		return float32(rng.NormFloat64()) * 0.01
	})
	g(func(i int) float32 { return float32(math.Copysign(0, float64(i%2*2-1))) })
	return out
}

func TestQuantizeGroupMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, bits := range []int{2, 3, 4, 8} {
		for gi, w := range testGroups(rng) {
			got, want := make([]uint8, len(w)), make([]uint8, len(w))
			s, b := QuantizeGroup(got, w, bits)
			rs, rb := quantizeGroupRef(want, w, bits)
			if math.Float32bits(s) != math.Float32bits(rs) || math.Float32bits(b) != math.Float32bits(rb) {
				t.Fatalf("%d-bit group %d: scale/bias %g/%g, reference %g/%g", bits, gi, s, b, rs, rb)
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("%d-bit group %d: code %d = %d, reference %d (w %g)", bits, gi, i, got[i], want[i], w[i])
				}
			}
			words, ref := make([]uint32, len(w)*bits/32), make([]uint32, len(w)*bits/32)
			PackCodes(words, got, bits)
			packCodesRef(ref, got, bits)
			for i := range words {
				if words[i] != ref[i] {
					t.Fatalf("%d-bit group %d: word %d = %#x, reference %#x", bits, gi, i, words[i], ref[i])
				}
			}
		}
	}
}

// BenchmarkQuantizeGroup compares the fast group quantizer with the plain
// formulation in the same run (the machine is shared: compare the ratio).
func BenchmarkQuantizeGroup(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	w := make([]float32, 64*1024)
	for i := range w {
		w[i] = float32(rng.NormFloat64()) * 0.02
	}
	codes := make([]uint8, 64)
	words := make([]uint32, 8)
	for _, impl := range []struct {
		name string
		q    func([]uint8, []float32, int) (float32, float32)
		p    func([]uint32, []uint8, int)
	}{{"fast", QuantizeGroup, PackCodes}, {"reference", quantizeGroupRef, packCodesRef}} {
		b.Run(impl.name, func(b *testing.B) {
			b.SetBytes(int64(2 * len(w))) // bytes of bf16 source
			for b.Loop() {
				for g := 0; g < len(w); g += 64 {
					impl.q(codes, w[g:g+64], 4)
					impl.p(words, codes, 4)
				}
			}
		})
	}
}
