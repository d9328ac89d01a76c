package model

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"

	"github.com/fm-moe/fm/pkg/backend"
	"github.com/fm-moe/fm/pkg/internal/nonfinite"
	"github.com/fm-moe/fm/pkg/layout"
)

// softmax normalizes x in place: exp(x − max) / Σ, the sum in float64, as
// transformers' float32 softmax rounds.
func softmax(x []float32) {
	if len(x) == 0 {
		return
	}
	mx := slices.Max(x)
	var sum float64
	for i, v := range x {
		e := math.Exp(float64(v - mx))
		x[i] = float32(e)
		sum += e
	}
	inv := 1 / sum
	for i := range x {
		x[i] = float32(float64(x[i]) * inv)
	}
}

// route turns one token's router logits into its top-k experts and weights
// (reference-math.md §3.7): softmax over all experts in float32, the k largest
// probabilities (ties go to the lower expert index), renormalized to sum to 1
// when renorm. probs is overwritten with the softmax.
func route(probs []float32, k int, renorm bool, ids []int, weights []float32) {
	softmax(probs)
	// A chosen expert's probability is set to −1 (below any probability)
	// until all k are chosen, then restored: O(k·E), not O(k²·E) — this runs
	// on the host between a GPU's router download and its expert launches.
	for s := 0; s < k; s++ {
		best := -1
		for e, p := range probs {
			if best < 0 || p > probs[best] {
				best = e
			}
		}
		ids[s], weights[s] = best, probs[best]
		probs[best] = -1
	}
	for s := 0; s < k; s++ {
		probs[ids[s]] = weights[s]
	}
	if renorm {
		var sum float32
		for _, w := range weights[:k] {
			sum += w
		}
		for i := range weights[:k] {
			weights[i] /= sum
		}
	}
}

// routeParallelRows is the prompt chunk from which routeTokens spreads the
// tokens over goroutines: routing costs ~4 µs a token (E float64 exps and k
// scans of E), 2 ms for a 512-token chunk, and a GPU waits for it idle
// between the router download and the expert launches (docs/PERF.md, GPU run
// 4). Below it (decode: one token) the goroutines would cost more than they
// save, and decode stays free of allocations.
const routeParallelRows = 64

// routeTokens routes T tokens (route on each row of logits, E wide) into
// ids and weights ([T·k] each). Each token is independent and written only
// by the goroutine that routes it, so the result does not depend on how the
// rows are split.
func routeTokens(logits []float32, T, E, k int, renorm bool, ids []int, weights []float32) {
	workers := 1
	if T >= routeParallelRows {
		workers = min(runtime.GOMAXPROCS(0), T/(routeParallelRows/2))
	}
	if workers < 2 {
		for t := 0; t < T; t++ {
			route(logits[t*E:(t+1)*E], k, renorm, ids[t*k:(t+1)*k], weights[t*k:(t+1)*k])
		}
		return
	}
	var wg sync.WaitGroup
	per := (T + workers - 1) / workers
	for lo := 0; lo < T; lo += per {
		hi := min(T, lo+per)
		wg.Go(func() {
			for t := lo; t < hi; t++ {
				route(logits[t*E:(t+1)*E], k, renorm, ids[t*k:(t+1)*k], weights[t*k:(t+1)*k])
			}
		})
	}
	wg.Wait()
}

// renormalizes reports whether the top-k weights are renormalized: qwen3_5
// always does, the others when norm_topk_prob is set.
func (m *Model) renormalizes() bool {
	return m.cfg.Arch == layout.ArchQwen35MoE || m.cfg.NormTopKProb
}

// routing is one step's routing of a sparse layer: the experts the tokens
// chose, in increasing id, and for each (indexed by expert id) the rows
// routed to it with their weights. A State keeps one and reuses its slices
// from layer to layer, so routing allocates nothing once they have grown.
type routing struct {
	union   []int
	rows    [][]int     // [NumExperts]: rows of the step routed to the expert
	weights [][]float32 // [NumExperts]: their routing weights
	ids     []int       // [T·K] every token's experts
	w       []float32   // [T·K] and weights
	perTok  [][]int     // [T] OnRoute's view of ids
	files   [][]byte    // [len(union)] FetchExperts' destination, reused
	// [len(union)] the experts a device keeps resident (nil: to be read),
	// and the others' ids; reused from layer to layer (no map a layer).
	resident []backend.Expert
	misses   []int
}

