//go:build cuda && linux

package cuda

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/fm-moe/fm/pkg/backend"
)

// gemmDescs are matrices for the tiled kernels' tests: every format the fast
// kernels take, row counts around the 128-row tile, columns a multiple of 32.
func gemmDescs() []backend.MatrixDesc {
	return []backend.MatrixDesc{
		{Rows: 257, Cols: 192, Format: backend.Affine, Bits: 4, GroupSize: 64, ScaleFormat: backend.BF16},
		{Rows: 130, Cols: 256, Format: backend.Affine, Bits: 3, GroupSize: 32, ScaleFormat: backend.F16},
		{Rows: 7, Cols: 128, Format: backend.Affine, Bits: 8, GroupSize: 128, ScaleFormat: backend.F32},
		{Rows: 129, Cols: 64, Format: backend.Affine, Bits: 2, GroupSize: 32, ScaleFormat: backend.BF16},
		{Rows: 33, Cols: 96, Format: backend.BF16},
		{Rows: 65, Cols: 160, Format: backend.F16},
		{Rows: 200, Cols: 32, Format: backend.F32},
		// K long enough to split (≥ 16 K-steps) on a grid smaller than the GPU.
		{Rows: 130, Cols: 1024, Format: backend.Affine, Bits: 4, GroupSize: 64, ScaleFormat: backend.BF16},
		{Rows: 40, Cols: 768, Format: backend.BF16},
		{Rows: 70, Cols: 512, Format: backend.F32},
	}
}

// TestSplitK checks the split of K: splits cover the columns exactly, in
// multiples of 32, each at least 8 K-steps, and only grids smaller than the
// GPU split. No GPU needed.
func TestSplitK(t *testing.T) {
	for _, c := range []struct{ blocks, cols, sms, wantS int }{
		{32, 2048, 132, 8}, {4, 2048, 132, 8}, {128, 4096, 132, 3}, {256, 2048, 132, 1},
		{132, 2048, 132, 1}, {3, 256, 132, 1}, {3, 512, 132, 2}, {1, 96, 132, 1}, {64, 768, 132, 3},
	} {
		S, kchunk := splitK(c.blocks, c.cols, c.sms)
		if S != c.wantS || kchunk%32 != 0 || (S-1)*kchunk >= c.cols || S*kchunk < c.cols || (S > 1 && kchunk < 8*32) {
			t.Errorf("splitK(%d blocks, %d cols, %d SMs) = %d splits of %d columns, want %d splits covering the columns",
				c.blocks, c.cols, c.sms, S, kchunk, c.wantS)
		}
	}
}

// TestGemmModes runs the tiled kernels through Device.MatMul in every mode
// and with both row arrays: x rows gathered (xrows), results stored, added,
// paired (SwiGLU) or added with weights into scattered y rows (yrows, ywt),
// against float64 references.
func TestGemmModes(t *testing.T) {
	bd := openGPU(t)
	g := bd.(*gpu)
	d := g.d
	r := rand.New(rand.NewPCG(21, 22))
	saved := debugNoTC
	defer func() { debugNoTC = saved }()
	worst := 0.0
	for _, notc := range []bool{false, true} { // tensor cores (where the device has them), then SIMT
		debugNoTC = notc
		worst = max(worst, testGemmModes(t, bd, g, d, r))
	}
	t.Logf("worst relative error: %.3g", worst)
}

