package quant

import (
	"math"
	"testing"
)

func TestEncodeDecodeFloats(t *testing.T) {
	src := []float32{1, -2.5, 0.1, 65504, float32(math.Inf(-1))}
	for _, dt := range []string{"BF16", "F16", "F32"} {
		es, _ := FloatSize(dt)
		b := make([]byte, len(src)*es)
		if err := EncodeFloats(b, src, dt); err != nil {
			t.Fatal(err)
		}
		got := make([]float32, len(src))
		if err := DecodeFloats(got, b, dt); err != nil {
			t.Fatal(err)
		}
		for i := range src {
			if rel := math.Abs(float64(got[i]-src[i])) / math.Abs(float64(src[i])); !(rel <= 1.0/256) && !math.IsInf(float64(src[i]), 0) {
				t.Fatalf("%s: %v -> %v", dt, src[i], got[i])
			}
		}
	}
	if err := DecodeFloats(make([]float32, 1), []byte{0, 0}, "U8"); err == nil {
		t.Fatal("U8 is not a float dtype")
	}
	if err := DecodeFloats(make([]float32, 2), []byte{0, 0}, "BF16"); err == nil {
		t.Fatal("short input must fail")
	}
}
