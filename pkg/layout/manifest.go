package layout

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// File names inside a prepared directory.
const (
	ManifestName   = "model_weights.json"
	DenseName      = "model_weights.bin"
	ExpertsDir     = "packed_experts"
	Experts2BitDir = "packed_experts_2bit"
	FormatVersion  = "fm/1"
	ChecksumXXH3   = "xxh3-128"
	// DenseAlignment is the alignment of every tensor part in model_weights.bin.
	DenseAlignment = 4096
	// ExpertAlignment is the alignment of every component inside an expert file and
	// of the expert file size (O_DIRECT reads whole files).
	ExpertAlignment = 4096
)

// Manifest is model_weights.json.
type Manifest struct {
	Format string `json:"format"` // FormatVersion
	// ManifestChecksum is the XXH3-128 of the manifest itself (see Digest);
	// WriteManifest sets it and ParseManifest checks it, so a damaged or
	// hand-edited manifest is refused. Empty in manifests written before it
	// existed.
	ManifestChecksum  string      `json:"manifest_checksum,omitempty"`
	Config            Config      `json:"config"`
	Source            Source      `json:"source"`
	ChecksumAlgorithm string      `json:"checksum_algorithm"` // ChecksumXXH3
	Dense             DenseFile   `json:"dense"`
	Tensors           []Tensor    `json:"tensors"`
	Experts           []ExpertSet `json:"experts,omitempty"` // one per packed directory (4-bit set, 2-bit set, ...)
	Tokenizer         []string    `json:"tokenizer_files,omitempty"`
}

// Source records where a prepared directory came from.
type Source struct {
	Dir          string `json:"dir"`           // base name of the checkpoint directory
	Format       string `json:"format"`        // "hf" or "mlx" ("synthetic": written by fm-infer bench --synthetic)
	ConfigSHA256 string `json:"config_sha256"` // of the source config.json
	// Bits and GroupSize are what fm-extract was asked for (Bits 16: float
	// weights kept; an MLX source's own bits; GroupSize 0 when nothing was
	// quantized). fm-repack and fm-requant2bit default to them. Zero in
	// manifests written before they were recorded.
	Bits      int `json:"bits,omitempty"`
	GroupSize int `json:"group_size,omitempty"`
}

// DenseFile describes model_weights.bin.
type DenseFile struct {
	File      string `json:"file"`
	Size      int64  `json:"size"`
	Checksum  string `json:"checksum"` // hex
	Alignment int64  `json:"alignment"`
}

// Part is a contiguous byte range of a file holding one array.
type Part struct {
	DType  string  `json:"dtype"` // safetensors dtype name
	Shape  []int64 `json:"shape"`
	Offset int64   `json:"offset"` // in model_weights.bin, or inside an expert file
	Size   int64   `json:"size"`
}

// Quant describes MLX affine group quantization of a matrix: element c of row o
// is scales[o, c/GroupSize]·q[o, c] + biases[o, c/GroupSize], q packed
// least-significant bits first into uint32 words.
type Quant struct {
	Bits      int  `json:"bits"`
	GroupSize int  `json:"group_size"`
	Scales    Part `json:"scales"`
	Biases    Part `json:"biases"`
}

// Tensor is one logical tensor. Shape is the logical (dequantized) shape; Data
// holds the float values (Quant nil) or the packed U32 codes (Quant set).
type Tensor struct {
	Name  string  `json:"name"`
	Shape []int64 `json:"shape"`
	Data  Part    `json:"data"`
	Quant *Quant  `json:"quant,omitempty"`
}

