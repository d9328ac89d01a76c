//go:build cuda && linux

package cuda

import (
	"fmt"
	"os"
	"strings"

	"github.com/fm-moe/fm/pkg/backend"
)

// Matrix is a weight matrix in device memory, in its stored format (the
// fields mean what backend.MatrixDesc's mean). Data, Scales and Biases are
// device addresses; the memory belongs to whoever bound the matrix.
type Matrix struct {
	Rows, Cols      int
	Format          backend.Format
	Bits, GroupSize int
	ScaleFormat     backend.Format
	Data            uintptr
	Scales, Biases  uintptr
}

// Bytes returns the sizes of the data, scales and biases arrays.
func (m *Matrix) Bytes() (data, scales, biases int) {
	switch m.Format {
	case backend.Affine:
		n := m.Rows * (m.Cols / m.GroupSize)
		es := 4
		if m.ScaleFormat != backend.F32 {
			es = 2
		}
		return m.Rows * m.Cols * m.Bits / 8, n * es, n * es
	case backend.F32:
		return m.Rows * m.Cols * 4, 0, 0
	}
	return m.Rows * m.Cols * 2, 0, 0
}

// kernel shapes
const (
	mmWarps = 4 // rows per block of the matmul kernels (MM_WARPS)
	mmTok   = 8 // tokens per pass (MM_TOK)
)

// fastKernel picks the vectorized matmul kernel for m, or "" when only the
// generic one applies (shape, group size or alignment).
func fastKernel(m *Matrix, x uintptr, ldx int) string {
	if m.Cols%32 != 0 || x%16 != 0 || ldx%4 != 0 || m.Data%16 != 0 {
		return ""
	}
	switch m.Format {
	case backend.F32:
		return "mm_f32"
	case backend.BF16:
		return "mm_bf16"
	case backend.F16:
		return "mm_f16"
	case backend.Affine:
		if m.GroupSize%32 != 0 {
			return ""
		}
		switch m.Bits {
		case 2:
			return "mm_q2"
		case 3:
			return "mm_q3"
		case 4:
			return "mm_q4"
		case 8:
			return "mm_q8"
		}
	}
	return ""
}

// MM describes one matrix-product launch: token t (t < T) reads x row
// XRows[t] (row t when XRows is 0) of stride LdX and its result goes to y row t
// of stride LdY, or, with YRows, is added times YWt[t] to y row YRows[t].
// Mode MMStore sets y, MMAccum adds to it, MMSwiGLU sets y = silu(W·x) ⊙
// (W2·x). XRows, YRows (int32) and YWt (float32) are device addresses.
type MM struct {
	Y      uintptr
	LdY    int
	W, W2  *Matrix
	X      uintptr
	LdX, T int
	XRows  uintptr
	YRows  uintptr
	YWt    uintptr
	Mode   int
	// Rows, when non-nil (T ≤ 8, XRows and YRows 0), gives the rows and
	// weights by value: x row Rows.X[t]; with Rows.Y[t] ≥ 0 the result is
	// added times Rows.W[t] to y row Rows.Y[t].
	Rows *RowArgs
}

// Matrix-product modes (matmul.cu).
const (
	MMStore  = 0
	MMAccum  = 1
	MMSwiGLU = 2
)

// MatMul queues one matrix product.
func (d *Device) MatMul(a *MM) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	d.matMul(a)
}

func sameFormat(a, b *Matrix) bool {
	return a.Rows == b.Rows && a.Cols == b.Cols && a.Format == b.Format && a.Bits == b.Bits &&
		a.GroupSize == b.GroupSize && a.ScaleFormat == b.ScaleFormat
}

