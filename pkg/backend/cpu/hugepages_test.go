package cpu

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestHugeBytes: hugeBytes returns zeroed buffers of the asked length at
// sizes below, at and around the huge-page threshold and at unaligned
// lengths, and they are writable end to end after the advice.
func TestHugeBytes(t *testing.T) {
	for _, n := range []int{0, 1, 4095, hugePageSize, 2*hugePageSize - 1, 2 * hugePageSize, 3*hugePageSize + 12345} {
		b := hugeBytes(n)
		if len(b) != n {
			t.Fatalf("hugeBytes(%d): %d bytes", n, len(b))
		}
		for i := 0; i < n; i += 4096 {
			if b[i] != 0 {
				t.Fatalf("hugeBytes(%d): byte %d is %d", n, i, b[i])
			}
			b[i] = 1
		}
		if n > 0 {
			b[n-1] = 1
		}
	}
}

// BenchmarkHugePagesAB alternates int8-mode products with row-interleaved
// copies on huge pages (hugeBytes) and on plain Go memory, over 12 copies of
// a matrix (a 12-layer model's q projections, or its experts), so each
// product reads from DRAM: "ratio" is the median of plain / huge time.
func BenchmarkHugePagesAB(b *testing.B) {
	if !haveVNNI {
		b.Skip("no AVX-512 VNNI: no row-interleaved copies")
	}
	p := NewPool(0)
	p.int8 = true
	for _, sh := range []struct{ rows, cols int }{{4096, 2048}, {768, 2048}, {151936 / 8, 2048}} {
		src := benchMatrix(sh.rows, sh.cols, Affine, 4)
		const copies = 12
		var huge, plain [copies]Matrix
		for i := range copies {
			huge[i], plain[i] = *src, *src
			pk := packRows(src, p)
			hb := hugeBytes(len(pk.data))
			copy(hb, pk.data)
			hp := *pk
			hp.data = hb
			huge[i].packed = &hp
			pb := make([]byte, len(pk.data))
			copy(pb, pk.data)
			pp := *pk
			pp.data = pb
			plain[i].packed = &pp
		}
		x := randomVector(rand.New(rand.NewPCG(2, 2)), sh.cols)
		y := make([]float32, sh.rows)
		b.Run(fmt.Sprintf("%dx%d", sh.rows, sh.cols), func(b *testing.B) {
			pairedAB(b, float64(len(huge[0].packed.data)), "GB/s-plain-best", "GB/s-huge-best", "ratio",
				func(i int) { p.MatVec(y, &plain[i%copies], x) },
				func(i int) { p.MatVec(y, &huge[i%copies], x) })
		})
	}
}