func testGemmModes(t *testing.T, bd backend.Device, g *gpu, d *Device, r *rand.Rand) float64 {
	worst := 0.0
	for _, desc := range gemmDescs() {
		s, s2 := randStored(r, desc), randStored(r, desc)
		mb, mb2 := s.bind(t, bd), s2.bind(t, bd)
		m, m2 := g.mat(mb, "w"), g.mat(mb2, "w2")
		rows, cols := desc.Rows, desc.Cols
		for _, T := range []int{16, 33, 100, 300} {
			XR, YR := T+5, T+9
			xv := randVec(r, XR*cols, 1)
			x := upload(t, bd, XR, cols, xv).(*tensor)
			xrows, yrows, ywt := make([]int32, T), make([]int32, T), randVec(r, T, 1)
			for i := range xrows {
				xrows[i] = int32((i*7 + 3) % XR)
				yrows[i] = int32(YR - 1 - i)
			}
			for _, mode := range []string{"store", "accum", "swiglu", "scatter"} {
				y0 := randVec(r, YR*rows, 1)
				y := upload(t, bd, YR, rows, y0).(*tensor)
				xr, err := d.Stage(i32Bytes(xrows))
				if err != nil {
					t.Fatal(err)
				}
				a := &MM{Y: y.ptr, LdY: rows, W: m, X: x.ptr, LdX: cols, T: T, XRows: xr, Mode: MMStore}
				switch mode {
				case "accum":
					a.Mode = MMAccum
				case "swiglu":
					a.Mode, a.W2 = MMSwiGLU, m2
				case "scatter":
					yr, err := d.Stage(i32Bytes(yrows))
					if err != nil {
						t.Fatal(err)
					}
					yw, err := d.Stage(f32Bytes(ywt))
					if err != nil {
						t.Fatal(err)
					}
					a.YRows, a.YWt = yr, yw
				}
				d.MatMul(a)
				want := make([]float64, YR*rows)
				for i, v := range y0 {
					want[i] = float64(v)
				}
				for tt := 0; tt < T; tt++ {
					xt := xv[int(xrows[tt])*cols : (int(xrows[tt])+1)*cols]
					p := matmulRef(s.w, rows, cols, xt, 1)
					if mode == "swiglu" {
						u := matmulRef(s2.w, rows, cols, xt, 1)
						for i := range p {
							p[i] = silu(float64(float32(p[i]))) * u[i]
						}
					}
					for i, v := range p {
						switch mode {
						case "store", "swiglu":
							want[tt*rows+i] = v
						case "accum":
							want[tt*rows+i] += v
						case "scatter":
							want[int(yrows[tt])*rows+i] += float64(ywt[tt]) * v
						}
					}
				}
				worst = max(worst, compare(t, fmt.Sprintf("%v T=%d %s notc=%v", desc, T, mode, debugNoTC), download(t, bd, y), want, 2e-5))
				y.Release()
			}
			x.Release()
		}
		mb.Release()
		mb2.Release()
	}
	return worst
}

// storedLayout is the expert file layout of gate, up and down: parts at
// 4096-byte offsets as fm writes them, or (odd) packed 3 bytes apart, which
// the contract also allows.
func storedLayout(odd bool, gate, up, down *stored) *backend.ExpertLayout {
	l := &backend.ExpertLayout{}
	off := 0
	place := func(n int) backend.Part {
		p := backend.Part{Offset: off, Size: n}
		if odd {
			off += n + 3
		} else {
			off += (n + 4095) &^ 4095
		}
		return p
	}
	for _, p := range []struct {
		m *backend.ExpertMatrix
		s *stored
	}{{&l.Gate, gate}, {&l.Up, up}, {&l.Down, down}} {
		p.m.Desc = p.s.desc
		p.m.Data = place(len(p.s.data))
		if p.s.desc.Format == backend.Affine {
			p.m.Scales, p.m.Biases = place(len(p.s.scales)), place(len(p.s.biases))
		}
	}
	l.FileSize = off
	return l
}

// writeStored writes gate, up and down into file at l's offsets.
func writeStored(file []byte, l *backend.ExpertLayout, gate, up, down *stored) {
	for _, p := range []struct {
		m *backend.ExpertMatrix
		s *stored
	}{{&l.Gate, gate}, {&l.Up, up}, {&l.Down, down}} {
		copy(file[p.m.Data.Offset:], p.s.data)
		if p.s.desc.Format == backend.Affine {
			copy(file[p.m.Scales.Offset:], p.s.scales)
			copy(file[p.m.Biases.Offset:], p.s.biases)
		}
	}
}

