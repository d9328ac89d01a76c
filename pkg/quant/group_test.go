package quant

import (
	"fmt"
	"github.com/fm-moe/fm/pkg/internal/half"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// atEveryLevel runs f once per SIMD level this machine has (the generic twin
// always), restoring the level afterwards.
func atEveryLevel(t testing.TB, f func(name string)) {
	saved := simdLevel
	defer func() { simdLevel = saved }()
	for lvl := levelGeneric; lvl <= detectedLevel; lvl++ {
		simdLevel = lvl
		f([]string{"generic", "avx2", "avx512"}[lvl])
	}
}

// TestQuantizeBlockMatchesReference holds the block quantizer (SIMD kernels
// and their Go twins) bit-identical to the plain per-group formulation on the
// groups of testGroups laid out as matrices of several shapes: one group per
// row, several per row, rows that end inside a chunk, and group sizes the
// kernels take (multiples of 16) and do not (8, 24).
func TestQuantizeBlockMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	var all []float32
	for _, w := range testGroups(rng) {
		all = append(all, w...)
	}
	atEveryLevel(t, func(level string) {
		for _, bits := range []int{2, 3, 4, 8} {
			for _, shape := range []struct{ cols, gs int }{{64, 64}, {256, 64}, {768, 32}, {2048, 128}, {96, 16}, {192, 48}, {64, 8}, {96, 24}, {8192 + 64, 64}} {
				cols, gs := shape.cols, shape.gs
				if Check(cols, bits, gs) != nil {
					continue
				}
				rows := len(all) / cols
				src := all[:rows*cols]
				var p Packed
				if err := QuantizeInto(&p, src, rows, cols, bits, gs); err != nil {
					t.Fatal(err)
				}
				name := fmt.Sprintf("%s %d-bit [%d, %d] gs %d", level, bits, rows, cols, gs)
				checkAgainstReference(t, name, &p, src, rows, cols, bits, gs)
			}
		}
	})
}

func checkAgainstReference(t *testing.T, name string, p *Packed, src []float32, rows, cols, bits, gs int) {
	t.Helper()
	codes, want := make([]uint8, cols), make([]uint8, cols)
	groups, wpr := cols/gs, WordsPerRow(cols, bits)
	words := make([]uint32, wpr)
	for r := 0; r < rows; r++ {
		for g := 0; g < groups; g++ {
			s, b := quantizeGroupRef(want[g*gs:(g+1)*gs], src[r*cols+g*gs:r*cols+(g+1)*gs], bits)
			gs2, gb := p.Scales[r*groups+g], p.Biases[r*groups+g]
			if math.Float32bits(s) != math.Float32bits(gs2) || math.Float32bits(b) != math.Float32bits(gb) {
				t.Fatalf("%s: row %d group %d: scale/bias %g/%g, reference %g/%g", name, r, g, gs2, gb, s, b)
			}
		}
		packCodesRef(words, want, bits)
		UnpackCodes(codes, p.Codes[r*wpr:(r+1)*wpr], bits)
		for i := range words {
			if words[i] != p.Codes[r*wpr+i] {
				t.Fatalf("%s: row %d word %d = %#x, reference %#x (codes %v, want %v)", name, r, i, p.Codes[r*wpr+i], words[i], codes, want)
			}
		}
	}
}