func (d *Device) matMul(a *MM) {
	m := a.W
	gs, sfmt, bits := 1, int(backend.F32), 0
	if m.Format == backend.Affine {
		gs, sfmt, bits = m.GroupSize, int(m.ScaleFormat), m.Bits
	}
	w2 := m
	if a.Mode == MMSwiGLU {
		if a.W2 == nil || !sameFormat(m, a.W2) {
			d.fail(fmt.Errorf("cuda: SwiGLU product needs a second matrix of the same format"))
			return
		}
		w2 = a.W2
	}
	grid := [3]int{(m.Rows + mmWarps - 1) / mmWarps, (a.T + mmTok - 1) / mmTok, 1}
	args := []uint64{uint64(a.Y), uint64(m.Data), uint64(m.Scales), uint64(m.Biases),
		uint64(w2.Data), uint64(w2.Scales), uint64(w2.Biases), uint64(a.X),
		uint64(a.XRows), uint64(a.YRows), uint64(a.YWt),
		argI(m.Rows), argI(m.Cols), argI(a.T), argI(a.LdX), argI(a.LdY), argI(gs), argI(sfmt), argI(a.Mode), 0}
	const rowsAt = 19 // index of the RowArgs struct argument
	if a.Rows != nil && (a.T > mmTok || a.XRows != 0 || a.YRows != 0) {
		d.fail(fmt.Errorf("cuda: MatMul: rows by value need T ≤ %d and no row arrays", mmTok))
		return
	}
	if k := fastKernel(m, a.X, a.LdX); k != "" && (a.Mode != MMSwiGLU || w2.Data%16 == 0) {
		if a.T == 1 && d.gemvFits(m, 1) && !debugNoGemv {
			k, r := "mv_"+k[len("mm_"):], mvRows
			if a.Mode == MMSwiGLU {
				k, r = "mv2_"+k[len("mv_"):], mvRows2
			}
			warps := d.gemvWarps(m.Rows, r)
			rpb := warps * r
			// One block a row group, many resident blocks overlapping one
			// another's latencies. Measured worse: blocks looping over
			// groups on a grid of 4 a multiprocessor (x staged less often),
			// and the same loop on one block a group with the first loads
			// before x is staged (docs/PERF.md).
			d.launchRows(k, [3]int{(m.Rows + rpb - 1) / rpb, 1, 1}, warps*32, mvShared(gemvBits(m), m.Cols, 1), rowsAt, a.Rows, args...)
			return
		}
		if a.T >= gemmMinT && !debugNoGemm {
			d.gemm(a, k[len("mm_"):], args[:rowsAt])
			return
		}
		if a.Mode == MMSwiGLU {
			k = "mm2_" + k[len("mm_"):]
		}
		d.launchRows(k, grid, mmWarps*32, 0, rowsAt, a.Rows, args...)
		return
	}
	if m.Format == backend.Affine && (m.Bits < 1 || m.Bits > 8) {
		d.fail(fmt.Errorf("cuda: MatMul: %d-bit affine weights are not supported", m.Bits))
		return
	}
	d.launchRows("mm_generic", grid, mmWarps*32, 0, rowsAt, a.Rows, append(args, argI(int(m.Format)), argI(bits))...)
}

// EmbedRows queues dst row t = row ids[t] of m, dequantized, for T rows (ids:
// device int32 array).
func (d *Device) EmbedRows(dst uintptr, m *Matrix, ids uintptr, T int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	gs, sfmt, bits := 1, int(backend.F32), 0
	if m.Format == backend.Affine {
		gs, sfmt, bits = m.GroupSize, int(m.ScaleFormat), m.Bits
	}
	d.launch("embed_rows", [3]int{(m.Cols + 255) / 256, T, 1}, 256, 0, uint64(dst), uint64(m.Data), uint64(m.Scales),
		uint64(m.Biases), uint64(ids), argI(m.Cols), argI(gs), argI(sfmt), argI(int(m.Format)), argI(bits))
}

// RMSNorm queues dst[r] = x[r]/sqrt(mean(x[r]²)+eps)·w for rows rows of n.
func (d *Device) RMSNorm(dst uintptr, ldd int, x uintptr, ldx int, w uintptr, n, rows int, eps float64) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	d.launch("rmsnorm", [3]int{rows, 1, 1}, normBlock(n), 0,
		uint64(dst), uint64(x), uint64(w), argI(n), argI(ldd), argI(ldx), argD(eps))
}

func normBlock(n int) int {
	b := 32
	for b < n && b < 256 {
		b <<= 1
	}
	return b
}

