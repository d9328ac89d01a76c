//go:build cuda && linux

package cuda

import (
	"fmt"
	"unsafe"

	"github.com/fm-moe/fm/pkg/backend"
)

// This file holds the launch side of the decode kernels (few tokens a step):
// the one-token GEMV for any row width, the batched experts with their jobs
// by value and the combine fused into the down projection, and attention
// split over the positions (docs/PERF.md, "Round three").

// The decode GEMV kernels (matmul.cu, MV_*): rows per warp, warps per block.
const (
	mvRows  = 4 // MV_R
	mvRows2 = 2 // MV_R2, gate+up pairs
	mvWarps = 4 // MV_WARPS
)

// Kernels launched with dynamic shared memory beyond the default 48 KiB:
// loadModule raises their limit to maxDynamicShared.
var dynamicSharedKernels = []string{"attend", "attend_split", "attend_tiled", "mv_q4", "mv2_q4", "mv_q8", "mv2_q8", "mv_bf16", "mv2_bf16",
	"mvx_up_q4", "mvx_down_q4", "mvx_up_q8", "mvx_down_q8", "mvx_up_bf16", "mvx_down_bf16", "mvb_q4", "mvb_q8", "mvb_bf16",
	"delta_rule_chunked"}

// maxDynamicShared is the dynamic shared memory a block may ask for: the
// opt-in maximum less room for the kernels' static arrays.
func (d *Device) maxDynamicShared() int { return d.Info.MaxSharedOptin - 4096 }

// mvShared returns the dynamic shared memory of n staged rows of cols floats
// in the GEMV kernels' padded layout (MV<BITS>: chunks of 128/bits columns,
// each padded by 4 floats).
func mvShared(bits, cols, n int) int {
	cc := 128 / bits
	return n * (cols / cc) * (cc + 4) * 4
}

// gemvBits returns the GEMV kernels' BITS for m's format: 4 or 8 for affine
// rows of that width, 16 for bf16 rows, 0 when they do not take it.
func gemvBits(m *Matrix) int {
	switch {
	case m.Format == backend.Affine && (m.Bits == 4 || m.Bits == 8):
		return m.Bits
	case m.Format == backend.BF16:
		return 16
	}
	return 0
}

// gemvSuffix names the GEMV kernels of BITS bits: q4, q8, bf16.
func gemvSuffix(bits int) string {
	if bits == 16 {
		return "bf16"
	}
	return fmt.Sprintf("q%d", bits)
}

// gemvWarps returns the warps a block of the one-token kernels for rows rows
// of r a warp: 4, or fewer when 4 would leave fewer than two blocks a
// multiprocessor (a small matrix then spreads over more of the GPU; each
// block stages x, which costs only L2 reads).
func (d *Device) gemvWarps(rows, r int) int {
	w := mvWarps
	for w > 1 && (rows+w*r-1)/(w*r) < 2*d.Info.SMs {
		w /= 2
	}
	return w
}

// gemvFits reports whether the one-token kernels take m (a matrix fastKernel
// accepts) with n input rows staged: 4- or 8-bit or bf16 rows whose staged
// input fits in shared memory (hidden sizes up to ~12k columns).
func (d *Device) gemvFits(m *Matrix, n int) bool {
	bits := gemvBits(m)
	return bits != 0 && m.Cols%(128/bits) == 0 && mvShared(bits, m.Cols, n) <= d.maxDynamicShared()
}

// ExpertJobs mirrors matmul.cu's struct ExpertJobs: a decode batch's jobs,
// passed to the mvx kernels by value.
type ExpertJobs struct {
	J [mvxMaxJobs]ExpertJob
}

const mvxMaxJobs = 16 // MVX_MAXJ

var (
	_ [unsafe.Sizeof(ExpertJobs{}) - mvxMaxJobs*144]byte
	_ [mvxMaxJobs*144 - unsafe.Sizeof(ExpertJobs{})]byte
)

