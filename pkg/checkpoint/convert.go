package checkpoint

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/fm-moe/fm/pkg/experts"
	"github.com/fm-moe/fm/pkg/layout"
	"github.com/fm-moe/fm/pkg/progress"
)

// TokenizerWriter is what Extract needs of a loaded tokenizer (package
// tokenizer's *Tokenizer).
type TokenizerWriter interface {
	WriteBinary(w io.Writer) error
	WriteVocab(w io.Writer) error
}

// Options configure Extract and Repack.
type Options struct {
	// Bits: 0 keeps the source's own format (bf16 stays bf16, MLX stays as
	// quantized); 16 keeps float weights; 4 or 8 (Extract) and 2, 4 or 8
	// (Repack) quantize a float source. An MLX source only accepts its own bits.
	Bits int
	// GroupSize of quantization (default 64).
	GroupSize int
	// Jobs is the number of parallel expert workers of Repack (default 8).
	Jobs int
	// SourceReads says how Repack reads the source's experts (default
	// ReadAuto).
	SourceReads ReadMode
	// Progress receives progress reports (nil: none).
	Progress progress.Reporter
	// Log receives one-line notes (resume counts, removed leftovers); nil: none.
	Log io.Writer
	// LoadTokenizer loads tokenizer.json for tokenizer.bin and vocab.bin (its
	// errors name the file); nil skips those two files. Extract calls it
	// before writing anything.
	LoadTokenizer func(path string) (TokenizerWriter, error)
	// Write adjusts output file writing (fault injection in tests).
	Write layout.WriteOptions

	// directFS is the file system of direct source reads (tests; nil:
	// experts.OS()).
	directFS experts.FS
}

func (o *Options) progress() progress.Reporter { return progress.OrNop(o.Progress) }

func (o *Options) logf(format string, args ...any) {
	if o.Log != nil {
		fmt.Fprintf(o.Log, format+"\n", args...)
	}
}

// ReadMode is how Repack reads the source's experts.
type ReadMode int

const (
	// ReadAuto reads around the page cache when the experts' source bytes
	// exceed the machine's memory (then the page cache cannot hold them
	// anyway, and a buffered read costs CPU and evicts everything else),
	// else through it (a source read a moment ago is served from RAM).
	ReadAuto ReadMode = iota
	// ReadBuffered reads through the page cache, with read-ahead hints.
	ReadBuffered
	// ReadDirect reads around the page cache (O_DIRECT, F_NOCACHE on
	// macOS); files whose filesystem refuses it are read buffered.
	ReadDirect
)

// Summary reports what a conversion did.
type Summary struct {
	Tensors     int            // dense tensors written (Extract)
	Experts     int            // expert files written (Repack)
	Resumed     int            // expert files already valid and skipped (Repack)
	Files       int            // output files written
	Bytes       int64          // bytes written
	SourceBytes int64          // bytes read from the checkpoint
	Skipped     map[string]int // source tensors not converted, by category
	Elapsed     time.Duration
}

// String is the one-paragraph summary the commands print.
func (s *Summary) String() string {
	var b strings.Builder
	secs := s.Elapsed.Seconds()
	// Both rates: the source's is what a disk's read bandwidth compares
	// with, the output's what the written files took.
	in, out := 0.0, 0.0
	if secs > 0 {
		in, out = float64(s.SourceBytes)/secs/1e9, float64(s.Bytes)/secs/1e9
	}
	if s.Tensors > 0 {
		fmt.Fprintf(&b, "%s, ", plural(s.Tensors, "tensor"))
	}
	if s.Experts > 0 || s.Resumed > 0 {
		fmt.Fprintf(&b, "%s written, %d already valid (skipped), ", plural(s.Experts, "expert file"), s.Resumed)
	}
	fmt.Fprintf(&b, "%s written in %s, %s read, %.2fs (%.3f GB/s read, %.3f GB/s written)", layout.FormatBytes(s.Bytes), plural(s.Files, "file"), layout.FormatBytes(s.SourceBytes), secs, in, out)
	if len(s.Skipped) > 0 {
		var keys []string
		for k := range s.Skipped {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%d %s", s.Skipped[k], k))
		}
		fmt.Fprintf(&b, "; skipped source tensors: %s", strings.Join(parts, ", "))
	}
	return b.String()
}

// plural writes "1 file", "2 files".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