// routeStep downloads the router logits of the step's T tokens and picks
// every token's experts on the host.
// The download synchronizes the device, so the deferred non-finite checks of
// the blocks before are read here too (before st.ws.routing is replaced).
func (m *Model) routeStep(ctx context.Context, l *layer, st *State, x *tensors, pos int) (*routing, error) {
	E, K := m.cfg.NumExperts, m.k
	T := x.xn.Rows()
	m.dev.MatMul(x.router, l.router, x.xn)
	logits := grow(&st.ws.router, T*E)
	if err := m.dev.Download(logits, x.router); err != nil {
		return nil, fmt.Errorf("layer %d: router logits: %w", l.index, err)
	}
	if err := m.readChecks(ctx, st, x, pos); err != nil {
		return nil, err
	}
	if r := nonfinite.FirstRow(logits, E); r >= 0 {
		return nil, &NonFiniteError{Layer: l.index, Block: "router", Expert: -1, Position: st.pos + r}
	}
	rt := &st.ws.rt
	if len(rt.rows) != E {
		rt.rows, rt.weights = make([][]int, E), make([][]float32, E)
		// One row of capacity per expert up front: a decode step (one row
		// each) then never allocates for an expert it meets the first time.
		rows, ws := make([]int, E), make([]float32, E)
		for e := range E {
			rt.rows[e], rt.weights[e] = rows[e:e:e+1], ws[e:e:e+1]
		}
	}
	for _, e := range rt.union { // the previous layer's
		rt.rows[e], rt.weights[e] = rt.rows[e][:0], rt.weights[e][:0]
	}
	rt.union = rt.union[:0]
	if cap(rt.ids) < T*K {
		rt.ids, rt.w = make([]int, T*K), make([]float32, T*K)
	}
	ids, weights := rt.ids[:T*K], rt.w[:T*K]
	routeTokens(logits, T, E, K, m.renormalizes(), ids, weights)
	for t := 0; t < T; t++ {
		for s := 0; s < K; s++ {
			e := ids[t*K+s]
			if len(rt.rows[e]) == 0 {
				rt.union = append(rt.union, e)
			}
			rt.rows[e] = append(rt.rows[e], t)
			rt.weights[e] = append(rt.weights[e], weights[t*K+s])
		}
	}
	if m.opts.OnRoute != nil {
		rt.perTok = rt.perTok[:0]
		for t := 0; t < T; t++ {
			rt.perTok = append(rt.perTok, ids[t*K:(t+1)*K])
		}
		m.opts.OnRoute(l.index, rt.perTok)
	}
	slices.Sort(rt.union)
	return rt, nil
}

// releaser gives back one expert file the fetcher handed out (a Slot's
// Release): an interface value rather than a func, so that handing it out
// allocates no closure.
type releaser interface{ Release() }

// fetcher reads a layer's experts one file each, at most window being read
// ahead of the one consumed, handing them out in the order of ids. Each State
// keeps one (workspace.fetch) and reuses it from layer to layer: its slots —
// one per expert read or held, made the first time that many are needed —
// and their bookkeeping, so that a decode step's fetch allocates nothing.
// With an AsyncExperts source (the expert store) a slot's read is queued at
// once for the store's workers and the worker that finishes it wakes the
// model; other sources get a goroutine per read (goSlot).
type fetcher struct {
	m        *Model
	ctx      context.Context
	layer    int
	ids      []int
	window   int
	inflight []*fetchSlot // [len(ids)]: started and not yet handed out (nil otherwise)
	free     []*fetchSlot // idle slots
}

// fetchSlot is one of the fetcher's slots; handed out with its file, it is
// the releaser the model calls, which returns it to the free list.
type fetchSlot struct {
	f    *fetcher
	slot ExpertSlot
	busy bool // started and not yet released
}

// Release gives the file back and the slot to its fetcher (once).
func (fs *fetchSlot) Release() {
	if !fs.busy {
		return
	}
	fs.busy = false
	fs.slot.Release()
	fs.f.free = append(fs.f.free, fs)
}

