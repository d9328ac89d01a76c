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

// TestMatBatchMatchesMatMul: a batch of products of every format (packed
// and not, several widths), some reading one x and some their own, gives
// each product's MatMul bit for bit, exact and int8, at every level, on 1
// to 5 workers and 1 to 17 tokens; products that can share x's preparation
// do (checked by counting the tasks that hold scratch of their own).
func TestMatBatchMatchesMatMul(t *testing.T) {
	rng := rand.New(rand.NewPCG(45, 46))
	type spec struct {
		rows, cols int
		f          Format
		bits, gs   int
		pack       bool
		x          int // which x: products with the same index read the same x
	}
	specs := []spec{
		{96, 256, Affine, 4, 64, true, 0}, {48, 256, Affine, 4, 64, true, 0}, {37, 256, Affine, 4, 64, false, 0},
		{16, 256, BF16, 0, 0, false, 0}, {20, 256, Affine, 2, 64, true, 0}, {33, 256, Affine, 3, 32, false, 0},
		{24, 256, Affine, 3, 64, false, 0}, {24, 256, Affine, 2, 64, false, 0}, {16, 256, Affine, 8, 64, false, 0},
		{64, 128, Affine, 8, 64, true, 1}, {17, 128, F32, 0, 0, false, 1}, {32, 256, Affine, 4, 64, true, 2},
		{40, 192, Affine, 4, 64, false, 3}, {5, 192, F16, 0, 0, false, 3},
	}
	ms := make([]*Matrix, len(specs))
	for i, sp := range specs {
		ms[i] = randomMatrix(rng, sp.rows, sp.cols, sp.f, sp.bits, sp.gs, BF16)
		if sp.pack && haveVNNI && rowPackable(ms[i]) {
			ms[i].packed = packRows(ms[i], nil)
		}
	}
	var pools []*Pool
	for _, level := range testLevels() {
		for _, w := range []int{1, 3, 5} {
			pools = append(pools, newPool(w, level))
			p := newPool(w, level)
			p.int8 = true
			pools = append(pools, p)
		}
	}
	for _, p := range pools {
		for _, n := range []int{1, 3, 8, 17} {
			xs := make([][]float32, 4)
			for i := range xs {
				xs[i] = randomVector(rng, n*256)
			}
			ys, want := make([][]float32, len(ms)), make([][]float32, len(ms))
			b := p.newBatch()
			for i, m := range ms {
				x := xs[specs[i].x][:n*m.Cols]
				ys[i], want[i] = make([]float32, n*m.Rows), make([]float32, n*m.Rows)
				p.MatMul(want[i], m, x, n)
				b.add(ys[i], m, x, n)
			}
			// The first 4-bit packed product prepares x; the second (same x,
			// same form) shares it.
			if b.tasks[1].nHeld > 0 {
				t.Fatalf("workers %d level %d int8 %v n %d: the second product prepared x again", p.Workers(), p.level, p.int8, n)
			}
			b.compute()
			for i := range ms {
				for j := range ys[i] {
					if math.Float32bits(ys[i][j]) != math.Float32bits(want[i][j]) {
						t.Fatalf("workers %d level %d int8 %v n %d: product %d (%+v) [%d] %g, MatMul %g",
							p.Workers(), p.level, p.int8, n, i, specs[i], j, ys[i][j], want[i][j])
					}
				}
			}
		}
	}
}

// TestMatBatchPartsCoverEveryUnit: whatever the split, the batch's parts
// run every unit of every task exactly once.
func TestMatBatchPartsCoverEveryUnit(t *testing.T) {
	for _, units := range [][]int{{1}, {7, 1, 300}, {48, 48, 48, 48}, {3, 0, 5}} {
		for _, cost := range [][]int{{1, 1, 1, 1}, {1 << 16, 3, 1 << 20, 7}, {100, 100000, 1, 2}} {
			for parts := 1; parts <= 9; parts++ {
				b := &matBatch{parts: parts}
				seen := make([][]int, len(units))
				total := 0
				for i, u := range units {
					i := i
					seen[i] = make([]int, u)
					tk := &matTask{units: u, cost: cost[i]}
					tk.body = func(_ *matTask, lo, hi int) {
						for k := lo; k < hi; k++ {
							seen[i][k]++
						}
					}
					b.tasks = append(b.tasks, tk)
					total += u * max(cost[i], 1)
					b.ends = append(b.ends, total)
				}
				for k := 0; k < parts; k++ {
					b.run(k, k+1)
				}
				for i := range seen {
					for k, c := range seen[i] {
						if c != 1 {
							t.Fatalf("units %v cost %v parts %d: task %d unit %d ran %d times", units, cost, parts, i, k, c)
						}
					}
				}
			}
		}
	}
}

// BenchmarkMatMulSharedAB alternates an attention layer's q, k and v as
// three MatMuls and as one MatMulShared over 12 layers' copies (from DRAM),
// exact (4-bit kernels, x permuted once instead of three times) and int8
// (row-interleaved copies, x quantized once): "ratio" is the median of three
// products' time / the shared one's.
func BenchmarkMatMulSharedAB(b *testing.B) {
	for _, int8 := range []bool{false, true} {
		if int8 && !haveVNNI {
			continue
		}
		p := NewPool(0)
		p.int8 = int8
		const layers = 12
		var qkv [layers][3]*Matrix
		bytes := 0
		for l := range layers {
			for i, r := range []int{4096, 512, 512} {
				m := benchMatrix(r, 2048, Affine, 4)
				if int8 {
					m.packed = packRows(m, p)
				}
				qkv[l][i] = m
				if l == 0 && int8 {
					bytes += len(m.packed.data)
				} else if l == 0 {
					bytes += len(m.Data) + len(m.Scales) + len(m.Biases)
				}
			}
		}
		for _, n := range []int{1, 8} {
			x := randomVector(rand.New(rand.NewPCG(2, 2)), n*2048)
			ys := [][]float32{make([]float32, n*4096), make([]float32, n*512), make([]float32, n*512)}
			b.Run(fmt.Sprintf("int8=%v/n%d", int8, n), func(b *testing.B) {
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
