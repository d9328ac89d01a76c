package policy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math"
	"runtime"
	"slices"
	"strings"

	"github.com/spf13/pflag"

	"github.com/fm-moe/fm/pkg/backend"
	"github.com/fm-moe/fm/pkg/cli"
	"github.com/fm-moe/fm/pkg/engine"
	"github.com/fm-moe/fm/pkg/experts"
	"github.com/fm-moe/fm/pkg/layout"
	"github.com/fm-moe/fm/pkg/tokenizer"
)

// EngineFlags are the settings that open a model, with the command-line
// spelling both fm-infer's subcommands and the server use. Register defines
// them on a flag set (range-checked, so a bad value is an error naming the
// flag); Open checks their combination and opens the engine.
type EngineFlags struct {
	Model string
	// Experts selects the expert set: "" for the one fm-repack wrote, or
	// "2bit", "3bit", "4bit", ... for the set with those bits (fm-requant2bit
	// writes 2- and 3-bit sets). TwoBit and ThreeBit are the older spellings.
	Experts          string
	TwoBit, ThreeBit bool
	ExpertsPerToken  int
	Backend          string
	IOThreads        int
	DirectIO         bool
	Mmap             bool
	ExpertCacheMiB   int
	CachePolicy      string
	Threads          int
	NoVerify         bool
	NoVerifyExperts  bool
	// CtxSize is the context in tokens; 0 means the model's
	// max_position_embeddings, capped by what memory allows (see Context).
	CtxSize int
	// PrefillChunk is the most prompt tokens per batched step (0: the
	// model's default); VRAMCacheGB the device memory a GPU backend keeps
	// routed experts in (0: its default).
	PrefillChunk int
	VRAMCacheGB  float32
	// OnBlock is not a flag: fm-infer compare sets it to see the residual
	// stream after every block (engine.Options.OnBlock).
	OnBlock func(layer int, block string, h []float32)
	// Device is not a flag either: when set, the engine computes on it
	// instead of opening Backend (tests inject wrapped backends).
	Device backend.Device
	// Matmul is the numerics of quantized products (--matmul): exact (the
	// default) or int8 activations (faster on the CPU, approximate).
	Matmul backend.Matmul
}

// matmulFlag is --matmul's value: backend.ParseMatmul's spellings.
type matmulFlag struct{ p *backend.Matmul }

func (f matmulFlag) String() string {
	if f.p == nil || *f.p == "" {
		return string(backend.MatmulExact)
	}
	return string(*f.p)
}

func (f matmulFlag) Type() string { return "exact|int8" }

func (f matmulFlag) Set(s string) error {
	m, err := backend.ParseMatmul(s)
	if err != nil {
		return err
	}
	*f.p = m
	return nil
}

// maxThreads bounds --threads and --io-threads: far above any machine, low
// enough that a typo is caught.
const maxThreads = 4096