// begin starts fetching ids (experts of layer) for the model, the first
// window of them at once.
func (f *fetcher) begin(m *Model, ctx context.Context, layer int, ids []int, window int) *fetcher {
	f.m, f.ctx, f.layer, f.ids, f.window = m, ctx, layer, ids, window
	if cap(f.inflight) < len(ids) {
		f.inflight = make([]*fetchSlot, len(ids), max(len(ids), m.cfg.NumExperts))
	}
	f.inflight = f.inflight[:len(ids)]
	clear(f.inflight)
	for i := 0; i < min(len(ids), window); i++ {
		f.start(i)
	}
	return f
}

func (f *fetcher) start(i int) {
	var fs *fetchSlot
	if n := len(f.free); n > 0 {
		fs = f.free[n-1]
		f.free[n-1] = nil
		f.free = f.free[:n-1]
	} else {
		fs = &fetchSlot{f: f}
		if a, ok := f.m.experts.(AsyncExperts); ok {
			fs.slot = a.NewExpertSlot()
		} else {
			fs.slot = &goSlot{src: f.m.experts, done: make(chan struct{}, 1)}
		}
	}
	fs.busy = true
	fs.slot.Start(f.ctx, f.layer, f.ids[i])
	f.inflight[i] = fs
}

// next waits for expert i's file (i counting up from 0) and starts the read
// of the one window places further. The caller releases the file.
func (f *fetcher) next(i int) ([]byte, releaser, error) {
	fs := f.inflight[i]
	f.inflight[i] = nil
	if r, ok := f.m.dev.(backend.Rester); ok && !fs.slot.Ready() {
		r.Rest()
	}
	data, err := fs.slot.Wait()
	if err == nil && len(data) < f.m.expertLayout.FileSize {
		err = fmt.Errorf("file of %d bytes, the expert file layout needs %d", len(data), f.m.expertLayout.FileSize)
	}
	if err != nil {
		fs.Release()
		f.drain()
		return nil, nil, fmt.Errorf("layer %d expert %d: %w", f.layer, f.ids[i], err)
	}
	if n := i + f.window; n < len(f.ids) {
		f.start(n)
	}
	return data, fs, nil
}

// ready reports whether expert i's file is in (next(i) would not wait).
func (f *fetcher) ready(i int) bool {
	fs := f.inflight[i]
	return fs != nil && fs.slot.Ready()
}

// drain gives back whatever is still being read (after an error): the
// store abandons the reads, a goSlot waits for its goroutine.
func (f *fetcher) drain() {
	for i, fs := range f.inflight {
		if fs != nil {
			fs.Release()
			f.inflight[i] = nil
		}
	}
}

// goSlot is the ExpertSlot of a source without AsyncExperts: each Start runs
// the source's FetchExperts in a goroutine.
type goSlot struct {
	src      Experts
	done     chan struct{} // the goroutine's end (capacity 1)
	ids      [1]int
	data     [1][]byte
	release  func()
	err      error
	started  bool // a goroutine was started and its result not yet released
	received bool // its end was received from done
}

func (g *goSlot) Start(ctx context.Context, layer, id int) {
	g.Release()
	g.ids[0], g.started, g.received = id, true, false
	go func() {
		g.release, g.err = g.src.FetchExperts(ctx, layer, g.ids[:], g.data[:])
		g.done <- struct{}{}
	}()
}

func (g *goSlot) Ready() bool { return g.started && (g.received || len(g.done) > 0) }

func (g *goSlot) wait() {
	if g.started && !g.received {
		<-g.done
		g.received = true
	}
}

func (g *goSlot) Wait() ([]byte, error) {
	g.wait()
	if g.err != nil {
		return nil, g.err
	}
	return g.data[0], nil
}

func (g *goSlot) Release() {
	if !g.started {
		return
	}
	g.wait()
	if g.err == nil && g.release != nil {
		g.release()
	}
	g.release, g.err, g.data[0], g.started = nil, nil, nil, false
}