// ExpertSet is one directory of per-expert files.
type ExpertSet struct {
	Dir        string `json:"dir"`  // ExpertsDir or Experts2BitDir
	Bits       int    `json:"bits"` // 16 for float, else the quantization bits
	GroupSize  int    `json:"group_size,omitempty"`
	NameFormat string `json:"name_format"` // e.g. "layer_%02d_expert_%04d.bin"
	FileSize   int64  `json:"file_size"`
	// Components are gate_proj, up_proj, down_proj with offsets inside one expert file.
	Components []Tensor `json:"components"`
	// Checksums[layer][expert] is the hex checksum of that file; nil for layers
	// without routed experts.
	Checksums [][]string `json:"checksums"`
	// SourceKey identifies the checkpoint the files were made from (fm-repack
	// resumes only from the same source); empty when the writer did not record it.
	SourceKey string `json:"source_key,omitempty"`
}

// FileName returns the file name of (layer, expert).
func (s *ExpertSet) FileName(layer, expert int) string {
	return fmt.Sprintf(s.NameFormat, layer, expert)
}

// Path returns the path of (layer, expert) under the prepared directory dir.
func (s *ExpertSet) Path(dir string, layer, expert int) string {
	return filepath.Join(dir, s.Dir, s.FileName(layer, expert))
}

// Bytes returns the size of every expert file of the set: NumExperts files
// of FileSize bytes per sparse layer of c.
func (s *ExpertSet) Bytes(c *Config) int64 {
	sparse := 0
	for _, sp := range c.SparseLayers {
		if sp {
			sparse++
		}
	}
	return int64(sparse) * int64(c.NumExperts) * s.FileSize
}

// Component returns the named component ("gate_proj", "up_proj", "down_proj").
func (s *ExpertSet) Component(name string) *Tensor {
	for i := range s.Components {
		if s.Components[i].Name == name {
			return &s.Components[i]
		}
	}
	return nil
}

// ExpertSet returns the set stored in directory dir, or nil.
func (m *Manifest) ExpertSet(dir string) *ExpertSet {
	for i := range m.Experts {
		if m.Experts[i].Dir == dir {
			return &m.Experts[i]
		}
	}
	return nil
}

// Tensor returns the named dense tensor, or nil.
func (m *Manifest) Tensor(name string) *Tensor {
	for i := range m.Tensors {
		if m.Tensors[i].Name == name {
			return &m.Tensors[i]
		}
	}
	return nil
}

// ReadManifest reads and checks dir/model_weights.json.
func ReadManifest(dir string) (*Manifest, error) {
	path := filepath.Join(dir, ManifestName)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m, err := ParseManifest(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// ErrManifestChecksum is the cause of a manifest whose contents do not match
// its manifest_checksum.
var ErrManifestChecksum = errors.New("manifest checksum mismatch")

// Digest is the manifest's own checksum: XXH3-128 of its canonical encoding
// (json.MarshalIndent with one-space indent, manifest_checksum empty, plus a
// newline) — the bytes WriteManifest writes before it adds the checksum. It is
// computed over the decoded values, so it ignores white space but catches any
// changed value.
func (m *Manifest) Digest() (string, error) {
	c := *m
	c.ManifestChecksum = ""
	b, err := json.MarshalIndent(&c, "", " ")
	if err != nil {
		return "", err
	}
	return Checksum(append(b, '\n')), nil
}

// ParseManifest decodes and validates a manifest: its own checksum (when it
// records one), the format, the config's values and ranges, and every part's
// place in its file.
func ParseManifest(b []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("malformed manifest JSON: %w", err)
	}
	if m.Format != FormatVersion {
		return nil, fmt.Errorf("format %q, this fm reads %q", m.Format, FormatVersion)
	}
	if m.ManifestChecksum != "" {
		sum, err := m.Digest()
		if err != nil {
			return nil, err
		}
		if sum != m.ManifestChecksum {
			return nil, fmt.Errorf("%w: the contents hash to %s, manifest_checksum says %s (the manifest was edited or damaged after it was written; re-run the conversion that wrote it)", ErrManifestChecksum, sum, m.ManifestChecksum)
		}
	}
	if err := m.Config.Validate(); err != nil {
		return nil, err
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	return &m, nil
}