// QKNormRoPEArgs describes one qk_norm_rope launch (see norm.cu).
type QKNormRoPEArgs struct {
	QOut, GateOut, KOut, QP, KP uintptr
	QNorm, KNorm, InvFreq       uintptr
	NH, NKV, D, RotDim          int
	Gated                       bool
	LdQP, LdKP, LdQ, LdK        int
	Pos0, T                     int
	Eps                         float64
	// VOut, when set, receives VP's rows (stride LdVP) at stride LdK: the
	// value cache's append in the same launch.
	VOut, VP uintptr
	LdVP     int
}

// QKNormRoPE queues the per-head q/k RMSNorm and partial RoPE.
func (d *Device) QKNormRoPE(a *QKNormRoPEArgs) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	if a.D > 1024 {
		d.fail(fmt.Errorf("cuda: head dim %d exceeds the kernel's 1024", a.D))
		return
	}
	gated := 0
	if a.Gated {
		gated = 1
	}
	d.launch("qk_norm_rope", [3]int{a.NH + a.NKV, a.T, 1}, normBlock(a.D), 0,
		uint64(a.QOut), uint64(a.GateOut), uint64(a.KOut), uint64(a.QP), uint64(a.KP),
		uint64(a.QNorm), uint64(a.KNorm), uint64(a.InvFreq), argI(a.NH), argI(a.NKV), argI(a.D), argI(a.RotDim),
		argI(gated), argI(a.LdQP), argI(a.LdKP), argI(a.LdQ), argI(a.LdK), argI(a.Pos0), argD(a.Eps),
		uint64(a.VOut), uint64(a.VP), argI(a.LdVP))
}

// AttendArgs describes one attend launch (see attention.cu).
type AttendArgs struct {
	O, Q, Gate, KC, VC uintptr
	NH, NKV, D         int
	Pos0, T            int
	LdQ, LdKV          int
	Scale              float32
	Gated              bool
}

// MaxAttendPositions is the longest context the attention kernel's shared
// score row holds.
func (d *Device) MaxAttendPositions(D int) int {
	_, np := attendBlock(D)
	return (d.Info.MaxSharedOptin-4096)/4 - D - np*D - 1
}

// attendBlock returns the attend kernel's threads per block and the number
// np of thread groups of D that split the positions of Σ p·v: up to four
// groups (and as many times the warps for the scores) in at most 512 threads
// (the kernel's launch bound), else 128 threads.
func attendBlock(D int) (threads, np int) {
	if np := min(4, 512/max(D, 1)); np >= 2 && (np*D)%32 == 0 {
		return np * D, np
	}
	return 128, max(1, 128/D)
}

// Attend queues causal softmax attention of T query rows at pos0… against
// the caches (which must already hold the T new rows).
func (d *Device) Attend(a *AttendArgs) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	n := a.Pos0 + a.T
	if n > d.MaxAttendPositions(a.D) {
		d.fail(fmt.Errorf("cuda: attention over %d positions exceeds the kernel's limit of %d", n, d.MaxAttendPositions(a.D)))
		return
	}
	gated := 0
	if a.Gated {
		gated = 1
	}
	if d.attendSplit(a, gated) || d.attendTiled(a, gated) {
		return
	}
	threads, np := attendBlock(a.D)
	d.launch("attend", [3]int{a.NH, a.T, 1}, threads, (a.D+n+np*a.D)*4,
		uint64(a.O), uint64(a.Q), uint64(a.Gate), uint64(a.KC), uint64(a.VC), argI(a.NH), argI(a.NKV), argI(a.D),
		argI(a.Pos0), argI(a.LdQ), argI(a.LdKV), argF(a.Scale), argI(gated))
}

// Prefill attention in tiles of query rows (attention.cu, attend_tiled).
const (
	attendTiledMinT = 16 // query rows from which a prefill takes attend_tiled
	atKT            = 32 // AT_KT: keys a staged tile
	atRW            = 4  // AT_RW: query rows a warp
	atDPL           = 8  // AT_DPL: head dimensions ≤ 32·AT_DPL
	atMaxWarps      = 8  // the kernel's launch bound, 256 threads
)

// debugNoAttnTile (FM_CUDA_DEBUG=noattntile) keeps prefill attention on
// the one-block-a-row kernel attend: the A/B of attend_tiled.
var debugNoAttnTile = strings.Contains(os.Getenv("FM_CUDA_DEBUG"), "noattntile")