// QuantizeBF16Into (chunks widened in cache) equals DecodeFloats then
// QuantizeInto, bit for bit, at every level; a bf16 NaN is an error there too.
func TestQuantizeBF16IntoMatchesFloat(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	var raw []byte
	for _, w := range testGroups(rng) {
		for _, v := range w {
			h := half.F32ToBF16(v)
			raw = append(raw, byte(h), byte(h>>8))
		}
	}
	atEveryLevel(t, func(level string) {
		for _, shape := range []struct{ cols, gs int }{{64, 64}, {2048, 64}, {96, 32}, {8192 + 128, 128}} {
			rows := len(raw) / 2 / shape.cols
			r := raw[:2*rows*shape.cols]
			vals := make([]float32, rows*shape.cols)
			if err := DecodeFloats(vals, r, "BF16"); err != nil {
				t.Fatal(err)
			}
			var want, got Packed
			if err := QuantizeInto(&want, vals, rows, shape.cols, 4, shape.gs); err != nil {
				t.Fatal(err)
			}
			if err := QuantizeBF16Into(&got, r, rows, shape.cols, 4, shape.gs); err != nil {
				t.Fatal(err)
			}
			for i := range want.Codes {
				if got.Codes[i] != want.Codes[i] {
					t.Fatalf("%s %v: word %d = %#x, want %#x", level, shape, i, got.Codes[i], want.Codes[i])
				}
			}
			for i := range want.Scales {
				if math.Float32bits(got.Scales[i]) != math.Float32bits(want.Scales[i]) || math.Float32bits(got.Biases[i]) != math.Float32bits(want.Biases[i]) {
					t.Fatalf("%s %v: group %d scale/bias differ", level, shape, i)
				}
			}
		}
		bad := append([]byte(nil), raw[:2*4096]...)
		bad[2*3000+1], bad[2*3000] = 0x7f, 0xc0 // bf16 NaN at element 3000
		var p Packed
		if err := QuantizeBF16Into(&p, bad, 2, 2048, 4, 64); err == nil || !strings.Contains(err.Error(), "row 1, column 952") {
			t.Fatalf("%s: bf16 NaN: error %v", level, err)
		}
	})
}

func TestEncodeCodes(t *testing.T) {
	words := []uint32{0x04030201, 0xdeadbeef, 0}
	got := make([]byte, 12)
	EncodeCodes(got, words)
	want := []byte{1, 2, 3, 4, 0xef, 0xbe, 0xad, 0xde, 0, 0, 0, 0}
	if string(got) != string(want) {
		t.Fatalf("EncodeCodes: % x, want % x", got, want)
	}
}

// A NaN or an infinity anywhere in the matrix is an error naming its place,
// at every level and wherever it sits in a group.
func TestQuantizeRejectsNonFinite(t *testing.T) {
	atEveryLevel(t, func(level string) {
		for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
			for _, at := range []int{0, 17, 63, 64*9 + 5, 64*20 - 1} {
				src := make([]float32, 64*20)
				for i := range src {
					src[i] = float32(i%7) * 0.1
				}
				src[at] = bad
				var p Packed
				err := QuantizeInto(&p, src, 5, 256, 4, 64)
				want := fmt.Sprintf("row %d, column %d", at/256, at%256)
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("%s: %g at %d: error %v, want one naming %q", level, bad, at, err, want)
				}
			}
		}
	})
}

// The bf16 decode kernels against the scalar widening, over lengths that
// leave tails of every size.
func TestDecodeBF16Twins(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	src := make([]byte, 2*200)
	for i := range src {
		src[i] = byte(rng.Uint32())
	}
	atEveryLevel(t, func(level string) {
		for n := 0; n <= 100; n++ {
			got := make([]float32, n+1)
			got[n] = 42
			if err := DecodeFloats(got[:n], src[3*2:], "BF16"); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < n; i++ {
				want := half.BF16ToF32(uint16(src[6+2*i]) | uint16(src[7+2*i])<<8)
				if math.Float32bits(got[i]) != math.Float32bits(want) {
					t.Fatalf("%s: n %d: value %d = %#x, want %#x", level, n, i, math.Float32bits(got[i]), math.Float32bits(want))
				}
			}
			if got[n] != 42 {
				t.Fatalf("%s: n %d: wrote past the end", level, n)
			}
		}
	})
}

// BenchmarkQuantizeBlock is the converter's per-matrix work (bf16 decode,
// quantize, pack) on an expert-sized matrix at each SIMD level; bytes are the
// bf16 source's.
func BenchmarkQuantizeBlock(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	const rows, cols = 768, 2048
	raw := make([]byte, 2*rows*cols)
	for i := 0; i < len(raw); i += 2 {
		h := half.F32ToBF16(float32(rng.NormFloat64()) * 0.02)
		raw[i], raw[i+1] = byte(h), byte(h>>8)
	}
	var p Packed
	atEveryLevel(b, func(level string) {
		b.Run(level, func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				if err := QuantizeBF16Into(&p, raw, rows, cols, 4, 64); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}
