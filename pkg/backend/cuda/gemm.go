//go:build cuda && linux

package cuda

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"
)

// The tiled GEMM of prefill (shaders/cuda/gemm.cu): products of at least
// gemmMinT tokens dequantize each weight once per block of gemmRows rows ×
// 32 or 64 tokens instead of once per 8 tokens (mm_fast), and a prefill
// chunk's routed experts run as one grouped launch per phase.

const (
	gemmRows = 128 // weight rows per block (GM_BM)
	gemmXTok = 32  // tokens per item of the grouped expert kernel (GMX_BN)
	maxGridY = 65535
)

// gemmMinT is the smallest token count that goes to the tiled kernels: on
// the H200 (tensor cores, split K) they beat mm_fast's 8-token passes from
// T = 12–16 on at every 30B shape, the 768-column down projection breaking
// even at 16 (docs/PERF.md, GPU run 3). A variable so that the measurement
// can compare both sides.
var gemmMinT = 16

// debugNoGemm (FM_CUDA_DEBUG=nogemm) keeps every product on mm_fast: the A/B
// of the tiled kernels.
var debugNoGemm = strings.Contains(os.Getenv("FM_CUDA_DEBUG"), "nogemm")

// debugNoTC (FM_CUDA_DEBUG=notc) keeps the tiled products on the float32
// SIMT kernels instead of the tensor-core ones: their A/B.
var debugNoTC = strings.Contains(os.Getenv("FM_CUDA_DEBUG"), "notc")

// tensorCores reports whether the products of format sfx run on the
// tensor-core kernels (gemmt_*, gemmxt_*): sm_80 or later, and weights that
// are exact in tf32 (every format but float32).
func (d *Device) tensorCores(sfx string) bool {
	return sfx != "f32" && d.Info.CC[0] >= 8 && !debugNoTC
}

// gemmFormats are the fast kernels' format suffixes (fastKernel's names
// without "mm_"); gemm.cu has each at both token tiles, single and paired.
var gemmFormats = []string{"f32", "bf16", "f16", "q2", "q3", "q4", "q8"}

// The tiled kernels' entry points join kernelNames here rather than in its
// literal, so that this file holds everything of the prefill GEMM.
func init() {
	for _, f := range gemmFormats {
		kernelNames = append(kernelNames, "gemm_"+f+"_32", "gemm_"+f+"_64", "gemm2_"+f+"_32", "gemm2_"+f+"_64", "gemmx_"+f)
		if f != "f32" {
			kernelNames = append(kernelNames, "gemmt_"+f+"_32", "gemmt_"+f+"_64", "gemmt2_"+f+"_32", "gemmt2_"+f+"_64", "gemmxt_"+f)
		}
	}
	kernelNames = append(kernelNames, "gemm_combine", "gemm_reduce", "gemm_fma_peak")
}

// gemm queues the tiled product for a (T ≥ gemmMinT, rows not by value);
// sfx is the format suffix and args the matmul kernels' arguments up to and
// including mode (gemm.cu's GM_PARAMS without kchunk). The caller holds the
// device. The 64-token tile halves the weight decoding per token; the
// 32-token tile is used where 64 would leave the GPU with fewer blocks than
// multiprocessors. A grid still smaller than the GPU splits K (splitK).
func (d *Device) gemm(a *MM, sfx string, args []uint64) {
	rowTiles := (a.W.Rows + gemmRows - 1) / gemmRows
	bn := 32
	if a.T >= 64 && rowTiles*((a.T+63)/64) >= d.Info.SMs {
		bn = 64
	}
	tokTiles := (a.T + bn - 1) / bn
	if tokTiles > maxGridY {
		d.fail(fmt.Errorf("cuda: MatMul: %d tokens exceed the tiled kernel's grid", a.T))
		return
	}
	name := "gemm"
	if d.tensorCores(sfx) {
		name = "gemmt"
	}
	pair := a.Mode == MMSwiGLU
	if pair {
		name += "2"
	}
	name += "_" + sfx + "_" + strconv.Itoa(bn)
	S, kchunk := splitK(rowTiles*tokTiles, a.W.Cols, d.Info.SMs)
	if S == 1 {
		d.launch(name, [3]int{rowTiles, tokTiles, 1}, 4*bn, 0, append(args, argI(kchunk))...)
		return
	}
	np := 1
	if pair {
		np = 2
	}
	part, err := d.pool.get(d, S*a.T*a.W.Rows*4*np)
	if err != nil {
		d.fail(err)
		return
	}
	// Later users of the buffer are queued after these kernels.
	defer d.pool.put(part)
	pargs := append([]uint64(nil), args...)
	pargs[0], pargs[len(pargs)-1] = uint64(part.Ptr), argI(mmPart)
	d.launch(name, [3]int{rowTiles, tokTiles, S}, 4*bn, 0, append(pargs, argI(kchunk))...)
	d.launch("gemm_reduce", [3]int{(a.W.Rows + 255) / 256, a.T, 1}, 256, 0, uint64(a.Y), uint64(part.Ptr), argI(S),
		argI(a.T), argI(a.W.Rows), argI(a.LdY), argI(a.Mode), argI(np-1), uint64(a.YRows), uint64(a.YWt))
}

