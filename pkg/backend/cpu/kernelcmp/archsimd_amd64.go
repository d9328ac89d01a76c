//go:build goexperiment.simd && amd64 && !noasm

package kernelcmp

import (
	"simd/archsimd"
	"unsafe"
)

// The archsimd variant: the same kernels in Go 1.26's simd/archsimd (only
// built with GOEXPERIMENT=simd). Each archsimd method is one instruction, so
// the 4-bit row is a line-for-line transcription of q4RowsAsm: Permute is
// VPERMPS on a Float32x16, ShiftRight the per-lane VPSRLVD (not ShiftAllRight,
// Go issue #80835). What it cannot say is noted per kernel. The inner loops
// walk unsafe pointers after one bounds check per call, as the assembly does;
// slice indexing there adds a check per load.

var (
	iotaF32  = [16]float32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}
	q4Counts = func() (c [4][16]uint32) {
		for k := range c {
			for j := range c[k] {
				c[k][j] = uint32(8*k + 4*(j/8))
			}
		}
		return c
	}()
)

func init() {
	if !archsimd.X86.AVX512() {
		if archsimd.X86.AVX2() && archsimd.X86.FMA() {
			variants = append(variants, Variant{Name: "archsimd", Q4RowAVX2: q4RowAVX2SIMD, Note: "AVX2 only"})
		}
		return
	}
	v := Variant{Name: "archsimd", Q4Rows: q4RowsSIMD, Q4RowAVX2: q4RowAVX2SIMD,
		DotBF16: wrapDot("DotBF16", 64, dotBF16SIMD, dotBF16Go),
		DotU8I8: wrapDot("DotU8I8", 256, dotU8I8SIMD, dotU8I8Go),
		Note:    "no VPDPBUSD in archsimd: u8·s8 dot widened to int16 and VPMADDWD (DotProductPairs)"}
	variants = append(variants, v, Variant{Name: "archsimd-lean", Q4Rows: q4RowsSIMDLean,
		Note: "q4RowsSIMD reshaped to fit Go's 15 allocatable vector registers"})
}

func q4RowsSIMD(codes []byte, xp, scales, biases, y []float32, gs int) {
	g := q4Shape(codes, xp, scales, biases, y, gs)
	iota := archsimd.LoadFloat32x16(&iotaF32)
	c0 := archsimd.LoadUint32x16(&q4Counts[0])
	c1 := archsimd.LoadUint32x16(&q4Counts[1])
	c2 := archsimd.LoadUint32x16(&q4Counts[2])
	c3 := archsimd.LoadUint32x16(&q4Counts[3])
	reps := gs / 64
	p := unsafe.Pointer(&codes[0])
	for r := range y {
		xq := unsafe.Pointer(&xp[0])
		var a0, a1, a2, a3 archsimd.Float32x16
		for gi := range g {
			t := iota.MulAdd(archsimd.BroadcastFloat32x16(scales[r*g+gi]), archsimd.BroadcastFloat32x16(biases[r*g+gi]))
			for range reps {
				// No VBROADCASTI64X4 from memory in the API: load 256
				// bits and insert them as both halves (VINSERTI64X4).
				h := archsimd.LoadUint32x8((*[8]uint32)(p))
				w := archsimd.Uint32x16{}.SetLo(h).SetHi(h)
				a0 = t.Permute(w.ShiftRight(c0)).MulAdd(archsimd.LoadFloat32x16((*[16]float32)(xq)), a0)
				a1 = t.Permute(w.ShiftRight(c1)).MulAdd(archsimd.LoadFloat32x16((*[16]float32)(unsafe.Add(xq, 64))), a1)
				a2 = t.Permute(w.ShiftRight(c2)).MulAdd(archsimd.LoadFloat32x16((*[16]float32)(unsafe.Add(xq, 128))), a2)
				a3 = t.Permute(w.ShiftRight(c3)).MulAdd(archsimd.LoadFloat32x16((*[16]float32)(unsafe.Add(xq, 192))), a3)
				p = unsafe.Add(p, 32)
				xq = unsafe.Add(xq, 256)
			}
		}
		y[r] = sum16(a0.Add(a1).Add(a2.Add(a3)))
	}
}

