package experts

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/fm-moe/fm/pkg/layout"
)

// verifier checks each expert file against its manifest checksum the first
// time its bytes enter memory in this process, and only then: XXH3 runs far
// above disk speed, so the first read pays a little, and later reads of the
// same expert (page cache or disk) pay nothing. A file damaged on disk is
// caught the first time the model needs it, before any of its bytes reach a
// kernel; one damaged afterwards while the process runs is not (fm-infer
// verify re-hashes everything).
//
// It is separate from the read path so that any way of bringing bytes into
// memory (pread today, a mapping tomorrow) can call check at that point.
type verifier struct {
	dir  string // the prepared directory, to name a damaged file
	set  *layout.ExpertSet
	done [][]atomic.Bool // [layer][expert]: verified in this process

	hashed, hashNanos atomic.Int64 // bytes hashed and the time it took
}

func newVerifier(dir string, set *layout.ExpertSet) (*verifier, error) {
	if len(set.Checksums) == 0 {
		return nil, fmt.Errorf("%s: checksum verification asked for, but the manifest has no expert checksums", set.Dir)
	}
	v := &verifier{dir: dir, set: set, done: make([][]atomic.Bool, len(set.Checksums))}
	for l, cs := range set.Checksums {
		v.done[l] = make([]atomic.Bool, len(cs))
	}
	return v, nil
}

// check verifies data, the whole file of (layer, id), unless that expert was
// verified before. Two concurrent first reads may both hash; both get the
// same answer. The file's path is built only to report a mismatch.
func (v *verifier) check(layer, id int, data []byte) error {
	if v == nil || v.done[layer][id].Load() {
		return nil
	}
	start := time.Now()
	got := layout.Checksum(data)
	v.hashNanos.Add(int64(time.Since(start)))
	v.hashed.Add(int64(len(data)))
	if want := v.set.Checksums[layer][id]; got != want {
		path := v.set.Path(v.dir, layer, id)
		return fmt.Errorf("%s: checksum %s, manifest says %s: the file is damaged (re-run fm-repack, which rewrites only bad files; --no-verify-experts skips this check)", path, got, want)
	}
	v.done[layer][id].Store(true)
	return nil
}
