package shaders

import (
	"strings"
	"testing"
)

func TestCUDAOrderAndKernels(t *testing.T) {
	src, err := CUDA()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(src, "#line 1 \"cuda/00common.cu\"") {
		t.Errorf("common helpers must come first, source starts %q", src[:min(len(src), 40)])
	}
	// Every kernel the Go side launches must be in the source.
	for _, k := range []string{"mm_generic", "embed_rows",
		"rmsnorm", "qk_norm_rope", "l2norm_heads", "attend", "kv_store", "conv_silu", "delta_rule",
		"swiglu", "add", "combine", "gate_add", "gather", "first_nonfinite"} {
		if !strings.Contains(src, " "+k+"(") {
			t.Errorf("kernel %s not found in the CUDA source", k)
		}
	}
	// The matmul kernels are instantiated by a macro, one line per format.
	for _, k := range []string{"mm_f32, mm2_f32", "mm_bf16, mm2_bf16", "mm_f16, mm2_f16", "mm_q2, mm2_q2",
		"mm_q3, mm2_q3", "mm_q4, mm2_q4", "mm_q8, mm2_q8"} {
		if !strings.Contains(src, "MM_KERNEL("+k+",") {
			t.Errorf("matmul kernels %s not instantiated", k)
		}
	}
}