// expertBatchOneTok queues a batch of one-token jobs (at most mvxMaxJobs) of
// 4- or 8-bit experts as two launches: gate and up of every job into h
// (mvx_up), then every job's down projection added to out in job order
// (mvx_down: the combine fused, no y buffer). With zero, out has one row and
// is overwritten instead of added to (it was just cleared). It reports false,
// queuing nothing, when the shapes do not fit the kernels.
func (d *Device) expertBatchOneTok(kind string, jobs []ExpertJob, h, x, out uintptr, I, H, gs, sfmt int, zero bool, epi *rowEpi) bool {
	var gate, down *Matrix
	switch kind {
	case "mmx_q4", "mmx_q8":
		bits := int(kind[len("mmx_q")] - '0')
		gate = &Matrix{Rows: I, Cols: H, Format: backend.Affine, Bits: bits}
		down = &Matrix{Rows: H, Cols: I, Format: backend.Affine, Bits: bits}
	case "mmx_bf16":
		gate = &Matrix{Rows: I, Cols: H, Format: backend.BF16}
		down = &Matrix{Rows: H, Cols: I, Format: backend.BF16}
	default:
		return false
	}
	bits := gemvBits(gate)
	n := len(jobs)
	if n == 0 || n > mvxMaxJobs || debugNoGemv {
		return false
	}
	if !d.gemvFits(gate, 1) || !d.gemvFits(down, n) {
		return false
	}
	if !d.enter() {
		d.leave()
		return true
	}
	defer d.leave()
	if !d.readyEpi(epi) {
		return true
	}
	sfx := kind[len("mmx_"):]
	rpb := mvWarps * mvRows2
	d.launchJobs("mvx_up_"+sfx, [3]int{(I + rpb - 1) / rpb, 1, n}, mvWarps*32, mvShared(bits, H, 1), jobs, -1, nil,
		0, uint64(h), uint64(x), argI(I), argI(H), argI(gs), argI(sfmt))
	d.launchJobs("mvx_down_"+sfx, [3]int{(H + mvxDownWarps - 1) / mvxDownWarps, 1, 1}, mvxDownWarps*32, mvShared(bits, I, n), jobs,
		9, epi, 0, argI(n), uint64(h), uint64(out), argI(I), argI(H), argI(gs), argI(sfmt), argB(zero), 0)
	return true
}

// mvxDownWarps: mvx_down's warps a block, one output row each (launch bound
// 256).
const mvxDownWarps = 8

// rowEpi mirrors matmul.cu's struct RowEpi: the residual add, its mark and
// the next RMSNorm run by the last block of a one-token product (On ≠ 0).
type rowEpi struct {
	H, Dst, W, Mark, Cnt uintptr
	Eps                  float64
	N, MarkBase, On      int32
	_                    int32
}

var (
	_ [unsafe.Sizeof(rowEpi{}) - 64]byte
	_ [64 - unsafe.Sizeof(rowEpi{})]byte
)

// readyEpi sets epi's counter (allocated and zeroed on first use; the
// kernels leave it at zero). It reports false after a failure (kept by the
// device). Caller holds the device.
func (d *Device) readyEpi(epi *rowEpi) bool {
	if epi == nil {
		return true
	}
	if d.epiCnt.Ptr == 0 {
		b, err := d.pool.get(d, 4)
		if err != nil {
			d.fail(err)
			return false
		}
		d.fail(d.drv.call("cuMemsetD8Async", d.drv.cuMemsetD8Async, b.Ptr, 0, 4, d.stream))
		d.epiCnt = b
	}
	epi.Cnt, epi.On = d.epiCnt.Ptr, 1
	return d.err == nil
}

func argB(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// mvBatch mirrors matmul.cu's struct MVBatch: up to mvbMax one-token
// products of one input row, launched as one grid.
type mvBatch struct {
	W, Sc, Bi, Y   [mvbMax]uintptr
	Rows           [mvbMax]int32
	Start          [mvbMax + 1]int32
	N              int32
	YM, MSrc, MDst uintptr
	NM             int32
	_              int32
}

const mvbMax = 4 // MVB_MAX

var (
	_ [unsafe.Sizeof(mvBatch{}) - 200]byte
	_ [200 - unsafe.Sizeof(mvBatch{})]byte
)

// mvMirror asks MatVecBatch (one matrix) to write y also to YM (mapped host
// memory) and to copy NM mark slots from MSrc to MDst (their mapped mirror).
type mvMirror struct {
	YM, MSrc, MDst uintptr
	NM             int
}

// MatVecBatch queues y_i = m_i·x for one row x (cols floats, 16-byte
// aligned) and up to mvbMax matrices of one format that gemvFits, all in
// one launch (mvb_q4 / mvb_q8 / mvb_bf16); with one matrix, epi (not nil) is
// a row epilogue on y_0.
func (d *Device) MatVecBatch(ms []*Matrix, ys []uintptr, x uintptr, epi *rowEpi) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	d.matVecBatch(ms, ys, x, epi, nil)
}

