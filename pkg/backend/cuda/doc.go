// Package cuda is fm's NVIDIA GPU backend, without cgo: libcuda.so.1 and
// libnvrtc are opened at run time with purego, the kernels of shaders/cuda are
// compiled by NVRTC for the GPU found and cached under the user cache dir.
//
// Importing purego makes a binary dynamically linked, so everything that
// touches the driver is built only with the build tag `cuda`
// (`go build -tags cuda ./cmd/infer`); the default build of this package holds
// only Available, which says the backend is not in the build. A test
// (pkg/internal/deptest) keeps purego out of the default binaries.
package cuda