// sum16 reduces a vector to a float32 (halves, then a store: there is no
// horizontal add on Float32x16).
func sum16(v archsimd.Float32x16) float32 {
	h := v.GetLo().Add(v.GetHi())
	var t [8]float32
	h.Store(&t)
	return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]))
}

// dotBF16SIMD is the bf16 dot over n elements at w and x, n a multiple of 64
// (the signature of the assembly kernels, so that wrapDot serves all three).
func dotBF16SIMD(w *uint16, x *float32, n int) float32 {
	sixteen := archsimd.BroadcastUint32x16(16)
	var a0, a1, a2, a3 archsimd.Float32x16
	pw, px := unsafe.Pointer(w), unsafe.Pointer(x)
	for range n / 64 {
		a0 = bf16x16(pw, 0, sixteen).MulAdd(archsimd.LoadFloat32x16((*[16]float32)(px)), a0)
		a1 = bf16x16(pw, 32, sixteen).MulAdd(archsimd.LoadFloat32x16((*[16]float32)(unsafe.Add(px, 64))), a1)
		a2 = bf16x16(pw, 64, sixteen).MulAdd(archsimd.LoadFloat32x16((*[16]float32)(unsafe.Add(px, 128))), a2)
		a3 = bf16x16(pw, 96, sixteen).MulAdd(archsimd.LoadFloat32x16((*[16]float32)(unsafe.Add(px, 192))), a3)
		pw, px = unsafe.Add(pw, 128), unsafe.Add(px, 256)
	}
	return sum16(a0.Add(a1).Add(a2.Add(a3)))
}

// bf16x16 widens the 16 bf16 at p+off to float32: VPMOVZXWD, then a shift by
// a vector count (VPSLLVD) rather than ShiftAllLeft, whose constant form can
// compile to a legacy-SSE sequence (Go issue #80835).
func bf16x16(p unsafe.Pointer, off uintptr, sixteen archsimd.Uint32x16) archsimd.Float32x16 {
	return archsimd.LoadUint16x16((*[16]uint16)(unsafe.Add(p, off))).ExtendToUint32().ShiftLeft(sixteen).AsFloat32x16()
}

// dotU8I8SIMD: archsimd has no VPDPBUSD. Its u8·s8 instruction, VPMADDUBSW
// (DotProductPairsSaturated), saturates pairs at int16 (255·127·2 > 32767),
// so the exact form widens both operands to int16 (VPMOVZXBW, VPMOVSXBW) and
// uses VPMADDWD (DotProductPairs): three instructions and two widenings per
// 32 products where VNNI needs one per 64.
// n is a multiple of 128.
func dotU8I8SIMD(a *uint8, b *int8, n int) int32 {
	var s0, s1, s2, s3 archsimd.Int32x16
	pa, pb := unsafe.Pointer(a), unsafe.Pointer(b)
	for range n / 128 {
		s0 = s0.Add(u8i8x32(pa, pb, 0))
		s1 = s1.Add(u8i8x32(pa, pb, 32))
		s2 = s2.Add(u8i8x32(pa, pb, 64))
		s3 = s3.Add(u8i8x32(pa, pb, 96))
		pa, pb = unsafe.Add(pa, 128), unsafe.Add(pb, 128)
	}
	v := s0.Add(s1).Add(s2.Add(s3))
	h := v.GetLo().Add(v.GetHi())
	var t [8]int32
	h.Store(&t)
	return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]))
}

// u8i8x32 is the pairwise int32 sums of the 32 products at pa+off, pb+off.
func u8i8x32(pa, pb unsafe.Pointer, off uintptr) archsimd.Int32x16 {
	ua := archsimd.LoadUint8x32((*[32]uint8)(unsafe.Add(pa, off))).ExtendToUint16().AsInt16x32()
	sb := archsimd.LoadInt8x32((*[32]int8)(unsafe.Add(pb, off))).ExtendToInt16()
	return ua.DotProductPairs(sb)
}