// matVecBatch is MatVecBatch with an optional output mirror (one matrix).
// Caller holds the device.
func (d *Device) matVecBatch(ms []*Matrix, ys []uintptr, x uintptr, epi *rowEpi, mir *mvMirror) {
	m0 := ms[0]
	bits := gemvBits(m0)
	if epi != nil && (len(ms) != 1 || int(epi.N) != m0.Rows) {
		d.fail(fmt.Errorf("cuda: MatVecBatch: a row epilogue of %d on %d products of %d rows", epi.N, len(ms), m0.Rows))
		return
	}
	if !d.readyEpi(epi) {
		return
	}
	if len(ms) > mvbMax || len(ys) != len(ms) || bits == 0 {
		d.fail(fmt.Errorf("cuda: MatVecBatch of %d matrices (%d outputs), at most %d", len(ms), len(ys), mvbMax))
		return
	}
	b := &d.params.mvb
	*b = mvBatch{N: int32(len(ms))}
	rows := 0
	for _, m := range ms {
		rows += m.Rows
	}
	warps := d.gemvWarps(rows, mvRows)
	if epi != nil {
		// The epilogue's row runs in the last block, 16 values a thread in
		// registers per pass: 4 warps keep a row of 2048 in one pass. Run 3:
		// o_proj with its epilogue in 2-warp blocks (two passes) took 26 µs,
		// as long as 4-warp blocks and a separate add_rmsnorm in run 2.
		warps = mvWarps
	}
	rpb := warps * mvRows
	blocks := 0
	for i, m := range ms {
		if !sameFormat(&Matrix{Rows: m.Rows, Cols: m0.Cols, Format: m0.Format, Bits: m0.Bits, GroupSize: m0.GroupSize, ScaleFormat: m0.ScaleFormat}, m) {
			d.fail(fmt.Errorf("cuda: MatVecBatch: matrix %d (%d-bit, %d columns) differs from matrix 0 (%d-bit, %d columns)", i, m.Bits, m.Cols, m0.Bits, m0.Cols))
			return
		}
		b.W[i], b.Sc[i], b.Bi[i], b.Y[i], b.Rows[i] = m.Data, m.Scales, m.Biases, ys[i], int32(m.Rows)
		b.Start[i] = int32(blocks)
		blocks += (m.Rows + rpb - 1) / rpb
	}
	for i := len(ms); i <= mvbMax; i++ {
		b.Start[i] = int32(blocks)
	}
	if mir != nil {
		if len(ms) != 1 {
			d.fail(fmt.Errorf("cuda: MatVecBatch: an output mirror of %d products", len(ms)))
			return
		}
		b.YM, b.MSrc, b.MDst, b.NM = mir.YM, mir.MSrc, mir.MDst, int32(mir.NM)
	}
	d.params.epi = rowEpi{}
	if epi != nil {
		d.params.epi = *epi
	}
	d.launchWith("mvb_"+gemvSuffix(bits), [3]int{blocks, 1, 1}, warps*32, mvShared(bits, m0.Cols, 1),
		[2]structArg{{0, uintptr(unsafe.Pointer(b))}, {5, uintptr(unsafe.Pointer(&d.params.epi))}},
		0, uint64(x), argI(m0.Cols), argI(m0.GroupSize), argI(int(m0.ScaleFormat)), 0)
}

// rnMaxPerThread is add_rmsnorm's RN_NPT: the values a thread holds at a
// time (a row wider than RN_NPT·threads takes two passes).
const rnMaxPerThread = 16

// AddRMSNorm queues, for rows rows: h += a when a is not 0 (h written
// back), then dst = rmsnorm(h)·w, and with mark not 0 the smallest row with a
// non-finite value of h into *mark (atomicMin). Rows of n floats; h, a and
// dst of strides ldh, lda, ldd.
// A mark is markBase | row (a MarkSet's generation, see MarkSet).
func (d *Device) AddRMSNorm(dst uintptr, ldd int, h uintptr, ldh int, a uintptr, lda int, w uintptr, n, rows int, eps float64, mark uintptr, markBase int32) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	d.addRMSNorm(dst, ldd, h, ldh, a, lda, w, n, rows, eps, mark, markBase)
}

func (d *Device) addRMSNorm(dst uintptr, ldd int, h uintptr, ldh int, a uintptr, lda int, w uintptr, n, rows int, eps float64, mark uintptr, markBase int32) {
	// The rmsnorm kernel's block (the same summation order) unless a row
	// needs more threads to stay in registers (launch bound 512).
	b := normBlock(n)
	for b*rnMaxPerThread < n && b < 512 {
		b <<= 1
	}
	d.launch("add_rmsnorm", [3]int{rows, 1, 1}, b, 0, uint64(h), uint64(a), uint64(dst), uint64(w), argI(n),
		argI(ldh), argI(lda), argI(ldd), argD(eps), uint64(mark), argI(int(markBase)))
}

// Attention split over the positions (attention.cu, attend_split): at most
// attendSplitMaxT query rows, heads of at most 32·AS_KPL dimensions; a
// (head, token) counter each, attendCounters in all.
const (
	attendSplitMaxT  = 16
	attendSplitMinCh = 32   // positions a split at least
	attendSplitMaxCh = 8192 // at most (its scores in shared memory)
	attendCounters   = 4096
	asKPL            = 8 // AS_KPL
)