// attendTiledMaxChunk, when positive, caps attend_tiled's score rows at
// that many keys (a multiple of atKT): tests force the several-pass case
// with it.
var attendTiledMaxChunk = 0

// attendTiledShape returns, for a, the warps of an attend_tiled block (its
// query rows are atRW·warps: 32, or 16 for T ≤ 16), the keys sc of its
// score rows and its dynamic shared memory; warps = 0 where the kernel does
// not apply (fewer than attendTiledMinT rows, a head dimension not a
// multiple of 32 or above 32·atDPL, heads not a multiple of the KV heads,
// or not even one tile of keys within maxSmem bytes).
//
// sc covers every key of the last row where that fits in maxSmem (one pass:
// the scores are computed once); else the scores are recomputed in three
// passes over chunks of sc keys — the arithmetic does not depend on sc then,
// so sc is sized for two blocks a multiprocessor (half of maxSmem) where at
// least 128 keys fit in that.
func attendTiledShape(a *AttendArgs, maxSmem, maxChunk int) (warps, sc, smem int) {
	if a.T < attendTiledMinT || a.D%32 != 0 || a.D > 32*atDPL || a.NKV <= 0 || a.NH%a.NKV != 0 {
		return 0, 0, 0
	}
	warps = atMaxWarps
	if atRW*warps/2 >= a.T {
		warps /= 2
	}
	R := atRW * warps
	fixed := (R + atKT) * (a.D + 4) // floats: q rows and the key/value tile
	keys := func(bytes int) int { return (bytes/4 - fixed) / R / atKT * atKT }
	sc = (a.Pos0 + a.T + atKT - 1) / atKT * atKT
	if maxChunk > 0 {
		sc = min(sc, maxChunk/atKT*atKT)
	}
	if all := keys(maxSmem); sc > all {
		sc = all
		if half := keys(maxSmem / 2); half >= 128 {
			sc = half
		}
	}
	if sc < atKT {
		return 0, 0, 0
	}
	return warps, sc, 4 * (fixed + R*sc)
}

// attendTiled queues a's attention as attend_tiled when it applies (see
// attendTiledShape). Caller holds the device.
func (d *Device) attendTiled(a *AttendArgs, gated int) bool {
	if debugNoAttnTile {
		return false
	}
	warps, sc, smem := attendTiledShape(a, d.maxDynamicShared(), attendTiledMaxChunk)
	if warps == 0 {
		return false
	}
	R := atRW * warps
	d.launch("attend_tiled", [3]int{a.NH, (a.T + R - 1) / R, 1}, 32*warps, smem,
		uint64(a.O), uint64(a.Q), uint64(a.Gate), uint64(a.KC), uint64(a.VC), argI(a.NH), argI(a.NKV), argI(a.D),
		argI(a.T), argI(a.Pos0), argI(a.LdQ), argI(a.LdKV), argF(a.Scale), argI(gated), argI(sc))
	return true
}

// KVStore queues copying T rows of n floats of k and v (row stride ldin)
// into the caches at rows pos0… (row stride ldkv).
func (d *Device) KVStore(kc, vc, k, v uintptr, T, n, ldin, ldkv, pos0 int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	d.launch("kv_store", [3]int{(n + 255) / 256, T, 1}, 256, 0,
		uint64(kc), uint64(vc), uint64(k), uint64(v), argI(T), argI(n), argI(ldin), argI(ldkv), argI(pos0))
}

// ConvSiLU queues the GatedDeltaNet's causal depthwise conv + SiLU over T
// rows of x (in place), advancing state.
func (d *Device) ConvSiLU(x uintptr, ldx int, state, w uintptr, T, cc, kc int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	if kc < 1 || kc > 9 {
		d.fail(fmt.Errorf("cuda: conv kernel width %d outside the kernel's 1…9", kc))
		return
	}
	d.launch("conv_silu", [3]int{(cc + 127) / 128, 1, 1}, 128, 0,
		uint64(x), uint64(state), uint64(w), argI(T), argI(cc), argI(kc), argI(ldx))
}

