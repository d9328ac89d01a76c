package cpu

import (
	"sync"
	"time"
)

// Peak is the arithmetic ceiling of this CPU as the kernels can use it: the
// rate of independent float32 multiply-adds and of int8 dot-product
// multiply-adds (VPDPBUSD on AVX-512 VNNI) with the widest vectors the
// running kernel level has, every operand in registers. A prefill, which
// reads each weight once for many tokens, is bound by this rather than by
// memory; bench reports prefill as a ratio to it.
type Peak struct {
	F32FLOPS float64 // float32 operations per second (a multiply-add counts 2)
	Int8OPS  float64 // int8 dot-product operations per second (a multiply-add counts 2); 0 without an int8 dot kernel
	Kernel   string  // which loops measured it: "avx512", "avx2", "go"
}

// peakIterations is one timed call's length, ≈6 ms: with 2^15 (≈0.5 ms) the
// second worker's start-up (an OS thread's wake-up) hid half of its work and
// two workers measured 1.1× one instead of 1.9×.
const peakIterations = 1 << 19

// ComputePeak measures Peak on workers goroutines at once (workers <= 0: one
// per CPU the Go scheduler uses), the best of reps timed rounds. Comparing
// workers = 1 with all of them shows whether the CPUs share their vector
// units (SMT siblings, or a hypervisor that schedules them so).
func ComputePeak(workers, reps int) Peak {
	if workers <= 0 {
		workers = NewPool(0).Workers()
	}
	p := Peak{Kernel: peakKernel()}
	p.F32FLOPS = timedRate(workers, reps, func() float64 { return peakF32(peakIterations) })
	if haveInt8Peak() {
		p.Int8OPS = timedRate(workers, reps, func() float64 { return peakInt8(peakIterations) })
	}
	return p
}

// timedRate runs loop on workers goroutines at once, reps times, and returns
// the best total operations per second; loop returns the operations it did.
func timedRate(workers, reps int, loop func() float64) float64 {
	best := 0.0
	for r := 0; r < max(1, reps); r++ {
		var wg sync.WaitGroup
		ops := make([]float64, workers)
		start := time.Now()
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ops[w] = loop()
			}()
		}
		wg.Wait()
		el := time.Since(start).Seconds()
		total := 0.0
		for _, o := range ops {
			total += o
		}
		best = max(best, total/el)
	}
	return best
}

// peakF32Go is the float32 loop of the Go twins: eight independent
// multiply-add chains (Go fuses a*b+c on amd64 only with explicit math.FMA,
// which is float64, so these are a multiply and an add each, as in the
// generic kernels). It returns the operations done.
func peakF32Go(n int) float64 {
	a := [8]float32{1, 2, 3, 4, 5, 6, 7, 8}
	const m, c = 0.999, 0.001
	for i := 0; i < n; i++ {
		a[0] = a[0]*m + c
		a[1] = a[1]*m + c
		a[2] = a[2]*m + c
		a[3] = a[3]*m + c
		a[4] = a[4]*m + c
		a[5] = a[5]*m + c
		a[6] = a[6]*m + c
		a[7] = a[7]*m + c
	}
	peakSink = a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7]
	return float64(n) * 8 * 2
}

// peakSink keeps the Go loop's results alive so that it is not optimized away.
var peakSink float32