// mmPart is gemm.cu's MM_PART: the raw per-split sums of a split-K launch.
const mmPart = 3

// debugWholeK (FM_CUDA_DEBUG=wholek) never splits K: its A/B. (Not
// "nosplit…": that one is the attention's, and matching is by substring.)
var debugWholeK = strings.Contains(os.Getenv("FM_CUDA_DEBUG"), "wholek")

// splitK returns how many blocks share the K loop of a product whose grid has
// blocks blocks over cols columns, and the columns each takes (a multiple of
// 32): enough splits for about two blocks a multiprocessor, each at least 8
// K-steps of 32 columns long. One split (kchunk = cols) where the grid
// already fills the GPU.
func splitK(blocks, cols, sms int) (S, kchunk int) {
	steps := cols / 32
	S = 1
	if blocks < sms && steps >= 16 && !debugWholeK {
		S = min((2*sms+blocks-1)/blocks, steps/8)
	}
	per := (steps + S - 1) / S
	kchunk = per * 32
	return (cols + kchunk - 1) / kchunk, kchunk
}

// GemmJob mirrors gemm.cu's struct GemmJob (80 bytes in Go and C): one
// expert's matrices and its span of the batch's flat row list.
type GemmJob struct {
	GW, GS, GB, UW, US, UB, DW, DS, DB uintptr
	Off, N                             int32
}

var (
	_ [unsafe.Sizeof(GemmJob{}) - 80]byte
	_ [80 - unsafe.Sizeof(GemmJob{})]byte
)

// GemmExpertsArgs describes one grouped expert batch (device addresses):
// Jobs (NJobs GemmJob), Items (NItems pairs job, first token), Rows (the
// flat row list: x and out rows of every job's tokens), Wt (their routing
// weights), Start and Idx (for each of the R output rows, its entries of the
// flat list in job order), scratch Hid [len(Rows) × I] and Y [len(Rows) × H].
type GemmExpertsArgs struct {
	Kind                           string // format suffix (gemmFormats)
	Jobs, Items, Rows, Wt          uintptr
	Start, Idx                     uintptr
	NItems, R                      int
	Hid, X, Y, Out                 uintptr
	LdX, I, H, GroupSize, ScaleFmt int
}

