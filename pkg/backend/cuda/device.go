//go:build cuda && linux

package cuda

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/ebitengine/purego"

	"github.com/fm-moe/fm/shaders"
)

// Device is one CUDA GPU with its primary context, a compute stream (kernels
// and copies, in issue order), a copy stream for uploads into the VRAM
// expert cache that overlap the kernels (UploadOnCopyStream) and the
// compiled kernels.
//
// Threading: a CUDA context is current per OS thread. Every method locks the
// device's mutex, locks the calling goroutine to its OS thread and makes the
// context current there before any driver call, so the goroutine that calls
// may change between calls but no driver call ever runs on a thread without
// the context.
//
// Errors: kernel launches and asynchronous copies do not return errors one by
// one (the model issues thousands per token); the first failure is kept and
// every later call is skipped until Err or a synchronizing call (Download,
// Sync) reports it. Each error names the driver call and the kernel.
type Device struct {
	mu  sync.Mutex
	drv *driver

	dev        int32
	ctx        uintptr
	stream     uintptr
	copyStream uintptr // expert uploads into cache slots (UploadOnCopyStream); 0: on stream
	mod        uintptr
	fns        map[string]uintptr
	err        error // first asynchronous failure (sticky)
	params     *launchParams
	pin        runtime.Pinner
	pool       *memPool
	hostAllocs map[uintptr]int
	ring       *stageRing
	ctxThreads map[int]bool      // OS threads the context is current on
	flag       Buffer            // FirstNonFinite's result
	attnCnt    Buffer            // attend_split's (head, token) counters, zero between launches
	epiCnt     Buffer            // row_epilogue's counter, zero between launches
	mirror     []byte            // mapped pinned memory a one-token product's output is written to (matVecDownload)
	dlStage    []byte            // pinned staging of large downloads
	mirrorDev  uintptr           // its device address
	marks      map[*MarkSet]bool // sets marked since their last copy to the host (flushMarks)
	epoch      atomic.Int64      // see Epoch
	closed     bool

	// Info describes the device for logs and reports.
	Info Info
}

// Info is what Open learned about the device and the kernels.
type Info struct {
	Name           string
	CC             [2]int // compute capability major, minor
	SMs            int
	TotalMem       int64
	DriverVersion  int // e.g. 13000 for CUDA 13.0
	NVRTCVersion   string
	MaxSharedOptin int
	KernelSource   string        // where the CUBIN came from: "compiled" or "cache PATH"
	CompileTime    time.Duration // NVRTC time when compiled now
}

// launchParams is the kernelParams array and the values it points to. It is
// allocated once per device and pinned for the device's lifetime, so a launch
// hands the driver Go memory that cannot move, without allocating.
type launchParams struct {
	vals [maxKernelArgs]uint64
	ptrs [maxKernelArgs]uintptr
	rows RowArgs // the by-value struct argument of the matmul kernels
	jobs ExpertJobs
	mvb  mvBatch
	epi  rowEpi
}

// RowArgs mirrors matmul.cu's struct RowArgs: up to mmTok tokens' x rows,
// y rows and weights passed by value (N > 0).
type RowArgs struct {
	N int32
	X [mmTok]int32
	Y [mmTok]int32
	W [mmTok]float32
}

const maxKernelArgs = 24

// kernelNames are the entry points of shaders/cuda.
var kernelNames = []string{"mm_f32", "mm_bf16", "mm_f16", "mm_q2", "mm_q3", "mm_q4", "mm_q8", "mm_generic",
	"mm2_f32", "mm2_bf16", "mm2_f16", "mm2_q2", "mm2_q3", "mm2_q4", "mm2_q8", "embed_rows",
	"mmx_f32", "mmx_bf16", "mmx_f16", "mmx_q2", "mmx_q3", "mmx_q4", "mmx_q8", "expert_combine",
	"rmsnorm", "qk_norm_rope", "l2norm_heads", "attend", "kv_store", "conv_silu", "delta_rule", "delta_rule_chunked", "gated_norm_heads",
	"swiglu", "add", "combine", "gate_add", "gather", "first_nonfinite",
	"mv_q4", "mv2_q4", "mv_q8", "mv2_q8", "mvx_up_q4", "mvx_down_q4", "mvx_up_q8", "mvx_down_q8",
	"attend_split", "add_rmsnorm", "mvb_q4", "mvb_q8", "mv_bf16", "mv2_bf16", "mvx_up_bf16", "mvx_down_bf16", "mvb_bf16",
	"attend_tiled"}

var (
	openOnce   sync.Once
	openDevice *Device
	openErr    error
)

// Open returns the process's CUDA device (GPU 0), initializing the driver,
// compiling or loading the kernels on the first call. Later calls return the
// same device. The error says why no device is usable (no driver library, no
// GPU, a driver too old, a compile error).
func Open() (*Device, error) {
	openOnce.Do(func() { openDevice, openErr = open() })
	return openDevice, openErr
}

