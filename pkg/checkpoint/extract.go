package checkpoint

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/fm-moe/fm/pkg/layout"
)

// TokenizerFiles are copied verbatim from the checkpoint when present
// (tokenizer.json is required).
var TokenizerFiles = []string{"tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"}

// Binary tokenizer files Extract writes with Options.LoadTokenizer.
const (
	TokenizerBinName = "tokenizer.bin"
	VocabBinName     = "vocab.bin"
)

// requestedBits is the precision a conversion asked for, with the default
// resolved: the MLX source's own bits, or 16 for a float source. fm-extract
// records it so that fm-repack can default to it.
func (c *Checkpoint) requestedBits(bits int) int {
	switch {
	case bits != 0:
		return bits
	case c.Format == FormatMLX && c.Quant != nil:
		return c.Quant.Bits
	}
	return 16
}

// target resolves the requested bits against the source format.
func (c *Checkpoint) target(bits, groupSize int, allowed ...int) (matrixTarget, error) {
	if groupSize == 0 {
		groupSize = 64
	}
	switch groupSize {
	case 32, 64, 128:
	default:
		return matrixTarget{}, fmt.Errorf("--group-size %d: want 32, 64 or 128", groupSize)
	}
	if c.Format == FormatMLX {
		own := 16
		if c.Quant != nil {
			own = c.Quant.Bits
		}
		if bits != 0 && bits != own {
			return matrixTarget{}, fmt.Errorf("%s is an MLX checkpoint quantized at %d bits: its tensors are copied bit-exactly, so --bits must be %d (or left out), not %d", c.Dir, own, own, bits)
		}
		return matrixTarget{Bits: 16}, nil
	}
	if bits == 0 {
		bits = 16
	}
	for _, a := range allowed {
		if bits == a {
			return matrixTarget{Bits: bits, GroupSize: groupSize}, nil
		}
	}
	return matrixTarget{}, fmt.Errorf("--bits %d: want one of %v", bits, allowed)
}