// bindStored binds gate, up and down as one expert file laid out as fm
// writes it.
func bindStored(t *testing.T, d backend.Device, gate, up, down *stored) backend.Expert {
	t.Helper()
	l := storedLayout(false, gate, up, down)
	file := make([]byte, l.FileSize)
	writeStored(file, l, gate, up, down)
	e, err := d.BindExpert(l, file)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestExpertBatchPrefill runs a prefill chunk's experts (row counts from 1 to
// all T rows, below and above the tiles) as consecutive ExpertFFN calls, as
// pkg/model issues them, through the grouped tiled kernels, the batch run
// expert by expert (as a grid smaller than the GPU is), the per-expert tiled
// products (FM_CUDA_DEBUG=nobatch) and mm_fast
// (nobatch,nogemm), the tiled ones on tensor cores and on the SIMT kernels
// (notc), against a float64 reference.
func TestExpertBatchPrefill(t *testing.T) {
	d := openGPU(t)
	r := rand.New(rand.NewPCG(23, 24))
	const H, I, T = 256, 384, 100 // multiples of every group size below; I spans 3 row tiles
	counts := []int{1, 33, 9, T, 8, 40, 17, 3, 64, 32}
	saved := [3]bool{debugNoBatch, debugNoGemm, debugNoTC}
	savedMin := groupMinBlocks
	defer func() {
		debugNoBatch, debugNoGemm, debugNoTC, groupMinBlocks = saved[0], saved[1], saved[2], savedMin
	}()
	for _, base := range []backend.MatrixDesc{
		{Format: backend.Affine, Bits: 4, GroupSize: 64, ScaleFormat: backend.BF16},
		{Format: backend.BF16},
		{Format: backend.Affine, Bits: 3, GroupSize: 32, ScaleFormat: backend.F16},
		{Format: backend.Affine, Bits: 8, GroupSize: 128, ScaleFormat: backend.F32},
		{Format: backend.Affine, Bits: 2, GroupSize: 64, ScaleFormat: backend.BF16},
		{Format: backend.F16},
		{Format: backend.F32},
	} {
		gd, dd := base, base
		gd.Rows, gd.Cols, dd.Rows, dd.Cols = I, H, H, I
		xv := randVec(r, T*H, 1)
		x := upload(t, d, T, H, xv)
		ov := randVec(r, T*H, 1)
		want := make([]float64, T*H)
		for i, v := range ov {
			want[i] = float64(v)
		}
		var es []backend.Expert
		var rows [][]int
		var wts [][]float32
		for _, n := range counts {
			gate, up, down := randStored(r, gd), randStored(r, gd), randStored(r, dd)
			es = append(es, bindStored(t, d, gate, up, down))
			rs := r.Perm(T)[:n]
			for i := 1; i < n; i++ { // sort
				for j := i; j > 0 && rs[j] < rs[j-1]; j-- {
					rs[j], rs[j-1] = rs[j-1], rs[j]
				}
			}
			w := randVec(r, n, 1)
			rows, wts = append(rows, rs), append(wts, w)
			for i, row := range rs {
				y := ffnRef(gate, up, down, xv[row*H:(row+1)*H])
				for c := range y {
					want[row*H+c] += float64(w[i]) * y[c]
				}
			}
		}
		for _, mode := range []struct {
			name                 string
			nobatch, nogem, notc bool
			minBlocks            int
		}{{"grouped", false, false, false, 1}, {"grouped,notc", false, false, true, 1},
			{"batched, run one by one (small grid)", false, false, false, 1 << 30},
			{"nobatch", true, false, false, 0}, {"nobatch,notc", true, false, true, 0},
			{"nobatch,nogemm", true, true, false, 0}, {"nogemm", false, true, false, 0}} {
			debugNoBatch, debugNoGemm, debugNoTC, groupMinBlocks = mode.nobatch, mode.nogem, mode.notc, mode.minBlocks
			out := upload(t, d, T, H, ov)
			for j, e := range es {
				d.ExpertFFN(out, x, e, rows[j], wts[j])
			}
			rel := compare(t, fmt.Sprintf("%v experts %s", base, mode.name), download(t, d, out), want, 3e-5)
			t.Logf("%v %s: relative error %.3g", base, mode.name, rel)
			out.Release()
		}
		debugNoBatch, debugNoGemm, debugNoTC, groupMinBlocks = saved[0], saved[1], saved[2], savedMin
		for _, e := range es {
			e.Release()
		}
		x.Release()
	}
}
