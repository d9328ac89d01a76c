package safetensors

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// IndexName is the file that ties the shards of a sharded checkpoint together.
const IndexName = "model.safetensors.index.json"

// Checkpoint is every tensor of a checkpoint directory: one model.safetensors, a
// sharded set described by model.safetensors.index.json, or (without an index) all
// *.safetensors files of the directory.
type Checkpoint struct {
	Dir    string
	Files  []*File
	byName map[string]*Tensor
	names  []string
}

// OpenDir opens the safetensors files of dir.
func OpenDir(dir string) (*Checkpoint, error) {
	c := &Checkpoint{Dir: dir, byName: map[string]*Tensor{}}
	idxPath := filepath.Join(dir, IndexName)
	idxBytes, err := os.ReadFile(idxPath)
	switch {
	case err == nil:
		var idx struct {
			WeightMap map[string]string `json:"weight_map"`
		}
		if err := json.Unmarshal(idxBytes, &idx); err != nil {
			return nil, fmt.Errorf("%s: malformed index JSON: %w", idxPath, err)
		}
		if len(idx.WeightMap) == 0 {
			return nil, fmt.Errorf("%s: empty weight_map", idxPath)
		}
		shards := map[string]*File{}
		var shardNames []string
		for _, s := range idx.WeightMap {
			if _, ok := shards[s]; !ok {
				shards[s] = nil
				shardNames = append(shardNames, s)
			}
		}
		sort.Strings(shardNames)
		for _, s := range shardNames {
			if strings.Contains(s, "/") || strings.Contains(s, `\`) || s == ".." {
				c.Close()
				return nil, fmt.Errorf("%s: shard name %q is not a plain file name", idxPath, s)
			}
			f, err := Open(filepath.Join(dir, s))
			if err != nil {
				c.Close()
				if errors.Is(err, fs.ErrNotExist) {
					return nil, fmt.Errorf("%s: names shard %q, which is missing", idxPath, s)
				}
				return nil, err
			}
			shards[s] = f
			c.Files = append(c.Files, f)
		}
		names := make([]string, 0, len(idx.WeightMap))
		for name := range idx.WeightMap {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			s := idx.WeightMap[name]
			t := shards[s].Tensor(name)
			if t == nil {
				c.Close()
				return nil, fmt.Errorf("%s: tensor %q is mapped to %s, which does not contain it", idxPath, name, s)
			}
			c.byName[name] = t
		}
	case errors.Is(err, fs.ErrNotExist):
		matches, _ := filepath.Glob(filepath.Join(dir, "*.safetensors"))
		sort.Strings(matches)
		if len(matches) == 0 {
			return nil, fmt.Errorf("%s: no %s and no *.safetensors files", dir, IndexName)
		}
		for _, m := range matches {
			f, err := Open(m)
			if err != nil {
				c.Close()
				return nil, err
			}
			c.Files = append(c.Files, f)
			for _, t := range f.Tensors {
				if prev, dup := c.byName[t.Name]; dup {
					c.Close()
					return nil, fmt.Errorf("%s: tensor %q also appears in %s", m, t.Name, prev.file(c))
				}
				c.byName[t.Name] = t
			}
		}
	default:
		return nil, err
	}
	for n := range c.byName {
		c.names = append(c.names, n)
	}
	sort.Strings(c.names)
	return c, nil
}

func (t *Tensor) file(c *Checkpoint) string {
	for _, f := range c.Files {
		if f.Tensor(t.Name) == t {
			return f.Path
		}
	}
	return "?"
}

// FileOf returns the path of the shard holding t.
func (c *Checkpoint) FileOf(t *Tensor) string { return t.file(c) }

// Tensor returns the named tensor or nil.
func (c *Checkpoint) Tensor(name string) *Tensor { return c.byName[name] }

// Names returns all tensor names, sorted.
func (c *Checkpoint) Names() []string { return c.names }

// Close closes every shard.
func (c *Checkpoint) Close() error {
	var first error
	for _, f := range c.Files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}
