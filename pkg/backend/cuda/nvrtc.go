//go:build cuda && linux

package cuda

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"unsafe"

	"github.com/ebitengine/purego"
)

// libnvrtcNames are tried in order: the CUDA 13 and 12 sonames, then the
// development symlink.
var libnvrtcNames = []string{"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"}

type nvrtc struct {
	version                                               string
	create, compile, logSize, getLog, cubinSize, getCubin uintptr
	destroy, errString                                    uintptr
}

func loadNVRTC() (*nvrtc, error) {
	lib, err := dlopenFirst(libnvrtcNames, "no NVRTC library to compile the kernels")
	if err != nil {
		return nil, err
	}
	n := &nvrtc{}
	var version uintptr
	for _, s := range []struct {
		p    *uintptr
		name string
	}{
		{&version, "nvrtcVersion"}, {&n.create, "nvrtcCreateProgram"}, {&n.compile, "nvrtcCompileProgram"},
		{&n.logSize, "nvrtcGetProgramLogSize"}, {&n.getLog, "nvrtcGetProgramLog"},
		{&n.cubinSize, "nvrtcGetCUBINSize"}, {&n.getCubin, "nvrtcGetCUBIN"},
		{&n.destroy, "nvrtcDestroyProgram"}, {&n.errString, "nvrtcGetErrorString"},
	} {
		p, err := purego.Dlsym(lib, s.name)
		if err != nil {
			return nil, fmt.Errorf("libnvrtc: symbol %s: %w", s.name, err)
		}
		*s.p = p
	}
	var major, minor int32
	if r, _, _ := purego.SyscallN(version, uintptr(unsafe.Pointer(&major)), uintptr(unsafe.Pointer(&minor))); r != 0 {
		return nil, fmt.Errorf("nvrtc: nvrtcVersion: error %d", int32(r))
	}
	n.version = fmt.Sprintf("%d.%d", major, minor)
	return n, nil
}

func (n *nvrtc) check(name string, r uintptr) error {
	if res := int32(r); res != 0 {
		s, _, _ := purego.SyscallN(n.errString, uintptr(res))
		return fmt.Errorf("nvrtc: %s: %s (%d)", name, cString(s), res)
	}
	return nil
}

// cstr returns s as a NUL-terminated byte slice.
func cstr(s string) []byte { return append([]byte(s), 0) }

// compileCUBIN compiles src for sm_<arch> and returns the CUBIN; a compile
// error carries NVRTC's log.
func (n *nvrtc) compileCUBIN(src, name string, opts []string) ([]byte, error) {
	csrc, cname := cstr(src), cstr(name)
	var prog uintptr
	r, _, _ := purego.SyscallN(n.create, uintptr(unsafe.Pointer(&prog)), uintptr(unsafe.Pointer(&csrc[0])),
		uintptr(unsafe.Pointer(&cname[0])), 0, 0, 0)
	if err := n.check("nvrtcCreateProgram", r); err != nil {
		return nil, err
	}
	defer purego.SyscallN(n.destroy, uintptr(unsafe.Pointer(&prog)))

	// The option array holds pointers to Go memory: pin each string while
	// NVRTC reads them.
	var pin runtime.Pinner
	defer pin.Unpin()
	copts := make([][]byte, len(opts))
	ptrs := make([]uintptr, len(opts))
	for i, o := range opts {
		copts[i] = cstr(o)
		pin.Pin(&copts[i][0])
		ptrs[i] = uintptr(unsafe.Pointer(&copts[i][0]))
	}
	pin.Pin(&ptrs[0])
	r, _, _ = purego.SyscallN(n.compile, prog, uintptr(len(opts)), uintptr(unsafe.Pointer(&ptrs[0])))
	compileErr := n.check("nvrtcCompileProgram", r)
	var logSize uintptr
	purego.SyscallN(n.logSize, prog, uintptr(unsafe.Pointer(&logSize)))
	var log string
	if logSize > 1 {
		buf := make([]byte, logSize)
		purego.SyscallN(n.getLog, prog, uintptr(unsafe.Pointer(&buf[0])))
		log = strings.TrimRight(string(buf), "\x00\n ")
	}
	if compileErr != nil {
		return nil, fmt.Errorf("%w:\n%s", compileErr, log)
	}
	var size uintptr
	if err := n.check("nvrtcGetCUBINSize", func() uintptr {
		r, _, _ := purego.SyscallN(n.cubinSize, prog, uintptr(unsafe.Pointer(&size)))
		return r
	}()); err != nil {
		return nil, err
	}
	cubin := make([]byte, size)
	r, _, _ = purego.SyscallN(n.getCubin, prog, uintptr(unsafe.Pointer(&cubin[0])))
	if err := n.check("nvrtcGetCUBIN", r); err != nil {
		return nil, err
	}
	return cubin, nil
}

// kernelCache finds or builds the CUBIN of src for one device. Entries live
// in os.UserCacheDir()/fm/cuda, named by the SHA-256 of everything the
// binary depends on: the source, the compile options (which name the
// architecture), the NVRTC version and the driver version. A stale or damaged
// entry is never reused: a different key is a different file, and a file that
// the driver refuses is rebuilt.
type kernelCache struct {
	dir string // "" disables the on-disk cache
}

func newKernelCache() kernelCache {
	if d := os.Getenv("FM_CUDA_CACHE"); d != "" {
		if d == "off" {
			return kernelCache{}
		}
		return kernelCache{dir: d}
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return kernelCache{}
	}
	return kernelCache{dir: filepath.Join(base, "fm", "cuda")}
}

func cacheKey(src string, opts []string, nvrtcVersion string, driverVersion int, arch string) string {
	h := sha256.New()
	fmt.Fprintf(h, "fm-cuda/1\x00%s\x00%s\x00%d\x00%s\x00", strings.Join(opts, " "), nvrtcVersion, driverVersion, arch)
	h.Write([]byte(src))
	return fmt.Sprintf("%s-%s.cubin", arch, hex.EncodeToString(h.Sum(nil))[:24])
}

func (c kernelCache) load(key string) []byte {
	if c.dir == "" {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(c.dir, key))
	if err != nil {
		return nil
	}
	return b
}

// store writes the entry under a temporary name and renames it, so a reader
// never sees a partial file. Failing to cache is not an error: the kernels
// are compiled again next time.
func (c kernelCache) store(key string, b []byte) {
	if c.dir == "" {
		return
	}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return
	}
	f, err := os.CreateTemp(c.dir, "."+key+".tmp-*")
	if err != nil {
		return
	}
	_, werr := f.Write(b)
	cerr := f.Close()
	if werr != nil || cerr != nil || os.Rename(f.Name(), filepath.Join(c.dir, key)) != nil {
		os.Remove(f.Name())
	}
}

func (c kernelCache) remove(key string) {
	if c.dir != "" {
		os.Remove(filepath.Join(c.dir, key))
	}
}
