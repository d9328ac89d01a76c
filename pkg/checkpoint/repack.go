package checkpoint

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/fm-moe/fm/pkg/experts"
	"github.com/fm-moe/fm/pkg/internal/sysmem"
	"github.com/fm-moe/fm/pkg/internal/workpool"
	"github.com/fm-moe/fm/pkg/layout"
	"github.com/fm-moe/fm/pkg/progress"
)

// DefaultJobs is Repack's default number of parallel expert workers: enough
// outstanding reads to keep a disk busy (it peaks at about 8 here).
const DefaultJobs = 8

// Repack writes every routed expert of the checkpoint in srcDir as one file
// under outDir/packed_experts and records the set (component table, file size,
// XXH3-128 per file) in outDir/model_weights.json, which fm-extract must have
// written. Expert files that already verify against the manifest or the
// resume journal of an interrupted run of the same source and layout are kept;
// Summary.Resumed counts them.
//
// Bits and GroupSize left at 0 take what fm-extract recorded in the manifest
// (so that "fm-extract SRC OUT --bits 4; fm-repack SRC OUT" writes 4-bit
// experts); the choice is logged. The directory's writer lock is held
// throughout; a derived set (fm-requant2bit's) made stale by new experts is
// removed from the manifest and from the disk.
func Repack(ctx context.Context, srcDir, outDir string, opts Options) (*Summary, error) {
	start := time.Now()
	// The source first: a wrong SRC is named as such, not as a problem of OUT.
	c, err := Open(srcDir)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	m, unlock, err := layout.LockManifest(outDir, "fm-repack", "run fm-extract first")
	if err != nil {
		return nil, err
	}
	defer unlock()
	opts.Bits, opts.GroupSize = recordedPrecision(m, opts.Bits, opts.GroupSize, opts.logf)
	if !reflect.DeepEqual(m.Config, c.Config) {
		return nil, fmt.Errorf("%s: made from a different model than %s (normalized configs differ); run fm-extract with this checkpoint first", filepath.Join(outDir, layout.ManifestName), filepath.Join(srcDir, "config.json"))
	}
	t, err := c.target(opts.Bits, opts.GroupSize, 2, 4, 8, 16)
	if err != nil {
		return nil, err
	}
	plan, err := c.planExperts(t)
	if err != nil {
		return nil, err
	}
	set := plan.set
	set.SourceKey = c.Key()
	E := c.Config.NumExperts
	for _, l := range plan.layers {
		set.Checksums[l] = make([]string, E)
	}

	dir := filepath.Join(outDir, set.Dir)
	// What earlier runs recorded: the manifest (a finished run) and the journal
	// (an interrupted one), both only for this source and this exact layout.
	layoutKey, err := journalKey(&set)
	if err != nil {
		return nil, err
	}
	var keys []layout.ExpertKey
	for _, l := range plan.layers {
		for e := range E {
			keys = append(keys, layout.ExpertKey{Layer: l, Expert: e})
		}
	}
	jobs := opts.Jobs
	if jobs <= 0 {
		jobs = DefaultJobs
	}
	prog := progress.Sync(opts.Progress)
	res, err := layout.ResumeExpertSet(ctx, layout.ResumeOptions{
		Dir: outDir, Set: &set, Listed: m.ExpertSet(set.Dir), Keys: keys,
		JournalName: layout.JournalName, JournalKey: layoutKey,
		Jobs: jobs, Progress: prog, Logf: opts.logf,
	})
	if err != nil {
		return nil, err
	}
	journal, todo := res.Journal, res.Todo
	defer journal.Close()
	sum := &Summary{Skipped: c.Skipped, Resumed: res.Kept}

	need := int64(len(todo)) * set.FileSize
	// Besides the expert files: the journal lines, and the new manifest, which
	// exists next to the old one until its rename (a full disk found only then
	// would waste the whole run's writing).
	var manifestSize int64
	if st, err := os.Stat(filepath.Join(outDir, layout.ManifestName)); err == nil {
		manifestSize = st.Size()
	}
	overhead := layout.AlignUp(manifestSize+int64(len(plan.layers)*E)*40, layout.ExpertAlignment) +
		layout.AlignUp(int64(len(todo))*48, layout.ExpertAlignment) + layout.ExpertAlignment
	if err := layout.CheckFreeSpace(dir, need+overhead); err != nil {
		return nil, err
	}
	direct := opts.SourceReads == ReadDirect
	if opts.SourceReads == ReadAuto {
		src := int64(len(todo)) * plan.srcBytesPerExpert
		if ram := machineMemory(); ram > 0 && src > ram {
			direct = true
			opts.logf("reading the source around the page cache (direct I/O): its %.1f GB of experts exceed this machine's %.1f GB of memory (--direct-io=false reads through it)", float64(src)/1e9, float64(ram)/1e9)
		}
	}
	if direct {
		fs := opts.directFS
		if fs == nil {
			fs = experts.OS()
		}
		d := newDirectReads(fs)
		defer d.Close()
		plan.direct = d
		plan.gathered.New = func() any { return new([]byte) }
	}
	prog.Start(set.Dir, need)
	var mu sync.Mutex
	bufs := sync.Pool{New: func() any { return make([]byte, set.FileSize) }}
	err = workpool.Run(ctx, jobs, len(todo), func(ctx context.Context, i int) error {
		k := todo[i]
		if next := i + jobs; next < len(todo) && !direct {
			plan.prefetch(todo[next].Layer, todo[next].Expert)
		}
		buf := bufs.Get().([]byte)
		defer bufs.Put(buf)
		if err := plan.build(ctx, k.Layer, k.Expert, buf); err != nil {
			return err
		}
		s := layout.Checksum(buf)
		a, err := layout.CreateAtomic(set.Path(outDir, k.Layer, k.Expert), opts.Write)
		if err != nil {
			return err
		}
		a.Write(buf)
		if err := a.Commit(); err != nil {
			return err
		}
		if err := journal.Record(k, s); err != nil {
			return fmt.Errorf("%s: %w", filepath.Join(dir, layout.JournalName), err)
		}
		mu.Lock()
		set.Checksums[k.Layer][k.Expert] = s
		mu.Unlock()
		prog.Add(set.FileSize)
		return nil
	})
	prog.Done()
	if err != nil {
		return nil, err
	}
	var stale []string
	err = layout.CommitExpertSet(outDir, dir, opts.Write, func(m *layout.Manifest) error {
		m.Experts, stale = replaceExpertSet(m.Experts, set, opts.logf)
		return nil
	})
	if err != nil {
		return nil, err
	}
	journal.Remove()
	// The manifest no longer lists them: their files are dead weight on disk
	// (and would look like a usable set to a reader of the directory).
	for _, d := range stale {
		if err := os.RemoveAll(filepath.Join(outDir, d)); err != nil {
			return nil, fmt.Errorf("%s: removing the stale expert set: %w", filepath.Join(outDir, d), err)
		}
	}

	sum.Experts = len(todo)
	sum.Files = len(todo) + 1
	sum.Bytes = need
	sum.SourceBytes = int64(len(todo)) * plan.srcBytesPerExpert
	sum.Elapsed = time.Since(start)
	return sum, nil
}