// moe is the sparse MoE block (reference-math.md §3.7): router, the routed
// experts' SwiGLU FFNs weighted by their routing weights, plus the
// sigmoid-gated shared expert. The experts of the whole chunk are fetched once
// each (the union of the chunk's routing), and each is computed as soon as
// it is in — in union order, so the sum is the same whatever the I/O timing —
// while the following ones are still being read. The shared expert runs while
// the first reads are in flight. It reads x.xn and writes x.mix.
func (m *Model) moe(ctx context.Context, l *layer, st *State, x *tensors, pos int, clk *clock) error {
	d := m.dev
	rt, err := m.routeStep(ctx, l, st, x, pos)
	if err != nil {
		return err
	}
	st.ws.routing = rt // for diagnoseMoE
	clk.lap(l.index, PhaseRouting)
	if clk.p != nil {
		clk.p.ExpertsFetched += int64(len(rt.union))
	}
	// Experts the device keeps resident (backend.ExpertCache) are not read.
	cache, _ := d.(backend.ExpertCache)
	resident := rt.resident[:0]
	misses := rt.union
	if cache != nil {
		misses = rt.misses[:0]
		for _, e := range rt.union {
			ex, ok := cache.CachedExpert(m.expertKey(l.index, e))
			if !ok {
				misses = append(misses, e)
			}
			resident = append(resident, ex) // nil when not resident
		}
		rt.resident, rt.misses = resident, misses
	}
	defer func() {
		for i, ex := range resident {
			if ex != nil {
				ex.Release()
			}
			resident[i] = nil
		}
	}()
	if batcher, ok := d.(backend.ExpertBatcher); ok {
		return m.moeBatched(ctx, l, st, x, rt, resident, misses, batcher, clk)
	}
	f := st.ws.fetch.begin(m, ctx, l.index, misses, m.opts.ExpertBatch)

	// A missed expert is released — its device copy awaited, its file given
	// back — only once half the fetch window is held (and the rest at the
	// end), so a device that copies asynchronously (a GPU from pinned
	// buffers) overlaps one expert's upload with the next one's read instead
	// of waiting for each. Half the window: the other half keeps reading.
	// held (the State's, reused) is in binding order; the oldest go first.
	held := st.ws.held[:0]
	hold := max(1, m.opts.ExpertBatch/2)
	releaseHeld := func(keep int) {
		if len(held) <= keep {
			return
		}
		n := len(held) - keep
		for _, h := range held[:n] {
			h.ex.Release()
			h.file.Release()
		}
		held = held[:copy(held, held[n:])]
		clear(held[len(held) : n+len(held)])
	}
	defer func() {
		releaseHeld(0)
		st.ws.held = held[:0]
	}()

	d.Clear(x.mix)
	if l.hasShared {
		m.sharedExpert(l, x, x.xn, x.mix)
	}
	clk.lap(l.index, PhaseExpertCompute)
	next := 0
	for i, e := range rt.union {
		if i < len(resident) && resident[i] != nil {
			d.ExpertFFN(x.mix, x.xn, resident[i], rt.rows[e], rt.weights[e])
			continue
		}
		buf, release, err := f.next(next)
		next++
		clk.lap(l.index, PhaseExpertIO)
		if err != nil {
			return err
		}
		ex, err := m.bindExpert(buf, m.expertKey(l.index, e))
		if err != nil {
			release.Release()
			f.drain()
			return fmt.Errorf("layer %d expert %d: %w", l.index, e, err)
		}
		d.ExpertFFN(x.mix, x.xn, ex, rt.rows[e], rt.weights[e])
		held = append(held, heldExpert{ex, release})
		releaseHeld(hold - 1)
		clk.lap(l.index, PhaseExpertCompute)
	}
	return nil
}

// heldExpert is a missed expert moe computed and has not yet released: its
// binding and its file.
type heldExpert struct {
	ex   backend.Expert
	file releaser
}

// expertGroup is the experts moeBatched hands to the device at once, with
// what each needs; its slices are reused from step to step.
type expertGroup struct {
	experts  []backend.Expert
	releases []releaser
	rows     [][]int
	weights  [][]float32
}

// flush runs the group's experts (in the order added) and releases them.
func (g *expertGroup) flush(b backend.ExpertBatcher, out, x backend.Tensor) {
	if len(g.experts) > 0 {
		b.ExpertFFNs(out, x, g.experts, g.rows, g.weights)
	}
	g.release()
}