// Key identifies the source checkpoint for resuming: its config.json hash and
// every shard's name, size and modification time. (Two checkpoints with equal
// keys are assumed to hold the same weights.)
func (c *Checkpoint) Key() string {
	h := sha256.New()
	fmt.Fprintf(h, "config %s\n", c.ConfigSHA256)
	for _, f := range c.st.Files {
		var mt int64
		if st, err := os.Stat(f.Path); err == nil {
			mt = st.ModTime().UnixNano()
		}
		fmt.Fprintf(h, "%s %d %d\n", filepath.Base(f.Path), f.Size, mt)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Extract converts the dense part of the checkpoint in srcDir into the prepared
// directory outDir: model_weights.bin, the tokenizer files and, last,
// model_weights.json. Expert sets already recorded in an existing manifest of
// the same source are kept.
func Extract(ctx context.Context, srcDir, outDir string, opts Options) (*Summary, error) {
	start := time.Now()
	c, err := Open(srcDir)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	t, err := c.target(opts.Bits, opts.GroupSize, 4, 8, 16)
	if err != nil {
		return nil, err
	}
	items, err := c.planDense(t)
	if err != nil {
		return nil, err
	}
	tensors := make([]layout.Tensor, len(items))
	var srcBytes int64
	for i, it := range items {
		tensors[i] = it.out
		srcBytes += it.srcBytes
	}
	denseSize := layout.AlignUp(layout.PlaceParts(tensors, 0, layout.DenseAlignment), layout.DenseAlignment)

	var tokFiles []string
	var tokBytes int64
	for _, name := range TokenizerFiles {
		st, err := os.Stat(filepath.Join(srcDir, name))
		if errors.Is(err, fs.ErrNotExist) {
			if name == "tokenizer.json" {
				return nil, fmt.Errorf("%s: missing (the prepared directory needs the tokenizer)", filepath.Join(srcDir, name))
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		tokFiles = append(tokFiles, name)
		tokBytes += st.Size()
	}

	// Load the tokenizer before the long dense write, so that an unsupported
	// tokenizer.json fails the run at once, not after minutes of writing.
	var tw TokenizerWriter
	if opts.LoadTokenizer != nil {
		if tw, err = opts.LoadTokenizer(filepath.Join(srcDir, "tokenizer.json")); err != nil {
			return nil, err
		}
	}

	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, fmt.Errorf("%s: cannot create the output directory: %w", outDir, err)
	}
	unlock, err := layout.Lock(outDir, "fm-extract")
	if err != nil {
		return nil, err
	}
	defer unlock()
	// tokenizer.bin and vocab.bin are smaller than tokenizer.json; count it three times.
	if err := layout.CheckFreeSpace(outDir, denseSize+3*tokBytes+1<<20); err != nil {
		return nil, err
	}
	if n, err := layout.RemoveTemps(outDir); err != nil {
		return nil, err
	} else if n > 0 {
		opts.logf("removed %d temporary files of an interrupted run", n)
	}

	dw, err := layout.CreateDense(outDir, opts.Write)
	if err != nil {
		return nil, err
	}
	prog := opts.progress()
	prog.Start(layout.DenseName, denseSize)
	// Progress counts file bytes, padding included, so that a finished file
	// reports exactly denseSize and a stopped one less.
	var reported int64
	for i, it := range items {
		parts := tensors[i].Parts()
		written := make([]int64, len(parts))
		err := it.encode(ctx, func(j int, b []byte) error {
			p := parts[j]
			if written[j] == 0 {
				if err := dw.PadTo(p.Offset); err != nil {
					return err
				}
			}
			if dw.Offset() != p.Offset+written[j] || written[j]+int64(len(b)) > p.Size {
				return fmt.Errorf("tensor %q: part %d written out of order", tensors[i].Name, j)
			}
			if _, err := dw.Write(b); err != nil {
				return err
			}
			written[j] += int64(len(b))
			prog.Add(dw.Offset() - reported)
			reported = dw.Offset()
			return nil
		})
		if err == nil {
			for j, p := range parts {
				if written[j] != p.Size {
					err = fmt.Errorf("tensor %q: part %d got %d of %d bytes", tensors[i].Name, j, written[j], p.Size)
				}
			}
		}
		if err != nil {
			dw.Abort()
			prog.Done()
			return nil, err
		}
	}
	dense, err := dw.Finish()
	if err == nil {
		prog.Add(dense.Size - reported)
	}
	prog.Done()
	if err != nil {
		return nil, err
	}
	if dense.Size != denseSize {
		return nil, fmt.Errorf("%s: wrote %d bytes, planned %d", filepath.Join(outDir, layout.DenseName), dense.Size, denseSize)
	}
	sum := &Summary{Tensors: len(items), Files: 1, Bytes: dense.Size, SourceBytes: srcBytes, Skipped: c.Skipped}

	for _, name := range tokFiles {
		b, err := os.ReadFile(filepath.Join(srcDir, name))
		if err != nil {
			return nil, err
		}
		if err := layout.WriteFileAtomic(filepath.Join(outDir, name), b, opts.Write); err != nil {
			return nil, err
		}
		sum.Files++
		sum.Bytes += int64(len(b))
	}
	// A rerun into an existing OUT from a source without, say, a chat template
	// must not leave the previous source's copy behind: the tokenizer would still
	// read it.
	for _, name := range TokenizerFiles {
		if !slices.Contains(tokFiles, name) {
			if err := os.Remove(filepath.Join(outDir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, err
			}
		}
	}
	if tw != nil {
		n, err := writeBinaryTokenizer(tw, outDir, opts)
		if err != nil {
			return nil, err
		}
		sum.Files += 2
		sum.Bytes += n
		tokFiles = append(tokFiles, TokenizerBinName, VocabBinName)
	}

	abs, _ := filepath.Abs(srcDir)
	m := &layout.Manifest{
		Format:            layout.FormatVersion,
		Config:            c.Config,
		Source:            layout.Source{Dir: filepath.Base(abs), Format: c.Format, ConfigSHA256: c.ConfigSHA256, Bits: c.requestedBits(opts.Bits), GroupSize: t.GroupSize},
		ChecksumAlgorithm: layout.ChecksumXXH3,
		Dense:             dense,
		Tensors:           tensors,
		Tokenizer:         tokFiles,
	}
	if old, err := layout.ReadManifest(outDir); err == nil && old.Source.ConfigSHA256 == c.ConfigSHA256 {
		key := c.Key()
		for _, s := range old.Experts {
			if s.SourceKey == key || s.SourceKey == "" {
				m.Experts = append(m.Experts, s)
			}
		}
	}
	if err := layout.WriteManifest(outDir, m, opts.Write); err != nil {
		return nil, err
	}
	sum.Files++
	sum.Elapsed = time.Since(start)
	return sum, nil
}

// writeBinaryTokenizer writes tokenizer.bin and vocab.bin with the tokenizer
// package (loaded through Options.LoadTokenizer) and returns the bytes written.
func writeBinaryTokenizer(tw TokenizerWriter, outDir string, opts Options) (int64, error) {
	var total int64
	for _, f := range []struct {
		name  string
		write func(*layout.AtomicFile) error
	}{
		{TokenizerBinName, func(a *layout.AtomicFile) error { return tw.WriteBinary(a) }},
		{VocabBinName, func(a *layout.AtomicFile) error { return tw.WriteVocab(a) }},
	} {
		path := filepath.Join(outDir, f.name)
		a, err := layout.CreateAtomic(path, opts.Write)
		if err != nil {
			return total, err
		}
		if err := f.write(a); err != nil {
			a.Abort()
			return total, fmt.Errorf("%s: %w", path, err)
		}
		if err := a.Commit(); err != nil {
			return total, err
		}
		if st, err := os.Stat(path); err == nil {
			total += st.Size()
		}
	}
	return total, nil
}