func open() (*Device, error) {
	drv, err := loadDriver()
	if err != nil {
		return nil, err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := drv.call("cuInit", drv.cuInit, 0); err != nil {
		return nil, err
	}
	d := &Device{drv: drv, fns: map[string]uintptr{}, hostAllocs: map[uintptr]int{}, ctxThreads: map[int]bool{}}
	var count int32
	if err := drv.call("cuDeviceGetCount", drv.cuDeviceGetCount, uintptr(unsafe.Pointer(&count))); err != nil {
		return nil, err
	}
	if count == 0 {
		return nil, errors.New("cuda: the driver found no GPU")
	}
	if err := drv.call("cuDeviceGet", drv.cuDeviceGet, uintptr(unsafe.Pointer(&d.dev)), 0); err != nil {
		return nil, err
	}
	var ver int32
	if err := drv.call("cuDriverGetVersion", drv.cuDriverGetVersion, uintptr(unsafe.Pointer(&ver))); err != nil {
		return nil, err
	}
	d.Info.DriverVersion = int(ver)
	attr := func(a int) (int, error) {
		var v int32
		err := drv.call("cuDeviceGetAttribute", drv.cuDeviceGetAttribute, uintptr(unsafe.Pointer(&v)), uintptr(a), uintptr(d.dev))
		return int(v), err
	}
	for _, a := range []struct {
		dst  *int
		attr int
	}{{&d.Info.CC[0], attrComputeCapabilityMajor}, {&d.Info.CC[1], attrComputeCapabilityMinor},
		{&d.Info.SMs, attrMultiprocessorCount}, {&d.Info.MaxSharedOptin, attrMaxSharedPerBlockOptin}} {
		if *a.dst, err = attr(a.attr); err != nil {
			return nil, err
		}
	}
	name := make([]byte, 256)
	if err := drv.call("cuDeviceGetName", drv.cuDeviceGetName, uintptr(unsafe.Pointer(&name[0])), 256, uintptr(d.dev)); err != nil {
		return nil, err
	}
	d.Info.Name = cString(uintptr(unsafe.Pointer(&name[0])))
	var total uintptr
	if err := drv.call("cuDeviceTotalMem", drv.cuDeviceTotalMem, uintptr(unsafe.Pointer(&total)), uintptr(d.dev)); err != nil {
		return nil, err
	}
	d.Info.TotalMem = int64(total)
	if err := drv.call("cuDevicePrimaryCtxRetain", drv.cuDevicePrimaryCtxRetain, uintptr(unsafe.Pointer(&d.ctx)), uintptr(d.dev)); err != nil {
		return nil, err
	}
	if err := drv.call("cuCtxSetCurrent", drv.cuCtxSetCurrent, d.ctx); err != nil {
		return nil, err
	}
	if err := drv.call("cuStreamCreate", drv.cuStreamCreate, uintptr(unsafe.Pointer(&d.stream)), streamNonBlocking); err != nil {
		return nil, err
	}
	if !debugNoCopyStream {
		if err := drv.call("cuStreamCreate (copies)", drv.cuStreamCreate, uintptr(unsafe.Pointer(&d.copyStream)), streamNonBlocking); err != nil {
			return nil, err
		}
	}
	if err := d.loadKernels(); err != nil {
		return nil, err
	}
	d.params = new(launchParams)
	d.pin.Pin(d.params)
	for i := range d.params.ptrs {
		d.params.ptrs[i] = uintptr(unsafe.Pointer(&d.params.vals[i]))
	}
	d.pool = newMemPool()
	return d, nil
}

// loadKernels loads the kernels' CUBIN from the cache or compiles it with
// NVRTC for this device's architecture, then resolves every entry point.
func (d *Device) loadKernels() error {
	src, err := shaders.CUDA()
	if err != nil {
		return fmt.Errorf("cuda: kernel source: %w", err)
	}
	arch := fmt.Sprintf("sm_%d%d", d.Info.CC[0], d.Info.CC[1])
	opts := []string{"--gpu-architecture=" + arch, "--std=c++17", "-default-device", "--fmad=true"}
	cache := newKernelCache()
	// The NVRTC version is part of the key, so NVRTC is loaded even on a
	// cache hit (cheap: no compilation).
	nv, err := loadNVRTC()
	if err != nil {
		return err
	}
	d.Info.NVRTCVersion = nv.version
	key := cacheKey(src, opts, nv.version, d.Info.DriverVersion, arch)
	if cubin := cache.load(key); cubin != nil {
		if err := d.loadModule(cubin); err == nil {
			d.Info.KernelSource = "cache " + cache.dir + "/" + key
			return nil
		}
		cache.remove(key)
	}
	start := time.Now()
	cubin, err := nv.compileCUBIN(src, "fm_kernels.cu", opts)
	if err != nil {
		return err
	}
	d.Info.CompileTime = time.Since(start)
	if err := d.loadModule(cubin); err != nil {
		return err
	}
	cache.store(key, cubin)
	d.Info.KernelSource = "compiled"
	return nil
}

func (d *Device) loadModule(cubin []byte) error {
	if err := d.drv.call("cuModuleLoadData", d.drv.cuModuleLoadData, uintptr(unsafe.Pointer(&d.mod)), uintptr(unsafe.Pointer(&cubin[0]))); err != nil {
		return err
	}
	for _, k := range kernelNames {
		var fn uintptr
		name := cstr(k)
		if err := d.drv.call("cuModuleGetFunction "+k, d.drv.cuModuleGetFunction, uintptr(unsafe.Pointer(&fn)), d.mod, uintptr(unsafe.Pointer(&name[0]))); err != nil {
			return err
		}
		d.fns[k] = fn
	}
	// Attention keeps a row of scores in shared memory, the GEMV kernels the
	// input row(s): allow the device's opt-in maximum so long contexts and
	// wide rows fit.
	for _, k := range dynamicSharedKernels {
		if err := d.drv.call("cuFuncSetAttribute "+k, d.drv.cuFuncSetAttribute, d.fns[k], funcAttrMaxDynamicSharedMem, uintptr(d.maxDynamicShared())); err != nil {
			return err
		}
	}
	// delta_rule_chunked's blocks take 112 KB at dk = 128: ask for the whole
	// carveout as shared memory so that two share a multiprocessor.
	if err := d.drv.call("cuFuncSetAttribute delta_rule_chunked", d.drv.cuFuncSetAttribute, d.fns["delta_rule_chunked"], funcAttrPreferredCarveout, 100); err != nil {
		return err
	}
	return nil
}

// enter makes the context current on this goroutine's (locked) thread and
// holds the device; leave undoes it.
//
// The context stays current on a thread once set (this process uses one
// context), so enter sets it only on threads it has not seen: a gettid
// system call is cheaper than a driver call through purego.
func (d *Device) enter() bool {
	d.mu.Lock()
	runtime.LockOSThread()
	if d.err != nil || d.closed {
		return false
	}
	tid := syscall.Gettid()
	if d.ctxThreads[tid] && !debugNoTid {
		return true
	}
	if err := d.drv.call("cuCtxSetCurrent", d.drv.cuCtxSetCurrent, d.ctx); err != nil {
		d.err = err
		return false
	}
	d.ctxThreads[tid] = true
	return true
}

func (d *Device) leave() {
	runtime.UnlockOSThread()
	d.mu.Unlock()
}

func (d *Device) fail(err error) {
	if d.err == nil && err != nil {
		d.err = err
	}
}

// Err returns the first failure of an asynchronous operation, if any.
func (d *Device) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

// Sync waits for all queued work and returns the first failure.
func (d *Device) Sync() error {
	if d.enter() {
		d.flushMarks()
		d.fail(d.drv.call("cuStreamSynchronize", d.drv.cuStreamSynchronize, d.stream))
	}
	defer d.leave()
	return d.err
}

// Buffer is device memory.
type Buffer struct {
	Ptr  uintptr
	Size int
}

// Alloc returns device memory of n bytes from the device's pool (contents
// undefined). Free gives it back.
func (d *Device) Alloc(n int) (Buffer, error) {
	if !d.enter() {
		defer d.leave()
		return Buffer{}, d.errOrClosed()
	}
	defer d.leave()
	return d.pool.get(d, n)
}

func (d *Device) errOrClosed() error {
	if d.err != nil {
		return fmt.Errorf("cuda: an earlier operation failed: %w", d.err)
	}
	return errors.New("cuda: device closed")
}

// Free returns b to the pool.
func (d *Device) Free(b Buffer) {
	if b.Ptr == 0 {
		return
	}
	d.mu.Lock()
	d.pool.put(b)
	d.mu.Unlock()
}

// memAlloc is a raw cuMemAlloc (caller holds the device).
func (d *Device) memAlloc(n int) (uintptr, error) {
	var p uintptr
	if err := d.drv.call(fmt.Sprintf("cuMemAlloc(%d bytes)", n), d.drv.cuMemAlloc, uintptr(unsafe.Pointer(&p)), uintptr(n)); err != nil {
		return 0, err
	}
	return p, nil
}

// memPool keeps freed device buffers by size class (powers of two from 256
// bytes) so that per-step scratch does not call cuMemAlloc/cuMemFree, which
// synchronize the device.
type memPool struct {
	free map[int][]uintptr
}

func newMemPool() *memPool { return &memPool{free: map[int][]uintptr{}} }

func sizeClass(n int) int {
	c := 256
	for c < n {
		c <<= 1
	}
	return c
}

func (p *memPool) get(d *Device, n int) (Buffer, error) {
	c := sizeClass(max(n, 1))
	if l := p.free[c]; len(l) > 0 {
		b := l[len(l)-1]
		p.free[c] = l[:len(l)-1]
		return Buffer{Ptr: b, Size: c}, nil
	}
	ptr, err := d.memAlloc(c)
	if err != nil {
		return Buffer{}, err
	}
	return Buffer{Ptr: ptr, Size: c}, nil
}

func (p *memPool) put(b Buffer) {
	c := sizeClass(b.Size)
	if c != b.Size {
		panic(fmt.Sprintf("cuda: freeing a buffer of %d bytes that the pool did not hand out", b.Size))
	}
	p.free[c] = append(p.free[c], b.Ptr)
}

// AllocExact returns device memory of exactly n bytes that never returns to
// the pool (weights). FreeExact releases it.
func (d *Device) AllocExact(n int) (Buffer, error) {
	if !d.enter() {
		defer d.leave()
		return Buffer{}, d.errOrClosed()
	}
	defer d.leave()
	p, err := d.memAlloc(max(n, 1))
	return Buffer{Ptr: p, Size: n}, err
}

// FreeExact releases memory from AllocExact (synchronizes the device).
func (d *Device) FreeExact(b Buffer) error {
	if b.Ptr == 0 {
		return nil
	}
	if !d.enter() {
		defer d.leave()
		return d.errOrClosed()
	}
	defer d.leave()
	return d.drv.call("cuMemFree", d.drv.cuMemFree, b.Ptr)
}

// MemInfo returns the device's free and total memory.
func (d *Device) MemInfo() (free, total int64, err error) {
	if !d.enter() {
		defer d.leave()
		return 0, 0, d.errOrClosed()
	}
	defer d.leave()
	var f, t uintptr
	err = d.drv.call("cuMemGetInfo", d.drv.cuMemGetInfo, uintptr(unsafe.Pointer(&f)), uintptr(unsafe.Pointer(&t)))
	return int64(f), int64(t), err
}

// Upload queues a copy of src to dst+off on the compute stream and waits for
// it: src is Go memory, which the driver may read only while it is pinned
// (runtime.Pinner) and while the call runs.
func (d *Device) Upload(dst Buffer, off int, src []byte) error {
	if len(src) == 0 {
		return nil
	}
	if off < 0 || off+len(src) > dst.Size {
		return fmt.Errorf("cuda: upload of %d bytes at offset %d into a %d-byte buffer", len(src), off, dst.Size)
	}
	if !d.enter() {
		defer d.leave()
		return d.errOrClosed()
	}
	defer d.leave()
	return d.hostCopySync("cuMemcpyHtoDAsync", d.drv.cuMemcpyHtoDAsync, dst.Ptr+uintptr(off), src, true,
		func() string {
			return fmt.Sprintf("%d bytes from host %p to device %#x+%d of a %d-byte buffer", len(src), &src[0], dst.Ptr, off, dst.Size)
		})
}

// Download waits for the queued work, then copies src+off into dst.
func (d *Device) Download(dst []byte, src Buffer, off int) error {
	if len(dst) == 0 {
		return d.Sync()
	}
	if off < 0 || off+len(dst) > src.Size {
		return fmt.Errorf("cuda: download of %d bytes at offset %d from a %d-byte buffer", len(dst), off, src.Size)
	}
	if !d.enter() {
		defer d.leave()
		return d.errOrClosed()
	}
	defer d.leave()
	if len(dst) >= stagedDownloadMin && len(dst) <= stagedDownloadMax {
		if st := d.downloadStage(len(dst)); st != nil {
			// Through pinned memory: the copy runs at the bus's speed
			// instead of the driver's pageable staging (6–8 GB/s); the
			// step's logits (600 kB for a 152k vocabulary) every token.
			if err := d.drv.call("cuMemcpyDtoHAsync (staged)", d.drv.cuMemcpyDtoHAsync, uintptr(unsafe.Pointer(&st[0])), src.Ptr+uintptr(off), uintptr(len(dst)), d.stream); err != nil {
				d.fail(err)
				return err
			}
			d.flushMarks()
			err := d.drv.call("cuStreamSynchronize", d.drv.cuStreamSynchronize, d.stream)
			d.fail(err)
			if err == nil {
				copy(dst, st[:len(dst)])
			}
			return err
		}
	}
	return d.hostCopySync("cuMemcpyDtoHAsync", d.drv.cuMemcpyDtoHAsync, src.Ptr+uintptr(off), dst, false, nil)
}

// Downloads of this many bytes go through a pinned staging buffer.
const (
	stagedDownloadMin = 16 << 10
	stagedDownloadMax = 8 << 20
)

// downloadStage returns pinned memory of at least n bytes for Download (nil
// when it cannot be had: the pageable copy then). Caller holds the device.
func (d *Device) downloadStage(n int) []byte {
	if len(d.dlStage) >= n {
		return d.dlStage
	}
	size := max(n, 1<<20)
	var p unsafe.Pointer
	if err := d.drv.call("cuMemHostAlloc (download stage)", d.drv.cuMemHostAlloc, uintptr(unsafe.Pointer(&p)), uintptr(size), memHostAllocPortable); err != nil {
		return nil
	}
	if d.dlStage != nil {
		d.drv.call("cuMemFreeHost", d.drv.cuMemFreeHost, uintptr(unsafe.Pointer(&d.dlStage[0])))
	}
	d.dlStage = unsafe.Slice((*byte)(p), size)
	return d.dlStage
}

// hostCopySync queues one copy between Go memory host and device memory dev
// (host → dev when toDevice, else dev → host) on the compute stream and waits
// for it, with the marks' flush that every synchronizing call does. host is
// pageable Go memory: its address is taken only once it is pinned, and it stays
// pinned until the copy has finished. detail, when set, describes the copy in
// an error. The caller holds the device.
func (d *Device) hostCopySync(name string, fn, dev uintptr, host []byte, toDevice bool, detail func() string) error {
	var pin runtime.Pinner
	pin.Pin(&host[0])
	defer pin.Unpin()
	dst, src := uintptr(unsafe.Pointer(&host[0])), dev
	if toDevice {
		dst, src = src, dst
	}
	if err := d.drv.call(name, fn, dst, src, uintptr(len(host)), d.stream); err != nil {
		if detail != nil {
			err = fmt.Errorf("%w (%s)", err, detail())
		}
		d.fail(err)
		return err
	}
	d.flushMarks()
	err := d.drv.call("cuStreamSynchronize", d.drv.cuStreamSynchronize, d.stream)
	d.fail(err)
	return err
}

// Copy queues a device-to-device copy on the compute stream.
func (d *Device) Copy(dst Buffer, dstOff int, src Buffer, srcOff, n int) {
	if n == 0 {
		return
	}
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	if dstOff < 0 || srcOff < 0 || dstOff+n > dst.Size || srcOff+n > src.Size {
		d.fail(fmt.Errorf("cuda: device copy of %d bytes from offset %d of %d to offset %d of %d out of range", n, srcOff, src.Size, dstOff, dst.Size))
		return
	}
	d.fail(d.drv.call("cuMemcpyDtoDAsync", d.drv.cuMemcpyDtoDAsync, dst.Ptr+uintptr(dstOff), src.Ptr+uintptr(srcOff), uintptr(n), d.stream))
}

// Zero queues setting n bytes at b+off to zero.
func (d *Device) Zero(b Buffer, off, n int) {
	if n == 0 {
		return
	}
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	if off < 0 || off+n > b.Size {
		d.fail(fmt.Errorf("cuda: zeroing %d bytes at offset %d of a %d-byte buffer", n, off, b.Size))
		return
	}
	d.fail(d.drv.call("cuMemsetD8Async", d.drv.cuMemsetD8Async, b.Ptr+uintptr(off), 0, uintptr(n), d.stream))
}

// FirstNonFinite returns the first row (of cols floats) among the n floats at
// x that holds a NaN or an infinity, or −1; it waits for the queued work. The
// scan runs on the device, so only 4 bytes cross the bus.
func (d *Device) FirstNonFinite(x uintptr, n, cols int) (int, error) {
	if !d.enter() {
		defer d.leave()
		return -1, d.errOrClosed()
	}
	defer d.leave()
	if d.flag.Ptr == 0 {
		b, err := d.pool.get(d, 4)
		if err != nil {
			return -1, err
		}
		d.flag = b
	}
	// 0x7f in every byte: 2139062143, above any row index.
	d.fail(d.drv.call("cuMemsetD8Async", d.drv.cuMemsetD8Async, d.flag.Ptr, 0x7f, 4, d.stream))
	d.launch("first_nonfinite", [3]int{max(1, min((n+255)/256, d.Info.SMs*8)), 1, 1}, 256, 0, uint64(x), argL(int64(n)), argI(cols), uint64(d.flag.Ptr), 0)
	var row int32
	if err := d.drv.call("cuMemcpyDtoHAsync", d.drv.cuMemcpyDtoHAsync, uintptr(unsafe.Pointer(&row)), d.flag.Ptr, 4, d.stream); err != nil {
		d.fail(err)
	}
	d.flushMarks()
	d.fail(d.drv.call("cuStreamSynchronize", d.drv.cuStreamSynchronize, d.stream))
	if d.err != nil {
		return -1, d.err
	}
	if row == 0x7f7f7f7f {
		return -1, nil
	}
	return int(row), nil
}

// HostAlloc returns n bytes of page-locked host memory (page-aligned, so
// usable with O_DIRECT; copies from it run at full PCIe speed and
// asynchronously). FreeHost releases it.
func (d *Device) HostAlloc(n int) ([]byte, error) {
	if n <= 0 {
		return nil, fmt.Errorf("cuda: pinned host buffer of %d bytes", n)
	}
	if !d.enter() {
		defer d.leave()
		return nil, d.errOrClosed()
	}
	defer d.leave()
	var p unsafe.Pointer
	if err := d.drv.call(fmt.Sprintf("cuMemHostAlloc(%d bytes)", n), d.drv.cuMemHostAlloc, uintptr(unsafe.Pointer(&p)), uintptr(n), memHostAllocPortable); err != nil {
		return nil, err
	}
	d.hostAllocs[uintptr(p)] = n
	return unsafe.Slice((*byte)(p), n), nil
}

// hostAllocMapped is HostAlloc with the memory also mapped into the
// device's address space (kernels write it directly, at the returned device
// address: the step's small results reach the host without a copy call).
// FreeHost releases it. Caller holds the device.
func (d *Device) hostAllocMapped(n int) ([]byte, uintptr, error) {
	var p unsafe.Pointer
	if err := d.drv.call(fmt.Sprintf("cuMemHostAlloc(%d bytes, mapped)", n), d.drv.cuMemHostAlloc, uintptr(unsafe.Pointer(&p)), uintptr(n), memHostAllocPortable|memHostAllocDeviceMap); err != nil {
		return nil, 0, err
	}
	var dp uintptr
	if err := d.drv.call("cuMemHostGetDevicePointer", d.drv.cuMemHostGetDevicePointer, uintptr(unsafe.Pointer(&dp)), uintptr(p), 0); err != nil {
		d.drv.call("cuMemFreeHost", d.drv.cuMemFreeHost, uintptr(p))
		return nil, 0, err
	}
	d.hostAllocs[uintptr(p)] = n
	return unsafe.Slice((*byte)(p), n), dp, nil
}

// FreeHost releases memory from HostAlloc.
func (d *Device) FreeHost(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if !d.enter() {
		defer d.leave()
		return d.errOrClosed()
	}
	defer d.leave()
	p := unsafe.Pointer(unsafe.SliceData(b))
	if _, ok := d.hostAllocs[uintptr(p)]; !ok {
		return errors.New("cuda: FreeHost of memory not from HostAlloc")
	}
	delete(d.hostAllocs, uintptr(p))
	return d.drv.call("cuMemFreeHost", d.drv.cuMemFreeHost, uintptr(p))
}

// Debugging switches (environment, read once): FM_CUDA_DEBUG=notid sets the
// context on every call, nobatch runs experts one by one, nogemv uses the
// general matmul kernels for one token too (the A/B of the GEMV kernels),
// nosplit the one-block-a-head attention at decode too, nofuse launches
// every Add, Clear, RMSNorm, Mark and one-token product on its own (the A/B
// of the deferred fusions, see expertBatch).
var (
	debugNoTid   = strings.Contains(os.Getenv("FM_CUDA_DEBUG"), "notid")
	debugNoBatch = strings.Contains(os.Getenv("FM_CUDA_DEBUG"), "nobatch")
	debugNoGemv  = strings.Contains(os.Getenv("FM_CUDA_DEBUG"), "nogemv")
	debugNoSplit = strings.Contains(os.Getenv("FM_CUDA_DEBUG"), "nosplit")
	debugNoFuse  = strings.Contains(os.Getenv("FM_CUDA_DEBUG"), "nofuse")
	// nocopystream queues expert uploads on the compute stream (the A/B of
	// UploadOnCopyStream).
	debugNoCopyStream = strings.Contains(os.Getenv("FM_CUDA_DEBUG"), "nocopystream")
)

// kernel arguments, each in one 8-byte slot of the parameter block (the
// driver reads as many bytes as the kernel's parameter has).
func argI(v int) uint64     { return uint64(uint32(int32(v))) }
func argF(v float32) uint64 { return uint64(math.Float32bits(v)) }
func argD(v float64) uint64 { return math.Float64bits(v) }
func argL(v int64) uint64   { return uint64(v) }

// launch queues kernel name on the compute stream (caller holds the device).
func (d *Device) launch(name string, grid [3]int, block, smem int, args ...uint64) {
	d.launchRows(name, grid, block, smem, -1, nil, args...)
}

// launchRows is launch with argument rowsAt (when ≥ 0) passed as the struct
// ra by value; args[rowsAt] is a placeholder.
func (d *Device) launchRows(name string, grid [3]int, block, smem int, rowsAt int, ra *RowArgs, args ...uint64) {
	var p uintptr
	if rowsAt >= 0 {
		if ra != nil {
			d.params.rows = *ra
		} else {
			d.params.rows = RowArgs{}
		}
		p = uintptr(unsafe.Pointer(&d.params.rows))
	}
	d.launchWith(name, grid, block, smem, [2]structArg{{rowsAt, p}, {-1, 0}}, args...)
}

// launchJobs is launch with the first kernel argument the struct jobs (the
// mvx kernels' ExpertJobs) by value, and with epiAt ≥ 0 argument epiAt the
// struct epi (a RowEpi; nil: none); their args are placeholders.
func (d *Device) launchJobs(name string, grid [3]int, block, smem int, jobs []ExpertJob, epiAt int, epi *rowEpi, args ...uint64) {
	if len(jobs) > len(d.params.jobs.J) {
		d.fail(fmt.Errorf("cuda: kernel %s: %d expert jobs by value, at most %d", name, len(jobs), len(d.params.jobs.J)))
		return
	}
	n := copy(d.params.jobs.J[:], jobs)
	clear(d.params.jobs.J[n:])
	sa := [2]structArg{{0, uintptr(unsafe.Pointer(&d.params.jobs))}, {-1, 0}}
	if epiAt >= 0 {
		d.params.epi = rowEpi{}
		if epi != nil {
			d.params.epi = *epi
		}
		sa[1] = structArg{epiAt, uintptr(unsafe.Pointer(&d.params.epi))}
	}
	d.launchWith(name, grid, block, smem, sa, args...)
}

// structArg is a kernel argument passed as a struct by value: argument at
// (none when < 0) is read from p, a struct inside d.params (pinned), instead
// of its 8-byte slot.
type structArg struct {
	at int
	p  uintptr
}

// launchWith queues the kernel with the struct arguments sa.
func (d *Device) launchWith(name string, grid [3]int, block, smem int, sa [2]structArg, args ...uint64) {
	if d.err != nil {
		return
	}
	fn, ok := d.fns[name]
	if !ok {
		d.fail(fmt.Errorf("cuda: no kernel %q", name))
		return
	}
	if len(args) > maxKernelArgs {
		d.fail(fmt.Errorf("cuda: kernel %s: %d arguments, at most %d", name, len(args), maxKernelArgs))
		return
	}
	for i := range grid {
		if grid[i] <= 0 {
			return // nothing to do
		}
	}
	copy(d.params.vals[:], args)
	for _, a := range sa {
		if a.at >= 0 {
			d.params.ptrs[a.at] = a.p
			defer func() { d.params.ptrs[a.at] = uintptr(unsafe.Pointer(&d.params.vals[a.at])) }()
		}
	}
	r, _, _ := purego.SyscallN(d.drv.cuLaunchKernel, fn,
		uintptr(grid[0]), uintptr(grid[1]), uintptr(grid[2]), uintptr(block), 1, 1, uintptr(smem), d.stream,
		uintptr(unsafe.Pointer(&d.params.ptrs[0])), 0)
	if res := int32(r); res != 0 {
		d.fail(d.drv.errorf("cuLaunchKernel "+name, res))
	}
}

// Timer measures device time between two points of the compute stream.
type Timer struct{ start, stop uintptr }

// StartTimer records an event on the compute stream.
func (d *Device) StartTimer() (*Timer, error) {
	if !d.enter() {
		defer d.leave()
		return nil, d.errOrClosed()
	}
	defer d.leave()
	t := &Timer{}
	for _, e := range []*uintptr{&t.start, &t.stop} {
		if err := d.drv.call("cuEventCreate", d.drv.cuEventCreate, uintptr(unsafe.Pointer(e)), eventDefault); err != nil {
			return nil, err
		}
	}
	return t, d.drv.call("cuEventRecord", d.drv.cuEventRecord, t.start, d.stream)
}

// StopTimer records the end event, waits for it and returns the elapsed time.
func (d *Device) StopTimer(t *Timer) (time.Duration, error) {
	if !d.enter() {
		defer d.leave()
		return 0, d.errOrClosed()
	}
	defer d.leave()
	if err := d.drv.call("cuEventRecord", d.drv.cuEventRecord, t.stop, d.stream); err != nil {
		return 0, err
	}
	if err := d.drv.call("cuEventSynchronize", d.drv.cuEventSynchronize, t.stop); err != nil {
		return 0, err
	}
	var ms float32
	if err := d.drv.call("cuEventElapsedTime", d.drv.cuEventElapsedTime, uintptr(unsafe.Pointer(&ms)), t.start, t.stop); err != nil {
		return 0, err
	}
	d.drv.call("cuEventDestroy", d.drv.cuEventDestroy, t.start)
	d.drv.call("cuEventDestroy", d.drv.cuEventDestroy, t.stop)
	return time.Duration(float64(ms) * 1e6), nil
}

// Event is a point in the compute stream.
type Event uintptr

// Record returns an event that completes once the work queued so far has.
func (d *Device) Record() (Event, error) {
	if !d.enter() {
		defer d.leave()
		return 0, d.errOrClosed()
	}
	defer d.leave()
	return d.record()
}

func (d *Device) record() (Event, error) { return d.recordOn(d.stream) }

// recordOn records a new event on stream s (caller holds the device).
func (d *Device) recordOn(s uintptr) (Event, error) {
	var ev uintptr
	if err := d.drv.call("cuEventCreate", d.drv.cuEventCreate, uintptr(unsafe.Pointer(&ev)), 2 /* CU_EVENT_DISABLE_TIMING */); err != nil {
		return 0, err
	}
	if err := d.drv.call("cuEventRecord", d.drv.cuEventRecord, ev, s); err != nil {
		d.drv.call("cuEventDestroy", d.drv.cuEventDestroy, ev)
		return 0, err
	}
	return Event(ev), nil
}

// WaitEvent blocks until ev completes, then destroys it. It does not take the
// device lock while it waits, so other goroutines keep issuing work.
func (d *Device) WaitEvent(ev Event) error {
	if ev == 0 {
		return nil
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := d.drv.call("cuCtxSetCurrent", d.drv.cuCtxSetCurrent, d.ctx); err != nil {
		return err
	}
	err := d.drv.call("cuEventSynchronize", d.drv.cuEventSynchronize, uintptr(ev))
	d.drv.call("cuEventDestroy", d.drv.cuEventDestroy, uintptr(ev))
	return err
}

// stageRing passes small per-step arrays (token ids, routed rows and weights)
// to kernels: bytes are copied into pinned host memory and from there, on the
// compute stream, into the same offset of a device buffer. A slot is reused
// only after the ring wraps, and a wrap first waits for the stream, so no
// queued copy or kernel still needs the old bytes.
type stageRing struct {
	host []byte
	dev  Buffer
	off  int
}

const stageRingSize = 1 << 20

// Stage copies b to device memory for the kernels queued next and returns its
// device address (16-byte aligned).
func (d *Device) Stage(b []byte) (uintptr, error) {
	if !d.enter() {
		defer d.leave()
		return 0, d.errOrClosed()
	}
	defer d.leave()
	return d.stage(b)
}

func (d *Device) stage(b []byte) (uintptr, error) {
	r := d.ring
	if r == nil {
		var p unsafe.Pointer
		if err := d.drv.call("cuMemHostAlloc(stage ring)", d.drv.cuMemHostAlloc, uintptr(unsafe.Pointer(&p)), stageRingSize, memHostAllocPortable); err != nil {
			return 0, err
		}
		dp, err := d.memAlloc(stageRingSize)
		if err != nil {
			return 0, err
		}
		r = &stageRing{host: unsafe.Slice((*byte)(p), stageRingSize), dev: Buffer{Ptr: dp, Size: stageRingSize}}
		d.ring = r
	}
	n := (len(b) + 15) &^ 15
	if n > stageRingSize {
		return 0, fmt.Errorf("cuda: %d bytes of step arguments exceed the %d-byte staging ring", len(b), stageRingSize)
	}
	if r.off+n > stageRingSize {
		d.flushMarks()
		if err := d.drv.call("cuStreamSynchronize", d.drv.cuStreamSynchronize, d.stream); err != nil {
			d.fail(err)
			return 0, err
		}
		r.off = 0
	}
	copy(r.host[r.off:], b)
	dst := r.dev.Ptr + uintptr(r.off)
	if err := d.drv.call("cuMemcpyHtoDAsync (stage)", d.drv.cuMemcpyHtoDAsync, dst, uintptr(unsafe.Pointer(&r.host[r.off])), uintptr(len(b)), d.stream); err != nil {
		d.fail(err)
		return 0, err
	}
	r.off += n
	return dst, nil
}

// UploadAsync queues a copy of src to dst+off on the compute stream without
// waiting. From pinned memory (HostAlloc) the copy runs asynchronously, and
// src must stay unchanged until an event recorded after it completes; from
// pageable memory the driver stages src before returning.
func (d *Device) UploadAsync(dst Buffer, off int, src []byte) {
	if len(src) == 0 {
		return
	}
	if !d.enter() {
		d.leave()
		return
	}
	defer d.leave()
	if off < 0 || off+len(src) > dst.Size {
		d.fail(fmt.Errorf("cuda: upload of %d bytes at offset %d into a %d-byte buffer", len(src), off, dst.Size))
		return
	}
	if err := d.drv.call("cuMemcpyHtoDAsync (async)", d.drv.cuMemcpyHtoDAsync, dst.Ptr+uintptr(off), uintptr(unsafe.Pointer(unsafe.SliceData(src))), uintptr(len(src)), d.stream); err != nil {
		d.fail(fmt.Errorf("%w (%d bytes from host %p to device %#x+%d of a %d-byte buffer)", err, len(src), unsafe.SliceData(src), dst.Ptr, off, dst.Size))
	}
}

// HostPiece is a range of pinned host memory copied to offset Off of a
// device buffer.
type HostPiece struct {
	Off int
	Src []byte
}

// UploadOnCopyStream queues copies of pieces (pinned host memory) into dst on
// the device's copy stream, so that they run while the compute stream
// executes the kernels queued before them (an expert's upload beside the
// previous expert's product), and makes the compute stream wait for them:
// every kernel queued after this call sees the new contents. With
// afterCompute, the copies first wait for everything queued on the compute
// stream so far — needed when kernels queued earlier may still read dst's
// old contents (a reused cache slot). The returned event completes with the
// copies; the caller keeps the host bytes unchanged until then and destroys
// it with WaitEvent. Without a copy stream (FM_CUDA_DEBUG=nocopystream) the
// copies go on the compute stream as UploadAsync's do.
func (d *Device) UploadOnCopyStream(dst Buffer, pieces []HostPiece, afterCompute bool) (Event, error) {
	if !d.enter() {
		defer d.leave()
		return 0, d.errOrClosed()
	}
	defer d.leave()
	for _, p := range pieces {
		if p.Off < 0 || p.Off+len(p.Src) > dst.Size {
			return 0, fmt.Errorf("cuda: upload of %d bytes at offset %d into a %d-byte buffer", len(p.Src), p.Off, dst.Size)
		}
	}
	s := d.copyStream
	if s == 0 {
		s = d.stream
	} else if afterCompute {
		ev, err := d.recordOn(d.stream)
		if err != nil {
			return 0, err
		}
		err = d.drv.call("cuStreamWaitEvent (copies after kernels)", d.drv.cuStreamWaitEvent, s, uintptr(ev), 0)
		d.drv.call("cuEventDestroy", d.drv.cuEventDestroy, uintptr(ev)) // released once it completes
		if err != nil {
			return 0, err
		}
	}
	for _, p := range pieces {
		if len(p.Src) == 0 {
			continue
		}
		if err := d.drv.call("cuMemcpyHtoDAsync (copy stream)", d.drv.cuMemcpyHtoDAsync, dst.Ptr+uintptr(p.Off), uintptr(unsafe.Pointer(unsafe.SliceData(p.Src))), uintptr(len(p.Src)), s); err != nil {
			return 0, fmt.Errorf("%w (%d bytes from host %p to device %#x+%d of a %d-byte buffer)", err, len(p.Src), unsafe.SliceData(p.Src), dst.Ptr, p.Off, dst.Size)
		}
	}
	done, err := d.recordOn(s)
	if err != nil {
		return 0, err
	}
	if s != d.stream {
		if err := d.drv.call("cuStreamWaitEvent (kernels after copies)", d.drv.cuStreamWaitEvent, d.stream, uintptr(done), 0); err != nil {
			d.drv.call("cuEventDestroy", d.drv.cuEventDestroy, uintptr(done))
			return 0, err
		}
	}
	return done, nil
}

// Epoch counts the backend's full synchronizations after which nothing it
// had deferred was still unqueued (gpu.Download, Sync, NonFinite): every
// kernel queued before epoch e began had completed once the count passed e.
// A cache slot released at epoch e is therefore free of readers from epoch
// e+2 on (one more, for a release concurrent with a synchronization), and its
// reuse need not wait for the compute stream.
func (d *Device) Epoch() int64 { return d.epoch.Load() }

func (d *Device) nextEpoch() { d.epoch.Add(1) }