// GemmExperts queues a grouped expert batch: gate+up of every item, down of
// every item, then the combine into Out in job order.
func (d *Device) GemmExperts(a *GemmExpertsArgs) {
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	if a.NItems > maxGridY || a.R > maxGridY {
		d.fail(fmt.Errorf("cuda: expert batch of %d tiles over %d rows exceeds the grid", a.NItems, a.R))
		return
	}
	k := "gemmx_" + a.Kind
	if d.tensorCores(a.Kind) {
		k = "gemmxt_" + a.Kind
	}
	args := []uint64{uint64(a.Jobs), uint64(a.Items), uint64(a.Rows), uint64(a.Hid), uint64(a.X), argI(a.LdX),
		uint64(a.Y), argI(a.I), argI(a.H), argI(a.GroupSize), argI(a.ScaleFmt), argI(0)}
	threads := (gemmRows / 8) * (gemmXTok / 4)
	d.launch(k, [3]int{(a.I + gemmRows - 1) / gemmRows, a.NItems, 1}, threads, 0, args...)
	args[len(args)-1] = argI(1)
	d.launch(k, [3]int{(a.H + gemmRows - 1) / gemmRows, a.NItems, 1}, threads, 0, args...)
	d.launch("gemm_combine", [3]int{(a.H + 255) / 256, a.R, 1}, 256, 0,
		uint64(a.Out), uint64(a.Y), uint64(a.Wt), uint64(a.Start), uint64(a.Idx), argI(a.H))
}

// flushGemm runs the pending batch (some expert has more than mmTok rows)
// through the grouped tiled kernels. The caller holds the batch lock.
func (g *gpu) flushGemm() {
	b := &g.batch
	A, R := len(b.rows), b.out.rows
	jobs := make([]GemmJob, len(b.jobs))
	var items []int32
	for i := range b.jobs {
		j := &b.jobs[i]
		jobs[i] = GemmJob{GW: j.gate.Data, GS: j.gate.Scales, GB: j.gate.Biases, UW: j.up.Data, US: j.up.Scales,
			UB: j.up.Biases, DW: j.down.Data, DS: j.down.Scales, DB: j.down.Biases, Off: int32(j.off), N: int32(j.n)}
		for t0 := 0; t0 < j.n; t0 += gemmXTok {
			items = append(items, int32(i), int32(t0))
		}
	}
	// Each output row's entries, in job order (a counting sort by row that
	// keeps the order of equal rows).
	start := make([]int32, R+1)
	for _, r := range b.rows {
		start[r+1]++
	}
	for r := 0; r < R; r++ {
		start[r+1] += start[r]
	}
	idx := make([]int32, A)
	next := append([]int32(nil), start[:R]...)
	for a, r := range b.rows {
		idx[next[r]] = int32(a)
		next[r]++
	}
	// One staging copy: every array at a 16-byte aligned offset.
	var raw []byte
	put := func(p unsafe.Pointer, n int) int {
		off := len(raw)
		if n > 0 {
			raw = append(raw, unsafe.Slice((*byte)(p), n)...)
		}
		for len(raw)%16 != 0 {
			raw = append(raw, 0)
		}
		return off
	}
	oJobs := put(unsafe.Pointer(&jobs[0]), len(jobs)*int(unsafe.Sizeof(GemmJob{})))
	oItems := put(unsafe.Pointer(&items[0]), len(items)*4)
	oRows := put(unsafe.Pointer(&b.rows[0]), A*4)
	oWt := put(unsafe.Pointer(&b.wts[0]), A*4)
	oStart := put(unsafe.Pointer(&start[0]), (R+1)*4)
	oIdx := put(unsafe.Pointer(&idx[0]), A*4)
	p, err := g.d.Stage(raw)
	if err != nil {
		return // kept by the device, reported at the next sync
	}
	h, err := g.d.Alloc(A * b.I * 4)
	if err != nil {
		return
	}
	defer g.d.Free(h)
	y, err := g.d.Alloc(A * b.H * 4)
	if err != nil {
		return
	}
	defer g.d.Free(y)
	at := func(off int) uintptr { return p + uintptr(off) }
	g.d.GemmExperts(&GemmExpertsArgs{Kind: b.kind[len("mmx_"):], Jobs: at(oJobs), Items: at(oItems), Rows: at(oRows),
		Wt: at(oWt), Start: at(oStart), Idx: at(oIdx), NItems: len(items) / 2, R: R, Hid: h.Ptr, X: b.x.ptr, Y: y.Ptr,
		Out: b.out.ptr, LdX: b.x.cols, I: b.I, H: b.H, GroupSize: b.gs, ScaleFmt: b.sf})
}
