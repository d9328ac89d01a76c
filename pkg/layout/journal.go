package layout

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
)

// Journal records, one line per finished expert file, the checksum fm-repack
// wrote, so an interrupted run can resume: a rerun trusts no file blindly, it
// re-hashes each recorded file and skips it only when the hash matches.
//
// The first line is a key that identifies what was being written (source
// config, expert layout, bits); a journal with another key is discarded. Each
// later line is "layer expert checksum", appended with O_APPEND after the file
// was renamed into place; a torn last line (killed mid-write) does not parse and
// is ignored.
type Journal struct {
	mu sync.Mutex
	f  *os.File
}

// JournalName is the journal's file name inside an expert directory.
const JournalName = ".fm-repack-journal"

// ExpertKey identifies one expert file.
type ExpertKey struct{ Layer, Expert int }

// OpenJournal opens (or starts) the journal at path for key and returns the
// checksums it already records.
func OpenJournal(path, key string) (*Journal, map[ExpertKey]string, error) {
	done := map[ExpertKey]string{}
	if f, err := os.Open(path); err == nil {
		sc := bufio.NewScanner(f)
		if sc.Scan() && sc.Text() == key {
			for sc.Scan() {
				var k ExpertKey
				var sum string
				if n, _ := fmt.Sscanf(sc.Text(), "%d %d %s", &k.Layer, &k.Expert, &sum); n == 3 && len(sum) == 32 {
					done[k] = sum
				}
			}
		} else {
			done = map[ExpertKey]string{}
		}
		f.Close()
		if len(done) > 0 {
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return nil, nil, err
			}
			return &Journal{f: f}, done, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, err
	}
	if strings.ContainsAny(key, "\n") {
		f.Close()
		return nil, nil, fmt.Errorf("journal key contains a newline")
	}
	if _, err := f.WriteString(key + "\n"); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return &Journal{f: f}, done, nil
}

// Record appends one finished expert file.
func (j *Journal) Record(k ExpertKey, sum string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	_, err := fmt.Fprintf(j.f, "%d %d %s\n", k.Layer, k.Expert, sum)
	return err
}

// Close closes the journal file.
func (j *Journal) Close() error { return j.f.Close() }

// Remove closes and deletes the journal (the manifest now records everything).
func (j *Journal) Remove() error {
	j.f.Close()
	return os.Remove(j.f.Name())
}