// Register defines the flags on fs.
func (f *EngineFlags) Register(fs *pflag.FlagSet) {
	fs.StringVarP(&f.Model, "model", "m", "", "prepared model directory (fm-extract + fm-repack output)")
	fs.StringVar(&f.Experts, "experts", "", "expert set: 2bit, 3bit, 4bit, 8bit or 16bit (default: the set fm-repack wrote)")
	fs.BoolVar(&f.TwoBit, "2bit", false, "same as --experts 2bit (the set fm-requant2bit writes)")
	fs.BoolVar(&f.ThreeBit, "3bit", false, "same as --experts 3bit (fm-requant2bit --bits 3)")
	cli.Int(fs, &f.ExpertsPerToken, "experts-per-token", "", 0, 0, math.MaxInt32,
		"route each token to only K experts instead of the model's num_experts_per_tok (faster, but changes the model's output; 0: the model's K)")
	fs.StringVar(&f.Backend, "backend", backend.Auto, "compute backend: auto (the best available), "+strings.Join(backend.Names(), ", "))
	cli.Int(fs, &f.PrefillChunk, "prefill-chunk", "", 0, 0, math.MaxInt32, "most prompt tokens per batched prefill step (0: the model's default, 512): larger chunks give each routed expert more tokens per pass over its weights, smaller ones hold fewer activations")
	cli.Float32(fs, &f.VRAMCacheGB, "vram-cache-gb", "", 0, 0, math.MaxFloat32, "GPU backends: device memory in GiB for keeping routed experts between tokens (0: what is free at the first expert, less a reserve)")
	cli.Int(fs, &f.IOThreads, "io-threads", "", 0, 0, maxThreads, fmt.Sprintf("parallel expert reads (0: %d)", experts.DefaultIOThreads))
	fs.BoolVar(&f.DirectIO, "direct-io", false, "read experts with O_DIRECT, bypassing the page cache (pair with --expert-cache-mb)")
	fs.BoolVar(&f.Mmap, "mmap", false, "map the expert files and compute on the page cache's pages instead of copying each routed expert (not with --direct-io or --expert-cache-mb)")
	cli.Int(fs, &f.ExpertCacheMiB, "expert-cache-mb", "", 0, 0, math.MaxInt32, "RAM budget in MiB for caching experts in the process (0: none; the OS page cache still helps unless --direct-io); "+
		"with --matmul int8 on an AVX-512 VNNI CPU, 2-, 3-, 4- or 8-bit experts and a budget that holds all of them, it holds them row-interleaved for the int8 kernels (packed once each; FM_ROWPACK=0: as files)")
	fs.StringVar(&f.CachePolicy, "cache-policy", string(experts.DefaultPolicy), "which expert to evict from the RAM cache (--expert-cache-mb) and a GPU's VRAM cache: lru, lfuda (frequency with aging) or arc (adaptive: recency and frequency); docs/PERF.md compares them on real routing")
	cli.Int(fs, &f.Threads, "threads", "t", 0, 0, maxThreads, "compute goroutines (0: all CPUs)")
	fs.BoolVar(&f.NoVerify, "no-verify", false, "skip hashing model_weights.bin at start (sizes are still checked)")
	fs.BoolVar(&f.NoVerifyExperts, "no-verify-experts", false, "skip hashing each expert file the first time it is read (damaged experts then go unnoticed)")
	f.Matmul = backend.MatmulExact
	fs.Var(matmulFlag{&f.Matmul}, "matmul", "numerics of the products with quantized weights: exact (float32 activations; the default) or int8 "+
		"(activations rounded to 8 bits per weight group and multiplied with integer dot products: faster on CPUs with AVX-512 VNNI, "+
		"but each activation carries an error of up to 1/254 of its group's largest value, so logits move slightly; CPU backend only; "+
		"on AVX-512 VNNI CPUs the quantized dense weights get a row-interleaved copy on the heap, as large as they are)")
	cli.Int(fs, &f.CtxSize, "ctx-size", "c", 0, 0, math.MaxInt32, "context size in tokens, prompt included (0: the model's max_position_embeddings, capped by available memory)")
}

// expertsDir resolves the expert-set selector against the manifest.
func (f *EngineFlags) expertsDir(m *layout.Manifest) (string, error) {
	sel := f.Experts
	for _, alias := range []struct {
		on   bool
		name string
	}{{f.TwoBit, "2bit"}, {f.ThreeBit, "3bit"}} {
		if !alias.on {
			continue
		}
		if sel != "" && sel != alias.name {
			return "", fmt.Errorf("--%s and --experts %s exclude each other", alias.name, sel)
		}
		sel = alias.name
	}
	if sel == "" {
		return "", nil
	}
	var bits int
	if _, err := fmt.Sscanf(sel, "%dbit", &bits); err != nil || fmt.Sprintf("%dbit", bits) != sel {
		return "", fmt.Errorf("--experts %q: want 2bit, 3bit, 4bit, 8bit or 16bit", sel)
	}
	var have []string
	// The set fm-repack wrote first, then the requantized ones.
	for _, dir := range []string{layout.ExpertsDir, layout.Experts2BitDir, layout.Experts3BitDir} {
		if s := m.ExpertSet(dir); s != nil {
			if s.Bits == bits {
				return dir, nil
			}
			have = append(have, fmt.Sprintf("%dbit", s.Bits))
		}
	}
	hint := "fm-repack --bits " + strings.TrimSuffix(sel, "bit")
	if bits == 2 || bits == 3 {
		hint = "fm-requant2bit --bits " + strings.TrimSuffix(sel, "bit")
	}
	return "", fmt.Errorf("--experts %s: the directory has no %d-bit expert set (it has %s; run %s)", sel, bits, strings.Join(have, ", "), hint)
}

// Workers is the compute goroutines for --threads on a process that may run
// cpus threads at once (GOMAXPROCS): threads, but at most cpus (0: cpus), and
// a note when it capped them. The CPU backend's helpers poll for their next
// part, so each wants a CPU of its own; with twice as many as the CPUs a
// 30B-shaped decode measured 0.83–0.89× of its speed at one a CPU
// (docs/PERF.md, "The pool's helpers on many cores").
func Workers(threads, cpus int) (int, string) {
	if threads <= 0 {
		return cpus, ""
	}
	if threads > cpus {
		return cpus, fmt.Sprintf("--threads %d is more than the %d CPUs this process can use; using %d (compute goroutines beyond the CPUs only wait on each other)", threads, cpus, cpus)
	}
	return threads, ""
}

