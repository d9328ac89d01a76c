package cpu

import "math"

// expConsts are the constants of the float32 exp of SoftmaxF32, each repeated
// over eight lanes for the assembly kernel: clamp, log2(e), ln 2 split in a
// high part exact in float32 and a low remainder (Cody–Waite), the Cephes expf
// polynomial p0…p5, one, and the exponent bias.
var expConsts = [12][8]uint32{
	{0xc2ae999a, 0xc2ae999a, 0xc2ae999a, 0xc2ae999a, 0xc2ae999a, 0xc2ae999a, 0xc2ae999a, 0xc2ae999a}, // −87.3
	{0x3fb8aa3b, 0x3fb8aa3b, 0x3fb8aa3b, 0x3fb8aa3b, 0x3fb8aa3b, 0x3fb8aa3b, 0x3fb8aa3b, 0x3fb8aa3b}, // log2(e)
	{0x3f318000, 0x3f318000, 0x3f318000, 0x3f318000, 0x3f318000, 0x3f318000, 0x3f318000, 0x3f318000}, // 0.693359375
	{0xb95e8083, 0xb95e8083, 0xb95e8083, 0xb95e8083, 0xb95e8083, 0xb95e8083, 0xb95e8083, 0xb95e8083}, // −2.12194440e−4
	{0x39506967, 0x39506967, 0x39506967, 0x39506967, 0x39506967, 0x39506967, 0x39506967, 0x39506967}, // p0
	{0x3ab743ce, 0x3ab743ce, 0x3ab743ce, 0x3ab743ce, 0x3ab743ce, 0x3ab743ce, 0x3ab743ce, 0x3ab743ce}, // p1
	{0x3c088908, 0x3c088908, 0x3c088908, 0x3c088908, 0x3c088908, 0x3c088908, 0x3c088908, 0x3c088908}, // p2
	{0x3d2aa9c1, 0x3d2aa9c1, 0x3d2aa9c1, 0x3d2aa9c1, 0x3d2aa9c1, 0x3d2aa9c1, 0x3d2aa9c1, 0x3d2aa9c1}, // p3
	{0x3e2aaaaa, 0x3e2aaaaa, 0x3e2aaaaa, 0x3e2aaaaa, 0x3e2aaaaa, 0x3e2aaaaa, 0x3e2aaaaa, 0x3e2aaaaa}, // p4
	{0x3f000000, 0x3f000000, 0x3f000000, 0x3f000000, 0x3f000000, 0x3f000000, 0x3f000000, 0x3f000000}, // p5
	{0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000, 0x3f800000}, // 1
	{127, 127, 127, 127, 127, 127, 127, 127},                                                         // exponent bias (int32)
}

func expConst(i int) float32 { return math.Float32frombits(expConsts[i][0]) }

// exp32 is the Go twin of the kernel's exp for x ≤ 0: x clamped at −87.3
// (exp of that is 1e−38, nothing next to the row maximum's 1), reduced to
// r = x − n·ln2 with |r| ≤ ln2/2, exp(r) from the Cephes polynomial (relative
// error about 1 ulp), times 2ⁿ built in the exponent bits.
func exp32(x float32) float32 {
	x = max(x, expConst(0))
	n := float32(math.RoundToEven(float64(x * expConst(1))))
	r := x - n*expConst(2)
	r -= n * expConst(3)
	p := expConst(4)
	for i := 5; i <= 9; i++ {
		p = p*r + expConst(i)
	}
	y := p*(r*r) + r + expConst(10)
	return y * math.Float32frombits(uint32(int32(n)+127)<<23)
}

// SoftmaxF32 normalizes x in place like Softmax, exp(x − max)/Σ, but with the
// exponential in float32 (about 1 ulp, vectorized) instead of float64; the
// sum is still accumulated in float64. It is the attention's softmax, where
// a float64 exp per score cost more than the dot products themselves. With
// AVX-512 the whole row, its last n mod 8 scores included, goes through the
// vector exp (expSumAll); else those last few go through exp32, which
// differs from it by an ulp at times.
func SoftmaxF32(x []float32) {
	if len(x) == 0 {
		return
	}
	mx := maxF32SIMD(x)
	if sum, ok := expSumAll(x, mx); ok {
		scaleF32SIMD(x, float32(1/sum))
		return
	}
	var sum float64
	n := 0
	if haveAVX2 {
		n = len(x) &^ 7
		if n > 0 {
			sum = expSumSIMD(x[:n], mx)
		}
	}
	for i := n; i < len(x); i++ {
		e := exp32(x[i] - mx)
		x[i] = e
		sum += float64(e)
	}
	scaleF32SIMD(x, float32(1/sum))
}

// maxF32Go is the largest of x (len(x) > 0), NaNs skipped unless x[0] is one;
// the generic twin of maxAVX2.
func maxF32Go(x []float32) float32 {
	mx := x[0]
	for _, v := range x[1:] {
		if v > mx {
			mx = v
		}
	}
	return mx
}

// scaleF32Go multiplies x by s; the generic twin of scaleAVX2.
func scaleF32Go(x []float32, s float32) {
	for i := range x {
		x[i] *= s
	}
}