// machineMemory is the memory ReadAuto compares the source with (a variable
// for tests).
var machineMemory = sysmem.Total

// journalKey identifies a run's output: source and expert file layout.
func journalKey(s *layout.ExpertSet) (string, error) {
	b, err := json.Marshal(struct {
		Source     string
		Bits, GS   int
		NameFormat string
		FileSize   int64
		Components []layout.Tensor
	}{s.SourceKey, s.Bits, s.GroupSize, s.NameFormat, s.FileSize, s.Components})
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(b)
	return "fm-repack-journal/1 " + hex.EncodeToString(h[:]), nil
}

// replaceExpertSet puts set in place of the listed set of the same directory.
// When that changes the experts' contents, the sets derived from the old ones
// (fm-requant2bit's packed_experts_2bit/, ...) no longer describe this model:
// they are dropped from the manifest, so that --2bit cannot silently run stale
// experts, returned as stale (for their files to be removed), and the user is
// told to requantize again.
func replaceExpertSet(sets []layout.ExpertSet, set layout.ExpertSet, logf func(string, ...any)) (out []layout.ExpertSet, stale []string) {
	var old *layout.ExpertSet
	for i := range sets {
		if sets[i].Dir == set.Dir {
			old = &sets[i]
		}
	}
	if old != nil && sameExperts(old, &set) {
		*old = set
		return sets, nil
	}
	out = []layout.ExpertSet{set}
	for _, s := range sets {
		if s.Dir == set.Dir {
			continue
		}
		if old != nil {
			logf("removed %s/: it was derived from the previous %s/ (run fm-requant2bit again)", s.Dir, set.Dir)
			stale = append(stale, s.Dir)
			continue
		}
		out = append(out, s)
	}
	return out, stale
}

// recordedPrecision resolves Repack's bits and group size: explicit values
// win (a bits value other than the one fm-extract recorded is noted: dense
// and experts then differ in precision); zero values take the recorded ones.
func recordedPrecision(m *layout.Manifest, bits, groupSize int, logf func(string, ...any)) (int, int) {
	rb, rg := m.Source.Bits, m.Source.GroupSize
	switch {
	case bits == 0 && rb != 0:
		bits = rb
		if groupSize == 0 && rg != 0 {
			groupSize = rg
		}
		if groupSize != 0 && bits < 16 {
			logf("experts at %d bits, group size %d, as fm-extract recorded (--bits/--group-size to choose otherwise)", bits, groupSize)
		} else {
			logf("experts at %d bits, as fm-extract recorded (--bits to choose otherwise)", bits)
		}
	case bits != 0 && rb != 0 && bits != rb:
		logf("note: --bits %d differs from the %d bits fm-extract used for the dense weights; the experts will be %d-bit", bits, rb, bits)
	}
	if groupSize == 0 && rg != 0 && bits < 16 {
		groupSize = rg
	}
	return bits, groupSize
}

// sameExperts reports whether two sets hold byte-identical expert files.
func sameExperts(a, b *layout.ExpertSet) bool {
	if a.Bits != b.Bits || a.GroupSize != b.GroupSize || a.FileSize != b.FileSize || a.NameFormat != b.NameFormat || len(a.Checksums) != len(b.Checksums) {
		return false
	}
	for l := range a.Checksums {
		if !slices.Equal(a.Checksums[l], b.Checksums[l]) {
			return false
		}
	}
	return true
}
