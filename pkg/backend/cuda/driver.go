//go:build cuda && linux

package cuda

import (
	"fmt"
	"strings"
	"unsafe"

	"github.com/ebitengine/purego"
)

// driver holds the entry points of libcuda.so.1, resolved once by exact name
// (versioned ones, cuMemAlloc_v2 etc., as the CUDA headers map them). They are
// called with purego.SyscallN: no reflection on the hot path.
type driver struct {
	lib uintptr

	cuInit, cuDriverGetVersion, cuGetErrorName, cuGetErrorString             uintptr
	cuDeviceGet, cuDeviceGetCount, cuDeviceGetAttribute, cuDeviceGetName     uintptr
	cuDeviceTotalMem, cuDevicePrimaryCtxRetain, cuCtxSetCurrent              uintptr
	cuCtxSynchronize, cuMemGetInfo                                           uintptr
	cuStreamCreate, cuStreamSynchronize, cuStreamWaitEvent                   uintptr
	cuModuleLoadData, cuModuleGetFunction, cuFuncSetAttribute                uintptr
	cuMemAlloc, cuMemFree, cuMemHostAlloc, cuMemFreeHost                     uintptr
	cuMemHostGetDevicePointer                                                uintptr
	cuMemcpyHtoDAsync, cuMemcpyDtoHAsync, cuMemcpyDtoDAsync, cuMemsetD8Async uintptr
	cuLaunchKernel                                                           uintptr
	cuEventCreate, cuEventRecord, cuEventSynchronize, cuEventElapsedTime     uintptr
	cuEventDestroy                                                           uintptr
}

// CUDA driver constants used here (cuda.h).
const (
	attrMaxThreadsPerBlock      = 1
	attrMultiprocessorCount     = 16
	attrComputeCapabilityMajor  = 75
	attrComputeCapabilityMinor  = 76
	attrMaxSharedPerBlockOptin  = 97
	funcAttrMaxDynamicSharedMem = 8
	funcAttrPreferredCarveout   = 9 // CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT, percent of the maximum
	streamNonBlocking           = 1
	memHostAllocPortable        = 1
	memHostAllocDeviceMap       = 2
	eventDefault                = 0
)

// libcudaNames are tried in order: the soname the driver package installs,
// then the development symlink.
var libcudaNames = []string{"libcuda.so.1", "libcuda.so"}

func loadDriver() (*driver, error) {
	lib, err := dlopenFirst(libcudaNames, "no NVIDIA driver library")
	if err != nil {
		return nil, err
	}
	d := &driver{lib: lib}
	syms := []struct {
		p    *uintptr
		name string
	}{
		{&d.cuInit, "cuInit"}, {&d.cuDriverGetVersion, "cuDriverGetVersion"},
		{&d.cuGetErrorName, "cuGetErrorName"}, {&d.cuGetErrorString, "cuGetErrorString"},
		{&d.cuDeviceGet, "cuDeviceGet"}, {&d.cuDeviceGetCount, "cuDeviceGetCount"},
		{&d.cuDeviceGetAttribute, "cuDeviceGetAttribute"}, {&d.cuDeviceGetName, "cuDeviceGetName"},
		{&d.cuDeviceTotalMem, "cuDeviceTotalMem_v2"}, {&d.cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain"},
		{&d.cuCtxSetCurrent, "cuCtxSetCurrent"}, {&d.cuCtxSynchronize, "cuCtxSynchronize"},
		{&d.cuMemGetInfo, "cuMemGetInfo_v2"},
		{&d.cuStreamCreate, "cuStreamCreate"}, {&d.cuStreamSynchronize, "cuStreamSynchronize"},
		{&d.cuStreamWaitEvent, "cuStreamWaitEvent"},
		{&d.cuModuleLoadData, "cuModuleLoadData"}, {&d.cuModuleGetFunction, "cuModuleGetFunction"},
		{&d.cuFuncSetAttribute, "cuFuncSetAttribute"},
		{&d.cuMemAlloc, "cuMemAlloc_v2"}, {&d.cuMemFree, "cuMemFree_v2"},
		{&d.cuMemHostAlloc, "cuMemHostAlloc"}, {&d.cuMemFreeHost, "cuMemFreeHost"},
		{&d.cuMemHostGetDevicePointer, "cuMemHostGetDevicePointer_v2"},
		{&d.cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2"}, {&d.cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2"},
		{&d.cuMemcpyDtoDAsync, "cuMemcpyDtoDAsync_v2"}, {&d.cuMemsetD8Async, "cuMemsetD8Async"},
		{&d.cuLaunchKernel, "cuLaunchKernel"},
		{&d.cuEventCreate, "cuEventCreate"}, {&d.cuEventRecord, "cuEventRecord"},
		{&d.cuEventSynchronize, "cuEventSynchronize"}, {&d.cuEventElapsedTime, "cuEventElapsedTime"},
		{&d.cuEventDestroy, "cuEventDestroy_v2"},
	}
	for _, s := range syms {
		p, err := purego.Dlsym(lib, s.name)
		if err != nil {
			return nil, fmt.Errorf("libcuda: symbol %s: %w", s.name, err)
		}
		*s.p = p
	}
	return d, nil
}

// dlopenFirst opens the first library of names that loads; the error says
// what is missing and lists why each name failed.
func dlopenFirst(names []string, missing string) (uintptr, error) {
	var errs []string
	for _, n := range names {
		h, err := purego.Dlopen(n, purego.RTLD_NOW|purego.RTLD_GLOBAL)
		if err == nil {
			return h, nil
		}
		errs = append(errs, err.Error())
	}
	return 0, fmt.Errorf("%s (%s)", missing, strings.Join(errs, "; "))
}

// call invokes a driver entry point and turns a CUresult other than
// CUDA_SUCCESS into an error naming the call.
//
// Callers pass out-parameters as uintptr(unsafe.Pointer(&v)). Without the
// directive below, v could live on the goroutine's stack, which moves when it
// grows: the driver would then write through a stale address (seen on the GPU
// machine as a zero device pointer from cuMemAlloc, then
// CUDA_ERROR_INVALID_VALUE from the next copy). uintptrescapes moves such
// objects to the heap and keeps them alive for the call, as it does for
// purego.SyscallN and syscall.Syscall.
//
//go:uintptrescapes
func (d *driver) call(name string, fn uintptr, args ...uintptr) error {
	r, _, _ := purego.SyscallN(fn, args...)
	if res := int32(r); res != 0 {
		return d.errorf(name, res)
	}
	return nil
}

func (d *driver) errorf(name string, res int32) error {
	var p, s uintptr
	purego.SyscallN(d.cuGetErrorName, uintptr(res), uintptr(unsafe.Pointer(&p)))
	purego.SyscallN(d.cuGetErrorString, uintptr(res), uintptr(unsafe.Pointer(&s)))
	return fmt.Errorf("cuda: %s: %s (%d): %s", name, cString(p), res, cString(s))
}

// cString copies a NUL-terminated C string (empty for a nil pointer).
func cString(p uintptr) string {
	if p == 0 {
		return ""
	}
	// The pointer is C memory the library owns (never moved by the Go
	// collector); converting through *unsafe.Pointer keeps vet's uintptr
	// check quiet about it.
	base := (*byte)(*(*unsafe.Pointer)(unsafe.Pointer(&p)))
	for n := 0; n < 1<<16; n++ {
		if *(*byte)(unsafe.Add(unsafe.Pointer(base), n)) == 0 {
			return string(unsafe.Slice(base, n))
		}
	}
	return string(unsafe.Slice(base, 1<<16))
}
