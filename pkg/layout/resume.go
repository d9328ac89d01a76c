package layout

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"

	"github.com/fm-moe/fm/pkg/internal/workpool"
	"github.com/fm-moe/fm/pkg/progress"
)

// SameLayout reports whether two expert sets have the same source and file
// layout, so that files one lists can stand for the other's.
func (s *ExpertSet) SameLayout(o *ExpertSet) bool {
	return s.SourceKey == o.SourceKey && s.Bits == o.Bits && s.GroupSize == o.GroupSize && s.NameFormat == o.NameFormat &&
		s.FileSize == o.FileSize && reflect.DeepEqual(s.Components, o.Components)
}

// Resume is how a writer of an expert set (fm-repack, fm-requant2bit) starts:
// what earlier runs of the same set left, checked.
type Resume struct {
	// Journal records each file this run finishes; Remove it once the
	// manifest lists the set.
	Journal *Journal
	// Todo lists the files to write, in the order of the keys given.
	Todo []ExpertKey
	// Kept counts the files an earlier run wrote that still verify; their
	// checksums are already in the set.
	Kept int
}

// ResumeOptions describe the set being written.
type ResumeOptions struct {
	// Dir is the prepared directory; Set (with Checksums allocated for every
	// sparse layer and empty) is written under Dir/Set.Dir.
	Dir string
	Set *ExpertSet
	// Listed is the manifest's set of the same directory, or nil; its
	// checksums count only when it has the same layout as Set.
	Listed *ExpertSet
	// Keys lists every file of the set.
	Keys []ExpertKey
	// JournalName and JournalKey name the resume journal inside Dir/Set.Dir
	// and identify what it records (see OpenJournal).
	JournalName, JournalKey string
	// Jobs is the number of parallel readers re-hashing recorded files.
	Jobs     int
	Progress progress.Reporter // phase "verify existing expert files"; nil: none
	Logf     func(format string, args ...any)
}

// ResumeExpertSet prepares writing an expert set: it creates the set's
// directory, removes the temporary files of an interrupted run, opens the
// resume journal, collects the checksums the journal (an interrupted run) and
// the listed set (a finished one) record, re-hashes those files in parallel,
// and keeps the ones that match. A rerun therefore trusts no file blindly and
// redoes only what is missing or damaged.
func ResumeExpertSet(ctx context.Context, o ResumeOptions) (*Resume, error) {
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	set := o.Set
	dir := filepath.Join(o.Dir, set.Dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("%s: cannot create the expert directory: %w", dir, err)
	}
	if n, err := RemoveTemps(dir); err != nil {
		return nil, err
	} else if n > 0 {
		logf("removed %d temporary files of an interrupted run", n)
	}
	journal, recorded, err := OpenJournal(filepath.Join(dir, o.JournalName), o.JournalKey)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	if old := o.Listed; old != nil && old.SameLayout(set) {
		for l, sums := range old.Checksums {
			for e, s := range sums {
				if s != "" {
					recorded[ExpertKey{Layer: l, Expert: e}] = s
				}
			}
		}
	}
	r := &Resume{Journal: journal}
	var check []VerifyTarget
	var checkKeys []ExpertKey
	for _, k := range o.Keys {
		if sum, ok := recorded[k]; ok {
			check = append(check, VerifyTarget{Path: set.Path(o.Dir, k.Layer, k.Expert), Size: set.FileSize, Checksum: sum})
			checkKeys = append(checkKeys, k)
		} else {
			r.Todo = append(r.Todo, k)
		}
	}
	if len(check) == 0 {
		return r, nil
	}
	prog := progress.Sync(o.Progress)
	prog.Start("verify existing expert files", int64(len(check))*set.FileSize)
	results := make([]error, len(check))
	err = workpool.Run(ctx, max(o.Jobs, 1), len(check), func(ctx context.Context, i int) error {
		var read int64
		results[i] = VerifyFile(ctx, check[i], func(n int64) { read += n; prog.Add(n) })
		if ctx.Err() == nil {
			// A short or missing file is checked all the same: count it whole,
			// so the phase ends at its total.
			prog.Add(max(0, check[i].Size-read))
		}
		return ctx.Err()
	})
	prog.Done()
	if err != nil {
		journal.Close()
		return nil, err
	}
	for i, res := range results {
		k := checkKeys[i]
		if res == nil {
			set.Checksums[k.Layer][k.Expert] = check[i].Checksum
			r.Kept++
		} else {
			r.Todo = append(r.Todo, k)
		}
	}
	logf("resuming: %d of %d expert files already valid, %d to write", r.Kept, len(o.Keys), len(r.Todo))
	return r, nil
}
