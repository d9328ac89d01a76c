package layout

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	"github.com/fm-moe/fm/pkg/internal/workpool"
)

// Problem is one file of a prepared directory that does not match its manifest.
type Problem struct {
	Path string
	Err  error
}

func (p Problem) Error() string { return p.Path + ": " + p.Err.Error() }

// Unwrap returns the cause.
func (p Problem) Unwrap() error { return p.Err }

// ErrChecksum is the cause of a Problem whose file has the right size but the
// wrong content.
var ErrChecksum = errors.New("checksum mismatch")

// ErrMissing is the cause of a Problem whose file does not exist; it matches
// fs.ErrNotExist.
var ErrMissing error = missingError{}

type missingError struct{}

func (missingError) Error() string        { return "missing" }
func (missingError) Is(target error) bool { return target == fs.ErrNotExist }

// ErrNoExperts is the cause of the Problem Verify reports for a manifest that
// records no expert set: fm-extract ran but fm-repack did not finish, so the
// model cannot run although every file listed so far is intact.
var ErrNoExperts = errors.New("the manifest records no expert files: run fm-repack SRC OUT (an interrupted run resumes where it stopped)")

// VerifyTarget is one file Verify hashes.
type VerifyTarget struct {
	Path     string
	Size     int64
	Checksum string
}

// VerifyTargets lists every file the manifest of dir records: model_weights.bin
// and each expert file of each expert set, in a stable order.
func (m *Manifest) VerifyTargets(dir string) []VerifyTarget {
	ts := []VerifyTarget{{Path: filepath.Join(dir, m.Dense.File), Size: m.Dense.Size, Checksum: m.Dense.Checksum}}
	for i := range m.Experts {
		s := &m.Experts[i]
		for l, sums := range s.Checksums {
			for e, sum := range sums {
				ts = append(ts, VerifyTarget{Path: s.Path(dir, l, e), Size: s.FileSize, Checksum: sum})
			}
		}
	}
	return ts
}

// VerifyFile checks one file's size and checksum. A problem with the file
// (missing, wrong size, wrong content, unreadable) is a *Problem; only context
// cancellation is returned as a plain error.
func VerifyFile(ctx context.Context, t VerifyTarget, progress func(n int64)) error {
	if err := checkSize(t); err != nil {
		return err
	}
	if t.Checksum == "" {
		return &Problem{t.Path, errors.New("manifest records no checksum")}
	}
	sum, n, err := ChecksumFile(ctx, t.Path, progress)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &Problem{t.Path, err}
	}
	if n != t.Size {
		return &Problem{t.Path, fmt.Errorf("read %d bytes, manifest says %d", n, t.Size)}
	}
	if sum != t.Checksum {
		return &Problem{t.Path, fmt.Errorf("%w: xxh3-128 %s, manifest says %s", ErrChecksum, sum, t.Checksum)}
	}
	return nil
}

// checkSize reports a missing file or one whose size is not the manifest's.
func checkSize(t VerifyTarget) error {
	st, err := os.Stat(t.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Problem{t.Path, ErrMissing}
	}
	if err != nil {
		return &Problem{t.Path, err}
	}
	if st.Size() != t.Size {
		return &Problem{t.Path, fmt.Errorf("size %d, manifest says %d", st.Size(), t.Size)}
	}
	return nil
}

// VerifyQuick is Verify without hashing: every file is checked for presence
// and size only (fm-infer verify --quick).
func VerifyQuick(ctx context.Context, dir string, jobs int) ([]Problem, error) {
	return verify(ctx, dir, jobs, nil, func(_ context.Context, t VerifyTarget, _ func(int64)) error { return checkSize(t) })
}

// Verify checks every file of the prepared directory dir against its manifest:
// model_weights.bin and every expert file of every expert set, size and XXH3-128
// checksum, hashing with jobs parallel readers (jobs ≤ 0: one per CPU, at least
// 4 since the work is mostly waiting on the disk). It returns the bad files in
// VerifyTargets order, then each listed tokenizer file that is missing, then
// (ErrNoExperts, naming the packed_experts directory) the lack of any expert
// set: a directory fm-repack has not completed is not a runnable model, even
// though its files are intact. The error is for an unreadable or invalid
// manifest or a cancelled context. progress, when set, is called (from several
// goroutines, serialized) with every chunk's byte count; the total is the sum
// of the targets' sizes.
func Verify(ctx context.Context, dir string, jobs int, progress func(n int64)) ([]Problem, error) {
	return verify(ctx, dir, jobs, progress, VerifyFile)
}

func verify(ctx context.Context, dir string, jobs int, progress func(n int64), check func(context.Context, VerifyTarget, func(int64)) error) ([]Problem, error) {
	m, err := ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	targets := m.VerifyTargets(dir)
	if jobs <= 0 {
		jobs = max(4, runtime.NumCPU())
	}
	var mu sync.Mutex
	report := func(n int64) {
		if progress != nil {
			mu.Lock()
			progress(n)
			mu.Unlock()
		}
	}
	// Every file is checked (no early stop): a bad file is a Problem, not an error.
	results := make([]error, len(targets))
	err = workpool.Run(ctx, jobs, len(targets), func(ctx context.Context, i int) error {
		results[i] = check(ctx, targets[i], report)
		return nil
	})
	if err != nil {
		return nil, err
	}
	var problems []Problem
	for _, err := range results {
		var p *Problem
		if errors.As(err, &p) {
			problems = append(problems, *p)
		} else if err != nil {
			return nil, err
		}
	}
	// Tokenizer files carry their own integrity checks (tokenizer.bin and
	// vocab.bin end in a CRC); here only their presence is the manifest's.
	for _, name := range m.Tokenizer {
		path := filepath.Join(dir, name)
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			problems = append(problems, Problem{path, ErrMissing})
		} else if err != nil {
			problems = append(problems, Problem{path, err})
		}
	}
	if len(m.Experts) == 0 {
		problems = append(problems, Problem{filepath.Join(dir, ExpertsDir), ErrNoExperts})
	}
	return problems, nil
}

// TotalSize returns the number of bytes Verify hashes.
func (m *Manifest) TotalSize() int64 {
	var n int64
	for _, t := range m.VerifyTargets("") {
		n += t.Size
	}
	return n
}
