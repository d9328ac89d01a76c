//go:build !noasm

package kernelcmp

import "testing"

// TestAmd64Variants: on an AVX-512 CPU both assembly variants must be
// registered, or the comparison silently lacks them.
func TestAmd64Variants(t *testing.T) {
	if !haveAVX512 {
		t.Skip("no AVX-512: only the Go twin runs")
	}
	have := map[string]bool{}
	for _, v := range Variants() {
		have[v.Name] = true
	}
	for _, name := range []string{"go", "asm", "avo"} {
		if !have[name] {
			t.Errorf("variant %q missing (have %v)", name, have)
		}
	}
}
