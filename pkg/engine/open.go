package engine

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/fm-moe/fm/pkg/backend"
	_ "github.com/fm-moe/fm/pkg/backend/cpu" // the backend every build has
	"github.com/fm-moe/fm/pkg/experts"
	"github.com/fm-moe/fm/pkg/layout"
	"github.com/fm-moe/fm/pkg/model"
)

// Options configure Open.
type Options struct {
	// Dir is the prepared directory (fm-extract + fm-repack output).
	Dir string
	// TwoBit selects the 2-bit experts written by fm-requant2bit.
	TwoBit bool
	// ExpertsDir, when set, selects the expert set by its directory name
	// (e.g. layout.Experts3BitDir, written by fm-requant2bit --bits 3); it
	// overrides TwoBit.
	ExpertsDir string
	// ExpertsPerToken lowers the router's K (0: the config's). It changes the
	// model's output.
	ExpertsPerToken int
	// Backend names the compute backend (see pkg/backend): "cpu", another
	// registered one, or "" / "auto" for the best one available.
	Backend string
	// Device, when set, is used instead of opening Backend; the engine owns
	// it from then on (Close closes it). Tests pass a wrapped backend, e.g.
	// pkg/backend/backendtest's Counting.
	Device backend.Device
	// DeviceCache is the device memory for keeping routed experts between
	// steps, on backends that do (backend.ExpertCache; 0: the backend's
	// default).
	DeviceCache int64
	// Workers is the compute goroutines (0: GOMAXPROCS).
	Workers int
	// Matmul is the backend's numerics for quantized products ("" or
	// backend.MatmulExact: exact; backend.MatmulInt8: int8 activations).
	Matmul backend.Matmul
	// PrefillChunk is the most prompt tokens per batched step (0: the model's default).
	PrefillChunk int
	// Store configures the expert store (I/O threads, O_DIRECT, RAM cache).
	Store experts.Options
	// SkipDenseChecksum skips hashing model_weights.bin at open (sizes are
	// still checked). Hashing reads the whole file once.
	SkipDenseChecksum bool
	// SkipExpertChecksums turns off the run-time check of expert files
	// against their manifest checksums. By default each expert file is hashed
	// (XXH3-128) the first time the process reads it, so a damaged file stops
	// generation with an error naming it instead of producing garbage.
	SkipExpertChecksums bool
	// ContextSize is the most tokens a sequence may hold (prompt plus
	// generated); 0 means the model's max_position_embeddings. Generate refuses
	// a prompt that does not fit and stops when the context is full.
	ContextSize int
	// OnBlock is model.Options.OnBlock: the residual stream after every
	// block, for debugging (fm-infer compare).
	OnBlock func(layer int, block string, h []float32)
}

// Engine is an opened model ready to run.
type Engine struct {
	Dir    *layout.Dir
	Device backend.Device
	Model  *model.Model
	Store  *experts.Store
	Set    *layout.ExpertSet
	opts   Options
	ctx    int // context size in tokens
	// DeviceRAMCache says the device took Options.Store.CacheBytes for its
	// own cache of experts (backend.RAMExpertCache) and the store has none.
	DeviceRAMCache bool
}

// Open verifies and opens a prepared directory. It checks the manifest's
// format, the dense file's size and checksum, and that every expert file of
// the chosen set exists with the manifest's size; it refuses a directory whose
// manifest and files disagree, naming the file. Expert contents are read
// lazily, per token.
func Open(ctx context.Context, opts Options) (*Engine, error) {
	d, err := layout.Open(opts.Dir)
	if err != nil {
		return nil, err
	}
	e := &Engine{Dir: d, opts: opts}
	ok := false
	defer func() {
		if !ok {
			e.Close()
		}
	}()
	m := d.Manifest
	if e.ctx, err = contextSize(&m.Config, opts.ContextSize); err != nil {
		return nil, err
	}
	if !opts.SkipDenseChecksum {
		path := filepath.Join(opts.Dir, m.Dense.File)
		sum, _, err := layout.ChecksumFile(ctx, path, nil)
		if err != nil {
			return nil, err
		}
		if sum != m.Dense.Checksum {
			return nil, fmt.Errorf("%s: checksum %s, manifest says %s (the file is damaged or from another conversion; re-run fm-extract)", path, sum, m.Dense.Checksum)
		}
	}
	if e.Device = opts.Device; e.Device == nil {
		if e.Device, err = backend.Open(opts.Backend, backend.Options{Threads: opts.Workers, ExpertCacheBytes: opts.DeviceCache, ExpertCachePolicy: string(opts.Store.CachePolicy), Matmul: opts.Matmul}); err != nil {
			return nil, err
		}
	}
	var source model.Experts
	if anySparse(&m.Config) {
		dir := layout.ExpertsDir
		if opts.TwoBit {
			dir = layout.Experts2BitDir
		}
		if opts.ExpertsDir != "" {
			dir = opts.ExpertsDir
		}
		e.Set = m.ExpertSet(dir)
		if e.Set == nil {
			hint := "run fm-repack"
			if dir != layout.ExpertsDir {
				hint = "run fm-requant2bit"
			}
			return nil, fmt.Errorf("%s: manifest lists no expert set %q (%s)", filepath.Join(opts.Dir, layout.ManifestName), dir, hint)
		}
		if err := checkExpertFiles(ctx, opts.Dir, &m.Config, e.Set); err != nil {
			return nil, err
		}
		storeOpts := opts.Store
		if storeOpts.Buffers == nil {
			// Read experts straight into memory the device binds without a copy.
			storeOpts.Buffers = e.Device
		}
		storeOpts.VerifyChecksums = storeOpts.VerifyChecksums || !opts.SkipExpertChecksums
		// A device that keeps experts in RAM in a layout of its own (the
		// CPU's row-interleaved experts in int8 mode) takes the store's RAM
		// budget when every expert of the set fits in it: an expert is then
		// held once, in the faster layout, packed once for the process's
		// life, and the store reads only the device cache's misses. When
		// they do not all fit, the store keeps its cache of files: a miss
		// would cost a packing pass (~2 ms for a 2.5 MiB expert on a loaded
		// core, some 30 times computing it for one token) to save a quarter
		// of each later use, which pays only at hit rates near 1 (docs/PERF.md,
		// "Row-interleaved routed experts"; halved decode when streaming).
		if hc, ok := e.Device.(backend.RAMExpertCache); ok && storeOpts.CacheBytes > 0 && storeOpts.CacheBytes >= e.Set.Bytes(&m.Config) {
			if l, err := model.ExpertLayout(e.Set, &m.Config); err == nil && hc.TakeRAMBudget(l, storeOpts.CacheBytes) {
				storeOpts.CacheBytes = 0
				e.DeviceRAMCache = true
			}
		}
		if e.Store, err = experts.Open(opts.Dir, e.Set, storeOpts); err != nil {
			return nil, err
		}
		source = storeExperts{e.Store, e.Set}
	}
	e.Model, err = model.New(&m.Config, model.DirWeights(d), source, model.Options{
		ExpertsPerToken: opts.ExpertsPerToken, Device: e.Device, PrefillChunk: opts.PrefillChunk, OnBlock: opts.OnBlock})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(opts.Dir, layout.ManifestName), err)
	}
	ok = true
	return e, nil
}

