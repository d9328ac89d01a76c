package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/fm-moe/fm/pkg/backend"
)

// randomExpert lays out one expert file of random codes (or bf16 values) with
// scales of about 1/sqrt(cols), as the synthetic models do, and binds it.
func randomExpert(tb testing.TB, d *Device, r *rand.Rand, H, I, bits int) backend.Expert {
	tb.Helper()
	l, file := randomExpertFile(r, H, I, bits)
	e, err := d.BindExpert(l, file)
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

// randomExpertFile is an expert file of random codes and scales (bits 16:
// bf16 weights; else affine, groups of 64, bf16 scales) and its layout.
func randomExpertFile(r *rand.Rand, H, I, bits int) (*backend.ExpertLayout, []byte) {
	desc := func(rows, cols int) backend.MatrixDesc {
		if bits == 16 {
			return backend.MatrixDesc{Rows: rows, Cols: cols, Format: backend.BF16}
		}
		return backend.MatrixDesc{Rows: rows, Cols: cols, Format: backend.Affine, Bits: bits, GroupSize: 64, ScaleFormat: backend.BF16}
	}
	l := &backend.ExpertLayout{}
	var file []byte
	put := func(n int, bf16 float32) backend.Part {
		p := backend.Part{Offset: len(file), Size: n}
		for i := 0; i < n; i += 2 {
			if bf16 != 0 {
				v := bf16 * float32(r.NormFloat64())
				u := uint16(f32bits(v) >> 16)
				file = append(file, byte(u), byte(u>>8))
			} else {
				file = append(file, byte(r.Uint32()), byte(r.Uint32()))
			}
		}
		return p
	}
	for _, m := range []struct {
		dst        *backend.ExpertMatrix
		rows, cols int
	}{{&l.Gate, I, H}, {&l.Up, I, H}, {&l.Down, H, I}} {
		dd := desc(m.rows, m.cols)
		s := float32(1 / float64(m.cols))
		em := backend.ExpertMatrix{Desc: dd}
		if bits == 16 {
			em.Data = put(dd.DataBytes(), s*8)
		} else {
			em.Data = put(dd.DataBytes(), 0)
			em.Scales = put(dd.ScaleBytes(), s)
			em.Biases = put(dd.ScaleBytes(), s)
		}
		*m.dst = em
	}
	file = append(file, make([]byte, 64)...)
	l.FileSize = len(file)
	return l, file
}

func f32bits(v float32) uint32 { return math.Float32bits(v) }

// TestExpertWindowEnd: windows cover the experts in order, each at least
// expertWindow per worker (the last: what is left), and grow while their
// outputs fit expertWindowBytes.
func TestExpertWindowEnd(t *testing.T) {
	defer func(b int) { expertWindowBytes = b }(expertWindowBytes)
	rows := make([][]int, 30) // expert i has i%5+1 tokens
	for i := range rows {
		rows[i] = make([]int, i%5+1)
	}
	const cols = 256 // 1 KiB a token's output
	for _, tc := range []struct {
		budget, workers int
		want            []int // window ends
	}{
		{1, 2, []int{8, 16, 24, 30}},
		{1, 3, []int{12, 24, 30}},
		{1 << 20, 2, []int{30}},
		// Experts 0–7 hold 1+2+3+4+5+1+2+3 = 21 KiB: within 24 KiB the next
		// (4 KiB) does not fit; within 26 KiB it does, and expert 9's 5 KiB
		// not; then 9–16 (23 KiB) take 17 (3 KiB), and 18–25 (25 KiB) nothing.
		{24 << 10, 2, []int{8, 16, 24, 30}},
		{26 << 10, 2, []int{9, 18, 26, 30}},
	} {
		expertWindowBytes = tc.budget
		var got []int
		for lo, hi := 0, 0; lo < len(rows); lo = hi {
			hi = expertWindowEnd(rows, lo, tc.workers, cols)
			got = append(got, hi)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("budget %d, %d workers: windows end at %v, want %v", tc.budget, tc.workers, got, tc.want)
		}
	}
}

// TestExpertFFNsMatchesSequential: ExpertFFNs leaves out bit for bit as the
// same experts' ExpertFFN calls in order (the contract of
// backend.ExpertBatcher), whether whole experts go to workers or products
// are split, for decode (one row) and prefill-like row sets, in one window
// or several.
func TestExpertFFNsMatchesSequential(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct {
		bits, workers, experts, T int
		int8, smallWindows        bool
	}{
		{4, 2, 8, 1, false, false}, {4, 2, 1, 1, false, false}, {4, 2, 20, 6, false, false}, {4, 3, 5, 1, false, false},
		{4, 2, 7, 6, false, false}, {2, 2, 4, 3, false, false}, {3, 2, 4, 1, false, false}, {8, 2, 3, 1, false, false},
		{16, 2, 4, 5, false, false},
		// Fewer experts than workers: the split batches (expertsSplit).
		{4, 5, 3, 1, false, false}, {4, 4, 2, 5, false, false}, {2, 3, 2, 1, false, false}, {3, 4, 3, 2, false, false},
		{8, 3, 2, 1, false, false}, {16, 4, 3, 3, false, false}, {4, 5, 3, 1, true, false}, {4, 4, 2, 5, true, false},
		{2, 3, 2, 1, true, false}, {3, 4, 3, 2, true, false}, {8, 3, 2, 1, true, false}, {4, 2, 8, 1, true, false},
		{4, 3, 5, 4, true, false},
		// Several windows (expertWindowBytes made small): 20 experts in
		// windows of 8, then 4.
		{4, 2, 20, 6, false, true}, {4, 2, 20, 9, true, true},
	} {
		t.Run(fmt.Sprintf("bits=%d/workers=%d/experts=%d/T=%d/int8=%v/small=%v", tc.bits, tc.workers, tc.experts, tc.T, tc.int8, tc.smallWindows), func(t *testing.T) {
			if tc.smallWindows {
				defer func(b int) { expertWindowBytes = b }(expertWindowBytes)
				expertWindowBytes = 1
			}
			mode := backend.MatmulExact
			if tc.int8 {
				mode = backend.MatmulInt8
			}
			d, err := OpenDevice(backend.Options{Threads: tc.workers, Matmul: mode})
			if err != nil {
				t.Fatal(err)
			}
			H, I := 256, 192
			x, _ := d.NewTensor(tc.T, H)
			d.Upload(x, attnRandFloats(r, tc.T*H))
			init := attnRandFloats(r, tc.T*H)
			var es []backend.Expert
			var rows [][]int
			var weights [][]float32
			for i := 0; i < tc.experts; i++ {
				es = append(es, randomExpert(t, d, r, H, I, tc.bits))
				var rs []int
				var ws []float32
				for t0 := 0; t0 < tc.T; t0++ {
					if t0 == 0 || r.IntN(2) == 0 {
						rs, ws = append(rs, t0), append(ws, r.Float32())
					}
				}
				rows, weights = append(rows, rs), append(weights, ws)
			}
			seq, _ := d.NewTensor(tc.T, H)
			d.Upload(seq, init)
			for i, e := range es {
				d.ExpertFFN(seq, x, e, rows[i], weights[i])
			}
			bat, _ := d.NewTensor(tc.T, H)
			d.Upload(bat, init)
			d.ExpertFFNs(bat, x, es, rows, weights)
			if !slices.Equal(data(seq).data, data(bat).data) {
				t.Fatal("ExpertFFNs differs from the sequential ExpertFFN calls")
			}
		})
	}
}

// BenchmarkExpertFFNs: one decode step's 8 experts of Qwen3-30B-A3B's shape
// (H 2048, I 768, 4-bit, 2.65 MB each), taken from 128 experts (340 MB,
// beyond the caches), through K ExpertFFN calls (each product split over the
// workers: main's decode) and through one ExpertFFNs (whole experts per
// worker), the two alternating step by step so that both see the same
// interference. It reports each one's GB/s of expert bytes (best step) and
// the median of the per-pair time ratios sequential/batched (>1: batched is
// faster).
func BenchmarkExpertFFNs(b *testing.B) {
	st := newExpertStep(b)
	d, es, x, out, rows, weights := st.d, st.es, st.x, st.out, st.rows, st.weights
	const K, N = expertStepK, expertStepN
	pairedAB(b, st.bytes, "GB/s-seq-best", "GB/s-batched-best", "ratio", func(i int) {
		for k, e := range es[(2*i*K)%N : (2*i*K)%N+K] {
			d.ExpertFFN(out, x, e, rows[k], weights[k])
		}
	}, func(i int) {
		d.ExpertFFNs(out, x, es[((2*i+1)*K)%N:((2*i+1)*K)%N+K], rows, weights)
	})
}

// pairedAB runs a(i) and b2(i) alternately, i = 0, 1, … while the benchmark
// loops, so that both see the same interference, and reports each one's best
// in GB/s of bytes (units aName, bName) and the median of the per-pair time
// ratios a/b2 (ratioName; > 1: b2 is faster).
func pairedAB(b *testing.B, bytes float64, aName, bName, ratioName string, a, b2 func(i int)) {
	var ratios []float64
	bestA, bestB := time.Duration(1<<62), time.Duration(1<<62)
	for i := 0; b.Loop(); i++ {
		t0 := time.Now()
		a(i)
		ta := time.Since(t0)
		t0 = time.Now()
		b2(i)
		tb := time.Since(t0)
		bestA, bestB = min(bestA, ta), min(bestB, tb)
		ratios = append(ratios, float64(ta)/float64(tb))
	}
	slices.Sort(ratios)
	b.ReportMetric(bytes/bestA.Seconds()/1e9, aName)
	b.ReportMetric(bytes/bestB.Seconds()/1e9, bName)
	b.ReportMetric(ratios[len(ratios)/2], ratioName)
}

// BenchmarkExpertFFNsInt8 alternates one layer step (8 of 128 4-bit experts,
// as BenchmarkExpertFFNs, through ExpertFFNs) in exact and int8 mode on the
// same device: "ratio" is the median of exact time / int8 time over the
// pairs, with the best of each in GB/s of expert bytes.
func BenchmarkExpertFFNsInt8(b *testing.B) {
	st := newExpertStep(b)
	d, es, x, out, rows, weights := st.d, st.es, st.x, st.out, st.rows, st.weights
	const K, N = expertStepK, expertStepN
	mode := func(int8 bool) { d.pool.int8, d.serial.int8 = int8, int8 }
	defer mode(false)
	pairedAB(b, st.bytes, "GB/s-exact-best", "GB/s-int8-best", "ratio", func(i int) {
		mode(false)
		d.ExpertFFNs(out, x, es[(2*i*K)%N:(2*i*K)%N+K], rows, weights)
	}, func(i int) {
		mode(true)
		d.ExpertFFNs(out, x, es[((2*i+1)*K)%N:((2*i+1)*K)%N+K], rows, weights)
	})
}

// expertStep is the setup the ExpertFFNs benchmarks share: N 4-bit experts of
// Qwen3-30B-A3B's shape (2048 → 768 → 2048) on one device, one token of x,
// and K routed rows of weight 1/8 (a layer step).
type expertStep struct {
	d       *Device
	es      []backend.Expert
	x, out  backend.Tensor
	rows    [][]int
	weights [][]float32
	bytes   float64 // expert bytes a step of K experts reads
}

const expertStepK, expertStepN = 8, 128

func newExpertStep(b *testing.B) *expertStep {
	const H, I = 2048, 768
	st := &expertStep{d: NewDevice(0), es: make([]backend.Expert, expertStepN)}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range st.es {
		st.es[i] = randomExpert(b, st.d, r, H, I, 4)
	}
	st.bytes = float64(expertStepK) * float64(3*H*I/2+3*H*I/64*4)
	st.x, _ = st.d.NewTensor(1, H)
	st.d.Upload(st.x, attnRandFloats(r, H))
	st.out, _ = st.d.NewTensor(1, H)
	st.rows, st.weights = make([][]int, expertStepK), make([][]float32, expertStepK)
	for i := range st.rows {
		st.rows[i], st.weights[i] = []int{0}, []float32{0.125}
	}
	return st
}

// TestExpertFFNsQuantizeOnce: with packed experts (int8 mode, expert cache),
// ExpertFFNs quantizes x once for all the experts; the outputs equal, bit
// for bit, those of each expert quantizing its own gathered copy, for a
// decode step and for prefill chunks whose tokens reach the 8- and 4-token
// kernels and the one-token rest.
func TestExpertFFNsQuantizeOnce(t *testing.T) {
	if !packedCacheOn() {
		t.Skip("no packed experts on this CPU (AVX-512 VNNI)")
	}
	defer func() { quantizeOnce = true }()
	r := rand.New(rand.NewPCG(5, 6))
	const H, I, E = 256, 192, 6
	d := cacheDevice(t, 2, 64<<20)
	var es []backend.Expert
	for i := 0; i < E; i++ {
		l, file := randomExpertFile(r, H, I, 4)
		e, err := d.BindExpertCached(backend.ExpertKey{Owner: 9, ID: i}, l, file)
		if err != nil {
			t.Fatal(err)
		}
		if e.(*expert).gate.packed == nil {
			t.Fatal("the expert was not packed")
		}
		es = append(es, e)
	}
	// All six experts take whole experts per worker; one expert (fewer
	// than the two workers) takes expertsSplit.
	for _, c := range []struct{ T, E int }{{1, E}, {5, E}, {13, E}, {40, E}, {1, 1}, {5, 1}, {13, 1}} {
		T, es := c.T, es[:c.E]
		x, _ := d.NewTensor(T, H)
		d.Upload(x, attnRandFloats(r, T*H))
		var rows [][]int
		var weights [][]float32
		for range es {
			var rs []int
			var ws []float32
			for t0 := 0; t0 < T; t0++ {
				if t0 == 0 || r.IntN(3) > 0 {
					rs, ws = append(rs, t0), append(ws, r.Float32())
				}
			}
			rows, weights = append(rows, rs), append(weights, ws)
		}
		var outs [2][]float32
		for i, once := range []bool{false, true} {
			quantizeOnce = once
			out, _ := d.NewTensor(T, H)
			d.ExpertFFNs(out, x, es, rows, weights)
			outs[i] = slices.Clone(data(out).data)
		}
		if !slices.Equal(outs[0], outs[1]) {
			t.Fatalf("T=%d, %d experts: x quantized once gives other outputs than per expert", T, c.E)
		}
	}
}

// BenchmarkExpertFFNsPrefill: one prefill chunk's expert phase of a layer,
// int8 mode with the packed expert cache, on every CPU: 512 tokens routed
// uniformly to 8 of 128 4-bit experts of Qwen3-30B-A3B's shape (32 ± 6
// tokens an expert, 340 MB of experts, from DRAM), through one ExpertFFNs.
// GOPS is int8 operations per second (2 per weight and token).
func BenchmarkExpertFFNsPrefill(b *testing.B) {
	if !packedCacheOn() {
		b.Skip("no packed experts on this CPU (AVX-512 VNNI)")
	}
	const H, I, E, T, K = 2048, 768, 128, 512, 8
	d := cacheDevice(b, 0, 1<<30)
	r := rand.New(rand.NewPCG(7, 8))
	es := make([]backend.Expert, E)
	for i := range es {
		l, file := randomExpertFile(r, H, I, 4)
		e, err := d.BindExpertCached(backend.ExpertKey{Owner: 11, ID: i}, l, file)
		if err != nil {
			b.Fatal(err)
		}
		es[i] = e
	}
	rows, weights := make([][]int, E), make([][]float32, E)
	for t0 := 0; t0 < T; t0++ {
		for _, e := range r.Perm(E)[:K] {
			rows[e], weights[e] = append(rows[e], t0), append(weights[e], 1.0/K)
		}
	}
	x, _ := d.NewTensor(T, H)
	d.Upload(x, attnRandFloats(r, T*H))
	out, _ := d.NewTensor(T, H)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d.ExpertFFNs(out, x, es, rows, weights)
	}
	b.ReportMetric(float64(2*3*H*I*T*K)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GOPS")
}
