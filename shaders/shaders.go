// Package shaders holds the GPU kernels' source, embedded so that a GPU
// backend can compile them at run time for the device it finds (go:embed
// cannot reach outside a package's directory, hence this tiny package).
package shaders

import (
	"embed"
	"io/fs"
	"sort"
	"strings"
)

//go:embed cuda/*.cu
var cudaFS embed.FS

// CUDA returns the CUDA kernels as one translation unit: the files of cuda/
// concatenated in name order (00common.cu first), each preceded by a #line
// directive so that compiler messages name the file and line.
func CUDA() (string, error) {
	names, err := fs.Glob(cudaFS, "cuda/*.cu")
	if err != nil {
		return "", err
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		src, err := cudaFS.ReadFile(n)
		if err != nil {
			return "", err
		}
		b.WriteString("#line 1 \"" + n + "\"\n")
		b.Write(src)
		b.WriteString("\n")
	}
	return b.String(), nil
}