// add appends expert e, bound as ex, whose file release gives back (nil:
// nothing to give back).
func (g *expertGroup) add(e int, ex backend.Expert, release releaser, rt *routing) {
	g.experts = append(g.experts, ex)
	g.releases = append(g.releases, release)
	g.rows = append(g.rows, rt.rows[e])
	g.weights = append(g.weights, rt.weights[e])
}

// release unbinds the group's experts, then gives back their files, and
// empties the group.
func (g *expertGroup) release() {
	for _, e := range g.experts {
		e.Release()
	}
	for _, rel := range g.releases {
		if rel != nil {
			rel.Release()
		}
	}
	clear(g.experts)
	clear(g.releases)
	g.experts, g.releases, g.rows, g.weights = g.experts[:0], g.releases[:0], g.rows[:0], g.weights[:0]
}

// moeBatched is moe's expert loop for a device that runs several experts as
// one operation (backend.ExpertBatcher): the experts whose files are in when
// one is awaited go to the device together, at most half the ExpertBatch
// window of read experts at a time (the other half being read meanwhile), in
// union order. With mapped files every expert of a decode step is in at once,
// so the device can spread the layer's experts over its workers; with slow
// reads the groups shrink to single experts and this is moe's one-at-a-time
// overlap. Experts the device keeps resident (resident[i] for union[i], nil
// when not; a CPU's packed experts, backend.ExpertCache) join the group
// without a read, and it takes them over (their entries are set to nil);
// only misses are fetched, and bound through the device's cache.
func (m *Model) moeBatched(ctx context.Context, l *layer, st *State, x *tensors, rt *routing, resident []backend.Expert, misses []int,
	b backend.ExpertBatcher, clk *clock) error {
	d := m.dev
	g := &st.ws.group
	isResident := func(i int) bool { return i < len(resident) && resident[i] != nil }
	if len(misses) == len(rt.union) {
		if ie, ok := m.experts.(InstantExperts); ok && ie.FetchesInstantly() {
			if _, ok := m.experts.(AsyncExperts); ok {
				return m.moeInstantSlots(ctx, l, st, x, rt, b, g, clk)
			}
			return m.moeInstant(ctx, l, x, rt, b, g, clk)
		}
	}
	window := max(1, m.opts.ExpertBatch/2)
	f := st.ws.fetch.begin(m, ctx, l.index, misses, window)
	d.Clear(x.mix)
	if l.hasShared {
		m.sharedExpert(l, x, x.xn, x.mix)
	}
	clk.lap(l.index, PhaseExpertCompute)
	next, read := 0, 0 // the next miss; misses in the group
	for i, e := range rt.union {
		if isResident(i) {
			g.add(e, resident[i], nil, rt)
			resident[i] = nil
		} else {
			buf, release, err := f.next(next)
			next++
			clk.lap(l.index, PhaseExpertIO)
			if err != nil {
				g.release()
				return err
			}
			ex, err := m.bindExpert(buf, m.expertKey(l.index, e))
			if err != nil {
				release.Release()
				g.release()
				f.drain()
				return fmt.Errorf("layer %d expert %d: %w", l.index, e, err)
			}
			g.add(e, ex, release, rt)
			read++
		}
		// A resident expert next never waits: keep adding.
		if i+1 == len(rt.union) || !isResident(i+1) && (read >= window || !f.ready(next)) {
			g.flush(b, x.mix, x.xn)
			read = 0
			clk.lap(l.index, PhaseExpertCompute)
		}
	}
	return nil
}

// moeInstantSlots is moeInstant for an AsyncExperts source whose files need
// no read (the store's mappings): every expert of the union through the
// State's fetch slots at once — a mapped expert's slot is ready at Start —
// so that, unlike FetchExperts, no result slice or release closure is made.
func (m *Model) moeInstantSlots(ctx context.Context, l *layer, st *State, x *tensors, rt *routing, b backend.ExpertBatcher, g *expertGroup, clk *clock) error {
	f := st.ws.fetch.begin(m, ctx, l.index, rt.union, len(rt.union))
	defer g.release()
	for i, e := range rt.union {
		buf, release, err := f.next(i)
		if err != nil {
			return err
		}
		ex, err := m.bindExpert(buf, m.expertKey(l.index, e))
		if err != nil {
			release.Release()
			f.drain()
			return fmt.Errorf("layer %d expert %d: %w", l.index, e, err)
		}
		g.add(e, ex, release, rt)
	}
	clk.lap(l.index, PhaseExpertIO)
	m.allExperts(l, x, b, g, clk)
	return nil
}