// L2NormHeads queues the per-head L2 normalization of the nk q heads (scaled
// by qscale) and nk k heads of T rows.
func (d *Device) L2NormHeads(x uintptr, ldx, T, nk, dk, kd int, qscale float32) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	d.launch("l2norm_heads", [3]int{2 * nk, T, 1}, normBlock(dk), 0,
		uint64(x), argI(nk), argI(dk), argI(kd), argI(ldx), argF(qscale))
}

// DeltaRuleArgs describes one delta_rule launch (see deltanet.cu).
type DeltaRuleArgs struct {
	Core, S, QKV, B, A, Z uintptr
	NegA, DtBias, NormW   uintptr
	T, NK, NV, DK, DV     int
	LdQKV, LdBA, LdZ      int
	Eps                   float64
}

// deltaArgsErr says why the delta-rule kernels cannot take a, or nil: a
// value head is one block of threads (at most 1024), and value heads group
// evenly over key heads.
func deltaArgsErr(a *DeltaRuleArgs) error {
	if a.DV > 1024 {
		return fmt.Errorf("cuda: value head dim %d exceeds 1024", a.DV)
	}
	if a.NK <= 0 || a.NV%a.NK != 0 {
		return fmt.Errorf("cuda: delta rule with %d value heads over %d key heads", a.NV, a.NK)
	}
	return nil
}

// DeltaRule queues the recurrent delta rule and gated RMSNorm of every value
// head over T tokens.
func (d *Device) DeltaRule(a *DeltaRuleArgs) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	if err := deltaArgsErr(a); err != nil {
		d.fail(err)
		return
	}
	d.launch("delta_rule", [3]int{a.NV, 1, 1}, (a.DV+31)/32*32, 2*a.DK*4,
		uint64(a.Core), uint64(a.S), uint64(a.QKV), uint64(a.B), uint64(a.A), uint64(a.Z),
		uint64(a.NegA), uint64(a.DtBias), uint64(a.NormW), argI(a.T), argI(a.NK), argI(a.NV), argI(a.DK),
		argI(a.DV), argI(a.LdQKV), argI(a.LdBA), argI(a.LdZ), argD(a.Eps))
}

// deltaChunk is the chunked delta rule's chunk length (DC_CHUNK in
// deltanet.cu): the CPU's deltaChunk, so that both round alike, and the T
// from which DeltaNet takes the chunked form, as the CPU does.
const deltaChunk = 64

// deltaCols is the number of state columns a delta_rule_chunked block owns
// (DC_COLS).
const deltaCols = 32

// deltaThreads is delta_rule_chunked's block (DC_THREADS).
const deltaThreads = 256

// deltaChunkShared is delta_rule_chunked's dynamic shared memory for key
// head dim dk (the layout in deltanet.cu).
func deltaChunkShared(dk int) int {
	const C = deltaChunk
	return 3*C*8 + 3*C*4 + 4*(2*C*(dk+4)+C*deltaCols+dk*deltaCols+C*(C+4))
}

// debugNoChunk (FM_CUDA_DEBUG=nochunk) keeps prefill on the token-by-token
// delta_rule: the A/B of the chunked form.
var debugNoChunk = strings.Contains(os.Getenv("FM_CUDA_DEBUG"), "nochunk")

// ChunkedDeltaRule reports whether DeltaNet over T tokens with key head dim
// dk takes DeltaRuleChunked: from one chunk of tokens on (decode and short
// prompts keep the recurrence, whose T steps are then fewer than a chunk's
// matrix work), where its shared memory fits, unless FM_CUDA_DEBUG=nochunk.
func (d *Device) ChunkedDeltaRule(T, dk int) bool {
	return T >= deltaChunk && !debugNoChunk && d.deltaChunkFits(dk) == nil
}

// deltaChunkFits says why delta_rule_chunked cannot take key head dim dk, or
// nil: its tilings need dk a multiple of 32 and at most 256 (DC_WARPS·DC_SR),
// and its shared memory must fit.
func (d *Device) deltaChunkFits(dk int) error {
	if dk <= 0 || dk%32 != 0 || dk > 256 {
		return fmt.Errorf("cuda: the chunked delta rule needs a key head dim that is a multiple of 32 up to 256, not %d", dk)
	}
	if smem := deltaChunkShared(dk); smem > d.maxDynamicShared() {
		return fmt.Errorf("cuda: the chunked delta rule with key head dim %d needs %d bytes of shared memory, the device allows %d",
			dk, smem, d.maxDynamicShared())
	}
	return nil
}