// attendSplit queues a's attention as attend_split when it applies (few
// query rows): enough splits of at least attendSplitMinCh positions to give
// the GPU ~8 blocks a multiprocessor, then the in-kernel combine. Caller
// holds the device.
func (d *Device) attendSplit(a *AttendArgs, gated int) bool {
	if a.T > attendSplitMaxT || a.D > 32*asKPL || a.NH*a.T > attendCounters || debugNoSplit {
		return false
	}
	if d.attnCnt.Ptr == 0 {
		b, err := d.pool.get(d, 4*attendCounters)
		if err != nil {
			d.fail(err)
			return true
		}
		d.fail(d.drv.call("cuMemsetD8Async", d.drv.cuMemsetD8Async, b.Ptr, 0, uintptr(4*attendCounters), d.stream))
		d.attnCnt = b
	}
	n := a.Pos0 + a.T // positions of the last row
	splits := splitCount(n, a.NH*a.T, d.Info.SMs)
	chunk := (n + splits - 1) / splits
	splits = (n + chunk - 1) / chunk
	part, err := d.pool.get(d, a.NH*a.T*splits*(a.D+2)*4)
	if err != nil {
		d.fail(err)
		return true
	}
	// Queued work that uses part finishes before any later use of the
	// buffer: everything runs on the one stream.
	defer d.pool.put(part)
	threads := 128
	if a.D > 128 {
		threads = 256
	}
	smem := (chunk + splits) * 4
	if smem > d.maxDynamicShared() {
		d.fail(fmt.Errorf("cuda: attention split of %d positions needs %d bytes of shared memory", chunk, smem))
		return true
	}
	d.launch("attend_split", [3]int{a.NH, a.T, splits}, threads, smem,
		uint64(a.O), uint64(a.Q), uint64(a.Gate), uint64(a.KC), uint64(a.VC), uint64(part.Ptr), uint64(d.attnCnt.Ptr),
		argI(a.NH), argI(a.NKV), argI(a.D), argI(a.Pos0), argI(a.LdQ), argI(a.LdKV), argF(a.Scale), argI(gated), argI(chunk))
	return true
}

// splitCount returns how many splits n positions get for rows (head, token)
// pairs on sms multiprocessors: about 8 blocks a multiprocessor, splits of at
// least attendSplitMinCh positions and at most attendSplitMaxCh.
func splitCount(n, rows, sms int) int {
	s := max(1, (8*sms+rows-1)/rows)
	s = min(s, (n+attendSplitMinCh-1)/attendSplitMinCh)
	return max(s, (n+attendSplitMaxCh-1)/attendSplitMaxCh, 1)
}

// mirrorBytes is the mapped buffer a one-token product's output is written
// to when the host downloads it next (the router logits: E floats).
const mirrorBytes = 64 << 10

// MatVecDownload computes y = m·x (one row, m one the GEMV kernels take)
// and downloads y into dst, with the kernel writing y also to mapped host
// memory and copying the non-finite marks of the one MarkSet marked since
// the last synchronizing call to its mapped host mirror: one launch and one
// synchronization instead of the launch, two copies and the
// synchronization (a sparse layer's router round trip at decode). It
// reports false, doing nothing, when it does not apply (a larger output,
// several mark sets pending, memory that cannot be mapped).
func (d *Device) MatVecDownload(m *Matrix, x, y uintptr, dst []float32) (bool, error) {
	if len(dst) != m.Rows || 4*len(dst) > mirrorBytes {
		return false, nil
	}
	if !d.enter() {
		defer d.leave()
		return true, d.errOrClosed()
	}
	defer d.leave()
	if len(d.marks) > 1 {
		return false, nil
	}
	if d.mirror == nil {
		b, dev, err := d.hostAllocMapped(mirrorBytes)
		if err != nil {
			return false, nil // not mappable here: the copies instead
		}
		d.mirror, d.mirrorDev = b, dev
	}
	mir := &mvMirror{YM: d.mirrorDev}
	var mset *MarkSet
	for ms := range d.marks {
		if ms.hostDev == 0 {
			return false, nil
		}
		mset = ms
		mir.MSrc, mir.MDst, mir.NM = ms.dev.Ptr, ms.hostDev, len(ms.host)
	}
	d.matVecBatch([]*Matrix{m}, []uintptr{y}, x, nil, mir)
	if mset != nil && d.err == nil {
		mset.pending = false // its mirror is written by the kernel
		delete(d.marks, mset)
	}
	d.flushMarks()
	d.fail(d.drv.call("cuStreamSynchronize", d.drv.cuStreamSynchronize, d.stream))
	if d.err != nil {
		return true, d.err
	}
	copy(dst, unsafe.Slice((*float32)(unsafe.Pointer(&d.mirror[0])), len(dst)))
	return true, nil
}