// Open checks the flags and opens the engine; notes (what a flag changes,
// store warnings) go to notes.
func (f *EngineFlags) Open(ctx context.Context, notes io.Writer) (*engine.Engine, error) {
	if f.Model == "" {
		return nil, errors.New("--model (-m) is required")
	}
	if !slices.Contains(experts.Policies, experts.Policy(f.CachePolicy)) && f.CachePolicy != "" {
		return nil, fmt.Errorf("--cache-policy %s: want one of %v", f.CachePolicy, experts.Policies)
	}
	if names := backend.Names(); f.Backend != backend.Auto && !slices.Contains(names, f.Backend) {
		return nil, fmt.Errorf("--backend %s: not available in this build (available: %s, %s)", f.Backend, backend.Auto, strings.Join(names, ", "))
	}
	m, err := layout.ReadManifest(f.Model)
	if err != nil {
		return nil, preparedHint(f.Model, err)
	}
	dir, err := f.expertsDir(m)
	if err != nil {
		return nil, err
	}
	workers, note := Workers(f.Threads, runtime.GOMAXPROCS(0))
	if note != "" {
		fmt.Fprintln(notes, "note:", note)
	}
	ctxSize, note, err := Context(&m.Config, f.CtxSize, availableMemory())
	if err != nil {
		return nil, err
	}
	if note != "" {
		fmt.Fprintln(notes, "note:", note)
	}
	e, err := engine.Open(ctx, engine.Options{
		Dir:             f.Model,
		ExpertsDir:      dir,
		ExpertsPerToken: f.ExpertsPerToken,
		Backend:         ResolveBackend(f.Backend, notes),
		DeviceCache:     int64(float64(f.VRAMCacheGB) * (1 << 30)),
		PrefillChunk:    f.PrefillChunk,
		Workers:         workers,
		Matmul:          f.Matmul,
		Store: experts.Options{
			IOThreads:   f.IOThreads,
			DirectIO:    f.DirectIO,
			Mmap:        f.Mmap,
			CacheBytes:  int64(f.ExpertCacheMiB) << 20,
			CachePolicy: experts.Policy(f.CachePolicy),
		},
		SkipDenseChecksum:   f.NoVerify,
		SkipExpertChecksums: f.NoVerifyExperts,
		ContextSize:         ctxSize,
		OnBlock:             f.OnBlock,
		Device:              f.Device,
	})
	if err != nil {
		return nil, err
	}
	if f.Matmul == backend.MatmulInt8 {
		fmt.Fprintln(notes, "note: --matmul int8 rounds activations to 8 bits in every product with quantized weights; outputs differ slightly from --matmul exact")
	}
	if e.DeviceRAMCache {
		fmt.Fprintln(notes, "note: --expert-cache-mb holds the routed experts row-interleaved for the int8 kernels (each packed once, when first read) instead of as their files")
	}
	if k := f.ExpertsPerToken; k > 0 {
		fmt.Fprintf(notes, "note: --experts-per-token %d routes each token to %d of the model's %d experts per token; this changes the model's output\n",
			k, k, e.Model.Config().NumExpertsPerTok)
	}
	if e.Store != nil {
		for _, w := range e.Store.Warnings() {
			fmt.Fprintln(notes, "note:", w)
		}
	}
	return e, nil
}

// ResolveBackend turns "auto" into the first registered backend that opens,
// saying in one line on notes why each accelerator before it did not (no
// driver, no GPU), so a CPU fallback is never silent. Other names pass
// through.
func ResolveBackend(name string, notes io.Writer) string {
	if name != backend.Auto {
		return name
	}
	for _, n := range backend.Names() {
		if n == backend.Fallback {
			return n
		}
		d, err := backend.Open(n, backend.Options{})
		if err == nil {
			d.Close()
			return n
		}
		fmt.Fprintf(notes, "note: --backend auto: %v; using the next backend\n", err)
	}
	return name
}

// preparedHint turns a missing manifest into a line that says what the
// directory should be.
func preparedHint(dir string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: not a prepared model directory (no %s; prepare one with fm-extract and fm-repack, see fm-infer --help)", dir, layout.ManifestName)
	}
	return err
}