// q4RowsSIMDLean is q4RowsSIMD with fewer live vectors: Go's register
// allocator uses only Z0..Z14 (Z15 is the ABI's zero register; Z16..Z31 are
// never allocated), and q4RowsSIMD's four count vectors, table, four
// accumulators and temporaries do not fit, so it reloads spilled vectors in
// the inner loop. Here the word is shifted down by 8 bits between steps
// (a vector count, not ShiftAllRight: Go issue #80835), so two count vectors
// suffice, at the price of three more shifts per 64 codes.
func q4RowsSIMDLean(codes []byte, xp, scales, biases, y []float32, gs int) {
	g := q4Shape(codes, xp, scales, biases, y, gs)
	c0 := archsimd.LoadUint32x16(&q4Counts[0])
	eight := archsimd.BroadcastUint32x16(8)
	reps := gs / 64
	p := unsafe.Pointer(&codes[0])
	for r := range y {
		xq := unsafe.Pointer(&xp[0])
		var a0, a1, a2, a3 archsimd.Float32x16
		for gi := range g {
			t := archsimd.LoadFloat32x16(&iotaF32).MulAdd(archsimd.BroadcastFloat32x16(scales[r*g+gi]), archsimd.BroadcastFloat32x16(biases[r*g+gi]))
			for range reps {
				h := archsimd.LoadUint32x8((*[8]uint32)(p))
				w := archsimd.Uint32x16{}.SetLo(h).SetHi(h)
				a0 = t.Permute(w.ShiftRight(c0)).MulAdd(archsimd.LoadFloat32x16((*[16]float32)(xq)), a0)
				w = w.ShiftRight(eight)
				a1 = t.Permute(w.ShiftRight(c0)).MulAdd(archsimd.LoadFloat32x16((*[16]float32)(unsafe.Add(xq, 64))), a1)
				w = w.ShiftRight(eight)
				a2 = t.Permute(w.ShiftRight(c0)).MulAdd(archsimd.LoadFloat32x16((*[16]float32)(unsafe.Add(xq, 128))), a2)
				w = w.ShiftRight(eight)
				a3 = t.Permute(w.ShiftRight(c0)).MulAdd(archsimd.LoadFloat32x16((*[16]float32)(unsafe.Add(xq, 192))), a3)
				p = unsafe.Add(p, 32)
				xq = unsafe.Add(xq, 256)
			}
		}
		y[r] = sum16(a0.Add(a1).Add(a2.Add(a3)))
	}
}

// q4RowAVX2SIMD transcribes q4RowAsmY in 256-bit archsimd. VPMOVZXBD from
// memory has no API form: 16 bytes are loaded once, ExtendLo8ToUint32 widens
// the low 8 and ConcatShiftBytesRight (VPALIGNR) brings the high 8 down
// first. The bias term Σ b_g·gsum_g is summed after the loop, in Go.
func q4RowAVX2SIMD(codes []byte, xp, scales, biases, gsum []float32, gs int) float32 {
	g := q4RowShape(codes, xp, scales, biases, gsum, gs)
	mask := archsimd.BroadcastUint32x8(15)
	four := archsimd.BroadcastUint32x8(4)
	p, xq := unsafe.Pointer(&codes[0]), unsafe.Pointer(&xp[0])
	var tot archsimd.Float32x8
	for gi := range g {
		var a1, a2, a3, a4 archsimd.Float32x8
		for range gs / 32 {
			b := archsimd.LoadUint8x16((*[16]uint8)(p))
			w0 := b.ExtendLo8ToUint32()
			w1 := b.ConcatShiftBytesRight(8, b).ExtendLo8ToUint32()
			a1 = w0.And(mask).AsInt32x8().ConvertToFloat32().MulAdd(archsimd.LoadFloat32x8((*[8]float32)(xq)), a1)
			a2 = w0.ShiftRight(four).AsInt32x8().ConvertToFloat32().MulAdd(archsimd.LoadFloat32x8((*[8]float32)(unsafe.Add(xq, 32))), a2)
			a3 = w1.And(mask).AsInt32x8().ConvertToFloat32().MulAdd(archsimd.LoadFloat32x8((*[8]float32)(unsafe.Add(xq, 64))), a3)
			a4 = w1.ShiftRight(four).AsInt32x8().ConvertToFloat32().MulAdd(archsimd.LoadFloat32x8((*[8]float32)(unsafe.Add(xq, 96))), a4)
			p, xq = unsafe.Add(p, 16), unsafe.Add(xq, 128)
		}
		tot = a1.Add(a2).Add(a3.Add(a4)).MulAdd(archsimd.BroadcastFloat32x8(scales[gi]), tot)
	}
	var t [8]float32
	tot.Store(&t)
	s := ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]))
	for gi := range g {
		s += biases[gi] * gsum[gi]
	}
	return s
}