// allExperts computes x.mix of a layer whose routed experts are all bound in
// g: the shared expert, then every routed expert in one ExpertFFNs.
func (m *Model) allExperts(l *layer, x *tensors, b backend.ExpertBatcher, g *expertGroup, clk *clock) {
	m.dev.Clear(x.mix)
	if l.hasShared {
		m.sharedExpert(l, x, x.xn, x.mix)
	}
	b.ExpertFFNs(x.mix, x.xn, g.experts, g.rows, g.weights)
	clk.lap(l.index, PhaseExpertCompute)
}

// moeInstant is moeBatched for experts that need no read
// (InstantExperts): one fetch of the whole union, on the calling goroutine,
// and one ExpertFFNs.
func (m *Model) moeInstant(ctx context.Context, l *layer, x *tensors, rt *routing, b backend.ExpertBatcher, g *expertGroup, clk *clock) error {
	if cap(rt.files) < len(rt.union) {
		rt.files = make([][]byte, len(rt.union), m.cfg.NumExperts)
	}
	data := rt.files[:len(rt.union)]
	clear(data)
	release, err := m.experts.FetchExperts(ctx, l.index, rt.union, data)
	clk.lap(l.index, PhaseExpertIO)
	if err != nil {
		return fmt.Errorf("layer %d experts %v: %w", l.index, rt.union, err)
	}
	defer release()
	defer clear(data) // do not keep the files reachable past their release
	defer g.release() // before the files' release above
	for i, e := range rt.union {
		if len(data[i]) < m.expertLayout.FileSize {
			return fmt.Errorf("layer %d expert %d: file of %d bytes, the expert file layout needs %d", l.index, e, len(data[i]), m.expertLayout.FileSize)
		}
		ex, err := m.bindExpert(data[i], m.expertKey(l.index, e))
		if err != nil {
			return fmt.Errorf("layer %d expert %d: %w", l.index, e, err)
		}
		g.add(e, ex, nil, rt)
	}
	m.allExperts(l, x, b, g, clk)
	return nil
}

// expertKey names expert e of layer for a device's expert cache.
func (m *Model) expertKey(layer, e int) backend.ExpertKey {
	return backend.ExpertKey{Owner: m.cacheOwner, Layer: layer, ID: e}
}

// expertFFN adds Σ w·down(silu(gate x_t) ⊙ up x_t) over the rows routed to
// the expert in buf (bound through the device's cache when it keeps one) to
// out, and releases the binding before it returns.
func (m *Model) expertFFN(out, x backend.Tensor, buf []byte, rows []int, weights []float32, key backend.ExpertKey) error {
	e, err := m.bindExpert(buf, key)
	if err != nil {
		return err
	}
	m.dev.ExpertFFN(out, x, e, rows, weights)
	e.Release()
	return nil
}

// bindExpert binds the expert file in buf, through the device's expert cache
// when it keeps one (backend.ExpertCache).
func (m *Model) bindExpert(buf []byte, key backend.ExpertKey) (backend.Expert, error) {
	if cache, ok := m.dev.(backend.ExpertCache); ok {
		return cache.BindExpertCached(key, m.expertLayout, buf)
	}
	return m.dev.BindExpert(m.expertLayout, buf)
}

// sharedExpert adds sigmoid(w_sg·in)·SwiGLU_shared(in) to out for every
// token (x.shared and x.sharedGate are its scratch).
func (m *Model) sharedExpert(l *layer, x *tensors, in, out backend.Tensor) {
	d := m.dev
	d.MLP(x.shared, in, l.sgProj, l.suProj, l.sdProj)
	d.MatMul(x.sharedGate, l.sharedGate, in)
	d.AddSigmoidScaled(out, x.shared, x.sharedGate)
}