// Context resolves the context size: requested (0: the model's
// max_position_embeddings) checked against the model, and, when defaulted,
// capped so that the KV cache at full context takes at most half of avail
// bytes of memory (avail 0: unknown, no cap). note says what was chosen when
// the cap applied or the request is large for the memory.
func Context(c *layout.Config, requested int, avail int64) (size int, note string, err error) {
	maxPos := c.MaxPositionEmbeddings
	if requested > 0 {
		if maxPos > 0 && requested > maxPos {
			return 0, "", fmt.Errorf("--ctx-size %d: the model has max_position_embeddings %d; want at most that", requested, maxPos)
		}
		if per := engine.KVBytesPerToken(c); avail > 0 && int64(requested)*per > avail/2 {
			note = fmt.Sprintf("--ctx-size %d: a full context needs %s of KV cache, more than half of the %s available", requested, engine.FormatBytes(int64(requested)*per), engine.FormatBytes(avail))
		}
		return requested, note, nil
	}
	if maxPos <= 0 {
		return 0, "", fmt.Errorf("the manifest sets no max_position_embeddings: give --ctx-size")
	}
	size = maxPos
	if per := engine.KVBytesPerToken(c); per > 0 && avail > 0 {
		if fit := avail / 2 / per; fit < int64(size) {
			size = max(int(fit), 1)
			note = fmt.Sprintf("context capped at %d tokens (the model allows %d): a full KV cache needs %s per token and %s memory is available; set --ctx-size to choose",
				size, maxPos, engine.FormatBytes(per), engine.FormatBytes(avail))
		}
	}
	return size, note, nil
}

// Summary is the one-line description of an opened engine printed at the
// start of run and chat: architecture, layers, experts and K, the bits of the
// dense and expert weights, context, backend and expert I/O mode.
func Summary(e *engine.Engine, f *EngineFlags) string {
	c := e.Model.Config()
	var b strings.Builder
	fmt.Fprintf(&b, "%s, %d layers", c.Arch, c.NumLayers)
	if e.Set != nil {
		fmt.Fprintf(&b, ", %d experts (K=%d)", c.NumExperts, e.Model.ExpertsPerToken())
	}
	fmt.Fprintf(&b, ", dense %s", DenseFormat(e.Dir.Manifest))
	if e.Set != nil {
		fmt.Fprintf(&b, ", experts %d-bit (%s)", e.Set.Bits, e.Set.Dir)
	}
	fmt.Fprintf(&b, ", context %d (KV cache up to %s)", e.ContextSize(), engine.FormatBytes(int64(e.ContextSize())*engine.KVBytesPerToken(c)))
	// The device's name is "registry name:what it is" (cpu:2 threads, cuda:0 H200).
	name, detail, _ := strings.Cut(e.Device.Name(), ":")
	fmt.Fprintf(&b, ", backend %s", name)
	if detail != "" {
		fmt.Fprintf(&b, " (%s)", strings.TrimSpace(detail))
	}
	if f.Matmul == backend.MatmulInt8 {
		b.WriteString(", int8 activations (--matmul int8)")
	}
	if e.Set != nil {
		io := f.IOThreads
		if io == 0 {
			io = experts.DefaultIOThreads
		}
		mode := "page cache"
		if f.DirectIO {
			mode = "O_DIRECT"
		} else if f.Mmap {
			mode = "mapped files"
		}
		fmt.Fprintf(&b, ", expert I/O %s, %d readers", mode, io)
		if f.ExpertCacheMiB > 0 {
			fmt.Fprintf(&b, ", %d MiB expert cache", f.ExpertCacheMiB)
		}
	}
	return b.String()
}

// DenseFormat summarizes how the dense matrices are stored: the quantization
// bits of the quantized ones, most common first (MLX files keep router gates
// at 8 bits next to 4-bit matrices), else the float dtype of embed_tokens.
func DenseFormat(m *layout.Manifest) string {
	byBits := map[int]int{}
	for _, t := range m.Tensors {
		if t.Quant != nil {
			byBits[t.Quant.Bits]++
		}
	}
	if len(byBits) == 0 {
		if t := m.Tensor("embed_tokens"); t != nil {
			return strings.ToLower(t.Data.DType)
		}
		return "float"
	}
	bits := slices.Collect(maps.Keys(byBits))
	slices.SortFunc(bits, func(a, b int) int {
		if byBits[a] != byBits[b] {
			return byBits[b] - byBits[a]
		}
		return a - b
	})
	parts := make([]string, len(bits))
	for i, b := range bits {
		parts[i] = fmt.Sprintf("%d-bit", b)
	}
	return strings.Join(parts, "+")
}

// OpenWithTokenizer opens the engine and the model directory's tokenizer, the
// pair every text-generating command needs; the engine is closed again when the
// tokenizer cannot be loaded.
func (f *EngineFlags) OpenWithTokenizer(ctx context.Context, notes io.Writer) (*engine.Engine, *tokenizer.Tokenizer, error) {
	e, err := f.Open(ctx, notes)
	if err != nil {
		return nil, nil, err
	}
	tok, err := tokenizer.Load(f.Model)
	if err != nil {
		e.Close()
		return nil, nil, err
	}
	return e, tok, nil
}