func anySparse(c *layout.Config) bool {
	for _, s := range c.SparseLayers {
		if s {
			return true
		}
	}
	return false
}

// checkExpertFiles stats every expert file of the set (in parallel: a large
// model has tens of thousands) and reports the first missing or wrongly sized.
func checkExpertFiles(ctx context.Context, dir string, c *layout.Config, set *layout.ExpertSet) error {
	type job struct{ layer, id int }
	jobs := make(chan job)
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				path := set.Path(dir, j.layer, j.id)
				st, err := os.Stat(path)
				switch {
				case errors.Is(err, fs.ErrNotExist):
					err = fmt.Errorf("%s: missing (the manifest lists it; re-run the conversion)", path)
				case err != nil:
				case st.Size() != set.FileSize:
					err = fmt.Errorf("%s: size %d, manifest says %d (re-run the conversion)", path, st.Size(), set.FileSize)
				}
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
feed:
	for l, sparse := range c.SparseLayers {
		if !sparse {
			continue
		}
		for id := 0; id < c.NumExperts; id++ {
			select {
			case jobs <- job{l, id}:
			case <-ctx.Done():
				break feed
			}
		}
	}
	close(jobs)
	wg.Wait()
	if first != nil {
		return first
	}
	return ctx.Err()
}

// Close releases the store and unmaps the dense weights.
func (e *Engine) Close() error {
	var err error
	if e.Store != nil {
		err = e.Store.Close()
		e.Store = nil
	}
	if e.Device != nil {
		if cerr := e.Device.Close(); err == nil {
			err = cerr
		}
		e.Device = nil
	}
	if e.Dir != nil {
		if cerr := e.Dir.Close(); err == nil {
			err = cerr
		}
		e.Dir = nil
	}
	return err
}

// storeExperts adapts the expert store to the model's Experts interface.
type storeExperts struct {
	s   *experts.Store
	set *layout.ExpertSet
}

func (a storeExperts) ExpertSet() *layout.ExpertSet { return a.set }

// FetchesInstantly implements model.InstantExperts: mapped files are handed
// out without a read.
func (a storeExperts) FetchesInstantly() bool { return a.s.Mapped() }

// NewExpertSlot implements model.AsyncExperts: the model's reads go straight
// to the store's workers, one reusable Slot per expert in flight.
func (a storeExperts) NewExpertSlot() model.ExpertSlot { return a.s.NewSlot() }

func (a storeExperts) FetchExperts(ctx context.Context, layer int, ids []int, data [][]byte) (func(), error) {
	if len(data) != len(ids) {
		return nil, fmt.Errorf("layer %d: %d destinations for %d experts", layer, len(data), len(ids))
	}
	ex, err := a.s.Fetch(ctx, layer, ids)
	if err != nil {
		return nil, err
	}
	if len(ex) != len(ids) {
		a.s.Release(ex)
		return nil, fmt.Errorf("layer %d: the store returned %d experts for %d", layer, len(ex), len(ids))
	}
	for i, x := range ex {
		data[i] = x.Data
	}
	return func() { a.s.Release(ex) }, nil
}

// Logits runs ids from an empty state and returns every row of next-token
// logits ([len(ids)·vocab]): through the batched prefill path, or with decode
// set one token at a time through the decode path.
// A NaN or an infinity anywhere in the forward pass is a *NonFiniteError
// naming where it appeared (model.Forward checks), never a file of garbage.
func (e *Engine) Logits(ctx context.Context, ids []int, decode bool) ([]float32, error) {
	if e.ctx > 0 && len(ids) > e.ctx {
		return nil, &ContextError{Prompt: len(ids), Size: e.ctx}
	}
	st := e.Model.NewState()
	defer st.Release()
	V := e.Model.Config().VocabSize
	if !decode {
		return e.Model.Forward(ctx, st, ids, true)
	}
	out := make([]float32, 0, len(ids)*V)
	for _, id := range ids {
		row, err := e.Model.Forward(ctx, st, []int{id}, false)
		if err != nil {
			return nil, err
		}
		out = append(out, row...)
	}
	return out, nil
}
