//go:build goexperiment.simd && amd64 && !noasm

package kernelcmp

import (
	"simd/archsimd"
	"testing"
)

// TestArchsimdVariant: with the experiment on an AVX-512 CPU the archsimd
// variant must be registered, or `make kernelcmp` silently measures without it.
func TestArchsimdVariant(t *testing.T) {
	if !archsimd.X86.AVX512() {
		t.Skip("no AVX-512")
	}
	for _, v := range Variants() {
		if v.Name == "archsimd" {
			return
		}
	}
	t.Error("archsimd variant missing")
}
