package cpu

import "math"

// Dot is Σ a[i]·b[i] over len(a).
func Dot(a, b []float32) float32 {
	if haveAVX2 {
		return dotF32SIMD(a, b)
	}
	if haveNEON {
		return f32DotArch(a, b)
	}
	return dotF32(a, b)
}

// Axpy adds a·x to y (over len(x)).
func Axpy(y []float32, a float32, x []float32) {
	if haveAVX2 {
		axpySIMD(y, a, x)
		return
	}
	if haveNEON {
		axpyArch(y, a, x)
		return
	}
	axpyGo(y, a, x)
}

func axpyGo(y []float32, a float32, x []float32) {
	y = y[:len(x)]
	for i, v := range x {
		y[i] += a * v
	}
}

// DecayRead scales a GatedDeltaNet state row by alpha and accumulates it,
// times k, into mem: s[i] *= alpha; mem[i] += s[i]·k.
func DecayRead(s, mem []float32, alpha, k float32) {
	if haveAVX2 {
		decayReadSIMD(s, mem, alpha, k)
		return
	}
	decayReadGo(s, mem, alpha, k)
}

func decayReadGo(s, mem []float32, alpha, k float32) {
	mem = mem[:len(s)]
	for i := range s {
		s[i] *= alpha
		mem[i] += s[i] * k
	}
}

// UpdateRead applies the delta-rule update to a state row and accumulates the
// read-out: s[i] += k·delta[i]; o[i] += s[i]·q.
func UpdateRead(s, delta, o []float32, k, q float32) {
	if haveAVX2 {
		updateReadSIMD(s, delta, o, k, q)
		return
	}
	updateReadGo(s, delta, o, k, q)
}

func updateReadGo(s, delta, o []float32, k, q float32) {
	delta, o = delta[:len(s)], o[:len(s)]
	for i := range s {
		s[i] += k * delta[i]
		o[i] += s[i] * q
	}
}

// Add adds x to y elementwise (over len(x)).
func Add(y, x []float32) {
	y = y[:len(x)]
	for i, v := range x {
		y[i] += v
	}
}

// RMSNorm writes x / sqrt(mean(x²) + eps) · w into dst (dst may alias x). The
// mean of squares is accumulated in float64 so that it is correctly rounded.
func RMSNorm(dst, x, w []float32, eps float64) {
	dst = dst[:len(x)]
	w = w[:len(x)]
	ss := sumSquares(x)
	inv := float32(1 / math.Sqrt(float64(float32(ss/float64(len(x))))+eps))
	scaledMulSIMD(dst, x, w, inv)
}

// scaledMulGo writes x[i]·s·w[i] into dst (which may alias x); the generic
// twin of scaledMulAVX2.
func scaledMulGo(dst, x, w []float32, s float32) {
	dst, w = dst[:len(x)], w[:len(x)]
	for i, v := range x {
		dst[i] = v * s * w[i]
	}
}

// sumSquares is Σ x[i]² in float64, in four interleaved partial sums: one
// chain of float64 adds waited ~4 cycles per element on its own latency, and
// the norms of a decode step's 36 heads and its hidden vectors are short
// enough for that to show (~10 µs a layer). The sum differs from the one-chain
// order in the last bits of a float64, far below the float32 it ends in.
func sumSquares(x []float32) float64 {
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(x); i += 4 {
		a, b, c, d := float64(x[i]), float64(x[i+1]), float64(x[i+2]), float64(x[i+3])
		s0 += a * a
		s1 += b * b
		s2 += c * c
		s3 += d * d
	}
	for ; i < len(x); i++ {
		s0 += float64(x[i]) * float64(x[i])
	}
	return (s0 + s1) + (s2 + s3)
}

// RMSNormGated is the GatedDeltaNet output norm: x / sqrt(mean(x²)+eps) · w ·
// silu(z), in place on x.
func RMSNormGated(x, z, w []float32, eps float64) {
	RMSNorm(x, x, w, eps)
	z = z[:len(x)]
	for i := range x {
		x[i] *= SiLU(z[i])
	}
}

// L2Normalize scales x to x / sqrt(Σx² + eps) · scale (eps added to the sum, as
// transformers' l2norm does).
func L2Normalize(x []float32, eps float64, scale float32) {
	ss := sumSquares(x)
	inv := float32(1 / math.Sqrt(float64(float32(ss))+eps))
	for i, v := range x {
		x[i] = v * inv * scale
	}
}

// Sigmoid is 1/(1+e^−x).
func Sigmoid(x float32) float32 { return float32(1 / (1 + math.Exp(-float64(x)))) }

// SiLU is x·sigmoid(x).
func SiLU(x float32) float32 { return float32(float64(x) / (1 + math.Exp(-float64(x)))) }

// Softplus is log(1+e^x), returning x above 20 as torch does.
func Softplus(x float32) float32 {
	if x > 20 {
		return x
	}
	return float32(math.Log1p(math.Exp(float64(x))))
}

// SwiGLU writes silu(gate[i])·up[i] into gate.
func SwiGLU(gate, up []float32) {
	up = up[:len(gate)]
	for i, g := range gate {
		gate[i] = SiLU(g) * up[i]
	}
}

// swiGLU32 is SwiGLU with the exponential in float32 (exp32, about 1 ulp)
// and eight lanes at a time: SwiGLU's float64 math.Exp was a tenth of an int8
// prefill's CPU time. Int8 mode, approximate anyway, uses it; exact mode
// keeps SwiGLU (docs/PERF.md, round seven).
func swiGLU32(gate, up []float32) {
	up = up[:len(gate)]
	swiGLU32SIMD(gate, up)
}

// swiGLUExpMax caps exp32's argument −gate (2ⁿ must stay a float); past it
// the result is 0, silu(g) for g below −88 being below 1e−36.
const swiGLUExpMax = 88

// swiGLU32Go is swiGLU32's Go twin.
func swiGLU32Go(gate, up []float32) {
	up = up[:len(gate)]
	for i, g := range gate {
		if -g > swiGLUExpMax {
			gate[i] = 0
			continue
		}
		gate[i] = g / (1 + exp32(-g)) * up[i]
	}
}

// Rope holds the inverse frequencies of a rotary embedding over the first Dim
// dimensions of a head, paired NeoX style (i with i+Dim/2).
type Rope struct {
	Dim     int
	InvFreq []float32
}

// NewRope computes inv_freq[i] = θ^(−2i/dim) in float32, the way transformers
// does (exponent and power rounded to float32, then the reciprocal).
func NewRope(dim int, theta float64) *Rope {
	r := &Rope{Dim: dim, InvFreq: make([]float32, dim/2)}
	for i := range r.InvFreq {
		e := float32(2*i) / float32(dim)
		p := float32(math.Pow(theta, float64(e)))
		r.InvFreq[i] = 1 / p
	}
	return r
}

// Tables fills cos and sin (each Dim/2) for position pos: angle = pos·inv_freq
// rounded to float32, then cos/sin rounded to float32.
func (r *Rope) Tables(cos, sin []float32, pos int) {
	p := float32(pos)
	for i, f := range r.InvFreq {
		a := float64(p * f)
		cos[i] = float32(math.Cos(a))
		sin[i] = float32(math.Sin(a))
	}
}

// Apply rotates the first Dim elements of x with precomputed tables.
func (r *Rope) Apply(x, cos, sin []float32) {
	h := r.Dim / 2
	lo, hi := x[:h], x[h:2*h]
	for i := range lo {
		a, b := lo[i], hi[i]
		lo[i] = a*cos[i] - b*sin[i]
		hi[i] = b*cos[i] + a*sin[i]
	}
}
