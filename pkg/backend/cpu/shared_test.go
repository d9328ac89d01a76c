package cpu

import (
	"fmt"

	"github.com/fm-moe/fm/pkg/backend"
	"math"
	"math/rand/v2"
	"testing"
)

// TestMatMulSharedMatchesMatMul: MatMulShared gives each matrix's MatMul,
// bit for bit, at every pool width and level, packed or not, for 1–17
// tokens (shared path where the matrices are packed, per-matrix elsewhere).
func TestMatMulSharedMatchesMatMul(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 42))
	for _, rows := range [][]int{{64, 16, 16}, {37, 20, 48, 17}, {16, 16}} {
		ms := make([]*Matrix, len(rows))
		for i, r := range rows {
			ms[i] = randomMatrix(rng, r, 256, Affine, 4, 64, BF16)
			if haveVNNI {
				ms[i].packed = packRows(ms[i], nil)
			}
		}
		for _, p := range int8Pools() {
			for _, n := range []int{1, 3, 8, 17} {
				x := randomVector(rng, n*256)
				ys, want := make([][]float32, len(ms)), make([][]float32, len(ms))
				for i, m := range ms {
					ys[i], want[i] = make([]float32, n*m.Rows), make([]float32, n*m.Rows)
					p.MatMul(want[i], m, x, n)
				}
				p.MatMulShared(ys, ms, x, n)
				for i := range ms {
					for j := range ys[i] {
						if math.Float32bits(ys[i][j]) != math.Float32bits(want[i][j]) {
							t.Fatalf("rows %v workers %d level %d n %d: matrix %d [%d] %g, MatMul %g", rows, p.Workers(), p.level, n, i, j, ys[i][j], want[i][j])
						}
					}
				}
			}
		}
	}
}

// BenchmarkMatMulSharedAB alternates an attention layer's q, k and v as
// three MatMuls and as one MatMulShared over 12 layers' copies (from DRAM),
// in int8 mode with row-interleaved copies: "ratio" is the median of three
// products' time / the shared one's.
func BenchmarkMatMulSharedAB(b *testing.B) {
	if !haveVNNI {
		b.Skip("no AVX-512 VNNI")
	}
	p := NewPool(0)
	p.int8 = true
	const layers = 12
	var qkv [layers][3]*Matrix
	bytes := 0
	for l := range layers {
		for i, r := range []int{4096, 512, 512} {
			m := benchMatrix(r, 2048, Affine, 4)
			m.packed = packRows(m, p)
			qkv[l][i] = m
			if l == 0 {
				bytes += len(m.packed.data)
			}
		}
	}
	for _, n := range []int{1, 8} {
		x := randomVector(rand.New(rand.NewPCG(2, 2)), n*2048)
		ys := [][]float32{make([]float32, n*4096), make([]float32, n*512), make([]float32, n*512)}
		b.Run(fmt.Sprintf("n%d", n), func(b *testing.B) {
			pairedAB(b, float64(bytes), "GB/s-three-best", "GB/s-shared-best", "ratio",
				func(i int) {
					for j, m := range qkv[i%layers] {
						p.MatMul(ys[j], m, x, n)
					}
				},
				func(i int) { p.MatMulShared(ys, qkv[i%layers][:], x, n) })
		})
	}
}

// TestDeviceMatMulsMatchesMatMul: Device.MatMuls over a delta-net-like set
// (two 4-bit weights, a bf16 one, another 4-bit one) equals MatMul per weight
// bit for bit, in exact and int8 mode, for 1 and 9 tokens; in int8 mode on a
// VNNI CPU the 4-bit weights take the shared path.
func TestDeviceMatMulsMatchesMatMul(t *testing.T) {
	rng := rand.New(rand.NewPCG(43, 44))
	srcs := []*Matrix{
		randomMatrix(rng, 96, 256, Affine, 4, 64, BF16),
		randomMatrix(rng, 64, 256, Affine, 4, 64, BF16),
		randomMatrix(rng, 16, 256, BF16, 0, 0, BF16),
		randomMatrix(rng, 32, 256, Affine, 4, 64, BF16),
	}
	for _, mode := range []backend.Matmul{backend.MatmulExact, backend.MatmulInt8} {
		d, err := OpenDevice(backend.Options{Threads: 2, Matmul: mode})
		if err != nil {
			t.Fatal(err)
		}
		ws := make([]backend.Matrix, len(srcs))
		for i, m := range srcs {
			if ws[i], err = d.BindDense(m.Desc(), m.Data, m.Scales, m.Biases); err != nil {
				t.Fatal(err)
			}
		}
		for _, n := range []int{1, 9} {
			x, _ := d.NewTensor(n, 256)
			d.Upload(x, randomVector(rng, n*256))
			ys, want := make([]backend.Tensor, len(ws)), make([]backend.Tensor, len(ws))
			for i, m := range srcs {
				ys[i], _ = d.NewTensor(n, m.Rows)
				want[i], _ = d.NewTensor(n, m.Rows)
				d.MatMul(want[i], ws[i], x)
			}
			d.MatMuls(ys, ws, x)
			for i := range ws {
				got, exp := ys[i].(*Tensor).data, want[i].(*Tensor).data
				for j := range got {
					if math.Float32bits(got[j]) != math.Float32bits(exp[j]) {
						t.Fatalf("%s n=%d weight %d [%d]: %g, MatMul %g", mode, n, i, j, got[j], exp[j])
					}
				}
			}
		}
	}
}
