package half

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
)

func TestBF16ToF32(t *testing.T) {
	for _, c := range []struct {
		h    uint16
		want float32
	}{{0x3f80, 1}, {0xbf80, -1}, {0x4049, 3.140625}, {0, 0}, {0x7f80, float32(math.Inf(1))}, {0x0001, math.Float32frombits(0x00010000)}} {
		if got := BF16ToF32(c.h); got != c.want {
			t.Errorf("BF16ToF32(%#04x) = %g, want %g", c.h, got, c.want)
		}
	}
	if !math.IsNaN(float64(BF16ToF32(0x7fc0))) {
		t.Error("BF16ToF32(0x7fc0) is not NaN")
	}
}

// TestDecodeMatchesTwin: the vector loop and its tail against the Go loop,
// every length around the vector widths, bit for bit (NaN payloads too).
func TestDecodeMatchesTwin(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n <= 70; n++ {
		src := make([]byte, 2*n+3) // longer than needed: Decode reads 2n bytes only
		for i := range src {
			src[i] = byte(r.Uint32())
		}
		got, want := make([]float32, n+1), make([]float32, n+1)
		got[n], want[n] = 42, 42
		DecodeBF16(got[:n], src)
		decodeGo(want[:n], src)
		for i := range got {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("n=%d [%d]: %#08x, want %#08x", n, i, math.Float32bits(got[i]), math.Float32bits(want[i]))
			}
		}
		for i := 0; i < n; i++ {
			if math.Float32bits(want[i]) != uint32(binary.LittleEndian.Uint16(src[2*i:]))<<16 {
				t.Fatalf("n=%d [%d]: the Go twin gives %#08x for %#04x", n, i, math.Float32bits(want[i]), binary.LittleEndian.Uint16(src[2*i:]))
			}
		}
	}
}

// Every bf16 and f16 value must survive widening and narrowing unchanged.
func TestHalfRoundTripExhaustive(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := uint16(i)
		for _, c := range []struct {
			name   string
			widen  func(uint16) float32
			narrow func(float32) uint16
			isNaN  func(uint16) bool
		}{
			{"bf16", BF16ToF32, F32ToBF16, func(h uint16) bool { return h&0x7f80 == 0x7f80 && h&0x7f != 0 }},
			{"f16", F16ToF32, F32ToF16, func(h uint16) bool { return h&0x7c00 == 0x7c00 && h&0x3ff != 0 }},
		} {
			f := c.widen(h)
			if c.isNaN(h) {
				if !math.IsNaN(float64(f)) || !c.isNaN(c.narrow(f)) {
					t.Fatalf("%s %#04x: NaN not kept (%v, %#04x)", c.name, h, f, c.narrow(f))
				}
				continue
			}
			if got := c.narrow(f); got != h {
				t.Fatalf("%s %#04x -> %v -> %#04x", c.name, h, f, got)
			}
		}
	}
}

// F16 widening must agree with the IEEE value computed independently.
func TestF16Values(t *testing.T) {
	for i := 0; i < 1<<15; i++ {
		h := uint16(i)
		exp, mant := int(h>>10), float64(h&0x3ff)
		var want float64
		switch {
		case exp == 0:
			want = math.Ldexp(mant, -24)
		case exp == 31:
			continue
		default:
			want = math.Ldexp(1+mant/1024, exp-15)
		}
		if got := F16ToF32(h); float64(got) != want || F16ToF32(h|0x8000) != -got {
			t.Fatalf("f16 %#04x = %v, want %v", h, got, want)
		}
	}
	if !math.IsInf(float64(F16ToF32(0x7c00)), 1) || !math.IsInf(float64(F16ToF32(0xfc00)), -1) {
		t.Fatal("f16 infinities")
	}
}

// Narrowing rounds to nearest, ties to even: check the exact midpoint between
// every pair of neighbouring finite values and one float32 ulp either side of it.
func TestHalfRoundingMidpoints(t *testing.T) {
	for _, c := range []struct {
		name   string
		widen  func(uint16) float32
		narrow func(float32) uint16
		maxFin uint16
	}{{"bf16", BF16ToF32, F32ToBF16, 0x7f7f}, {"f16", F16ToF32, F32ToF16, 0x7bff}} {
		for h := uint16(0); h < c.maxFin; h++ {
			lo, hi := c.widen(h), c.widen(h+1)
			mid := float32((float64(lo) + float64(hi)) / 2)
			if float64(mid) != (float64(lo)+float64(hi))/2 {
				t.Fatalf("%s: midpoint of %#04x not exact in float32", c.name, h)
			}
			even := h
			if h&1 == 1 {
				even = h + 1
			}
			for _, s := range []float32{1, -1} {
				sign := uint16(0)
				if s < 0 {
					sign = 0x8000
				}
				if got := c.narrow(s * mid); got != even|sign {
					t.Fatalf("%s: midpoint %v of %#04x/%#04x -> %#04x, want %#04x", c.name, s*mid, h, h+1, got, even|sign)
				}
				below := math.Nextafter32(mid, 0)
				above := math.Nextafter32(mid, float32(math.Inf(1)))
				if got := c.narrow(s * below); got != h|sign {
					t.Fatalf("%s: just below midpoint of %#04x -> %#04x", c.name, h, got)
				}
				if got := c.narrow(s * above); got != (h+1)|sign {
					t.Fatalf("%s: just above midpoint of %#04x -> %#04x", c.name, h, got)
				}
			}
		}
	}
	if F32ToF16(70000) != 0x7c00 || F32ToBF16(math.MaxFloat32) != 0x7f80 || F32ToF16(65519) != 0x7bff || F32ToF16(65520) != 0x7c00 {
		t.Fatal("overflow must round to Inf at the IEEE threshold")
	}
}