// DeltaRuleChunked queues the chunked delta rule (delta_rule_chunked) and the
// gated RMSNorm (gated_norm_heads) of every value head over T tokens: the
// same result as DeltaRule to float32 rounding, for any T ≥ 1.
func (d *Device) DeltaRuleChunked(a *DeltaRuleArgs) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	err := deltaArgsErr(a)
	if err == nil {
		err = d.deltaChunkFits(a.DK)
	}
	if err != nil {
		d.fail(err)
		return
	}
	d.launch("delta_rule_chunked", [3]int{a.NV, (a.DV + deltaCols - 1) / deltaCols, 1}, deltaThreads, deltaChunkShared(a.DK),
		uint64(a.Core), uint64(a.S), uint64(a.QKV), uint64(a.B), uint64(a.A), uint64(a.NegA), uint64(a.DtBias),
		argI(a.T), argI(a.NK), argI(a.NV), argI(a.DK), argI(a.DV), argI(a.LdQKV), argI(a.LdBA), argI(a.LdZ))
	d.launch("gated_norm_heads", [3]int{a.NV, min(a.T, 65535), 1}, (a.DV+31)/32*32, 0,
		uint64(a.Core), uint64(a.Z), uint64(a.NormW), argI(a.T), argI(a.DV), argI(a.LdZ), argD(a.Eps))
}

func (d *Device) elemGrid(n int) [3]int {
	return [3]int{max(1, min((n+255)/256, d.Info.SMs*8)), 1, 1}
}

// SwiGLU queues g = silu(g)·u over n elements.
func (d *Device) SwiGLU(g, u uintptr, n int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	d.launch("swiglu", d.elemGrid(n), 256, 0, uint64(g), uint64(u), argL(int64(n)))
}

// Add queues y += x over n elements.
func (d *Device) Add(y, x uintptr, n int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	d.launch("add", d.elemGrid(n), 256, 0, uint64(y), uint64(x), argL(int64(n)))
}

// Combine queues out[tok[i]] += wt[i]·y[i] for n rows of H (tok int32 and wt
// float32 arrays in device memory).
func (d *Device) Combine(out, y, tok, wt uintptr, n, H int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	d.launch("combine", [3]int{(H + 255) / 256, n, 1}, 256, 0, uint64(out), uint64(y), uint64(tok), uint64(wt), argI(n), argI(H))
}

// GateAdd queues out[t] += σ(s[t])·dd[t] for T rows of H.
func (d *Device) GateAdd(out, dd, s uintptr, T, H int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	d.launch("gate_add", [3]int{(H + 255) / 256, T, 1}, 256, 0, uint64(out), uint64(dd), uint64(s), argI(H))
}

// Gather queues dst[i] = src[tok[i]] for n rows of H.
func (d *Device) Gather(dst, src, tok uintptr, n, H int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	d.launch("gather", [3]int{(H + 255) / 256, n, 1}, 256, 0, uint64(dst), uint64(src), uint64(tok), argI(H))
}

// ExpertBatch queues a batch of n expert jobs (device array jobs): phase 0
// writes h, phase 1 y, then expert_combine adds them into out in job order.
func (d *Device) ExpertBatch(kind string, jobs uintptr, n int, h, x, y, out uintptr, I, H, gs, sfmt int) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	d.launch(kind, [3]int{(I + mmWarps - 1) / mmWarps, 1, n}, mmWarps*32, 0,
		uint64(jobs), uint64(h), uint64(x), uint64(y), argI(I), argI(H), argI(gs), argI(sfmt), argI(0))
	d.launch(kind, [3]int{(H + mmWarps - 1) / mmWarps, 1, n}, mmWarps*32, 0,
		uint64(jobs), uint64(h), uint64(x), uint64(y), argI(I), argI(H), argI(gs), argI(sfmt), argI(1))
	d.launch("expert_combine", [3]int{(H + 255) / 256, 1, 1}, 256, 0, uint64(out), uint64(y), uint64(jobs), argI(n), argI(H))
}
